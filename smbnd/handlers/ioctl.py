"""IOCTL / FSCTL (MS-SMB2 3.3.5.15, MS-FSCC 2.3)."""
from __future__ import annotations

import errno
import os
import socket
import struct

from .. import status as st
from ..connection import Reply
from ..errors import Disconnect, SmbError
from ..wire import create as cr
from ..wire import negotiate as ng
from ..wire import query as q

FSCTL_DFS_GET_REFERRALS = 0x00060194
FSCTL_DFS_GET_REFERRALS_EX = 0x000601B0
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FSCTL_PIPE_PEEK = 0x0011400C
FSCTL_PIPE_WAIT = 0x00110018
FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_LMR_REQUEST_RESILIENCY = 0x001401D4
FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = 0x001440F2
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2
FSCTL_SRV_ENUMERATE_SNAPSHOTS = 0x00144064
FSCTL_SET_SPARSE = 0x000900C4
FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_QUERY_ALLOCATED_RANGES = 0x000940CF
FSCTL_GET_REPARSE_POINT = 0x000900A8
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
FSCTL_GET_OBJECT_ID = 0x0009009C
FSCTL_GET_COMPRESSION = 0x0009003C
FSCTL_SET_COMPRESSION = 0x0009C040
FSCTL_IS_PATHNAME_VALID = 0x0009002C

FILE_ATTRIBUTE_SPARSE_FILE = 0x200
# Copy-chunk limits (MS-SMB2 3.3.3: ServerSideCopyMaxNumberofChunks etc.; Windows values)
COPYCHUNK_MAX_CHUNKS = 256
COPYCHUNK_MAX_CHUNK_SIZE = 1024 * 1024
COPYCHUNK_MAX_TOTAL = 16 * 1024 * 1024


def ioctl(req) -> Reply:
    r = q.parse_ioctl(req.msg)
    cfg = req.server.config
    if r.flags != q.IOCTL_IS_FSCTL:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if r.max_output_response > cfg.max_transact_size or r.max_input_response > cfg.max_transact_size \
            or len(r.input) > cfg.max_transact_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    code = r.ctl_code
    if code == FSCTL_VALIDATE_NEGOTIATE_INFO:
        return _validate_negotiate(req, r)
    if code == FSCTL_QUERY_NETWORK_INTERFACE_INFO:
        return _network_interfaces(req, r)
    if code in (FSCTL_DFS_GET_REFERRALS, FSCTL_DFS_GET_REFERRALS_EX):
        raise SmbError(st.STATUS_FS_DRIVER_REQUIRED)   # not a DFS server
    if code == FSCTL_PIPE_WAIT:
        raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
    o = req.open(r.file_id)
    if o.is_pipe:
        from .pipes import pipe_transceive
        return pipe_transceive(req, o, r)
    handler = _FILE_FSCTLS.get(code)
    if handler is None:
        raise SmbError(st.STATUS_NOT_SUPPORTED if req.tree.share.is_ipc is False else st.STATUS_INVALID_DEVICE_REQUEST)
    out, status = handler(req, o, r)
    if len(out) > r.max_output_response:
        raise SmbError(st.STATUS_BUFFER_TOO_SMALL)
    return Reply(q.pack_ioctl_response(code, o.file_id, out), status)


def _validate_negotiate(req, r) -> Reply:
    """MS-SMB2 3.3.5.15.12."""
    conn = req.conn
    if conn.dialect >= ng.DIALECT_311:
        raise Disconnect("VALIDATE_NEGOTIATE_INFO on 3.1.1")
    if len(r.input) < 24:
        raise Disconnect("short VALIDATE_NEGOTIATE_INFO")
    caps, guid, secmode, count = struct.unpack_from("<I16sHH", r.input, 0)
    if len(r.input) < 24 + 2 * count or count == 0:
        raise Disconnect("bad VALIDATE_NEGOTIATE_INFO dialect list")
    dialects = struct.unpack_from(f"<{count}H", r.input, 24)
    cfg = req.server.config
    expect = max((d for d in dialects if cfg.min_dialect <= d <= cfg.max_dialect and d in
                  (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)), default=0)
    if caps != conn.client_capabilities or guid != conn.client_guid \
            or secmode != conn.client_security_mode or expect != conn.dialect:
        raise Disconnect("VALIDATE_NEGOTIATE_INFO mismatch")
    if r.max_output_response < 24:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    out = struct.pack("<I16sHH", conn.server_capabilities, cfg.server_guid, conn.server_security_mode,
                      conn.dialect)
    reply = Reply(q.pack_ioctl_response(r.ctl_code, r.file_id, out))
    reply.sign = req.session.signer is not None
    return reply


def _network_interfaces(req, r) -> Reply:
    """MS-SMB2 3.3.5.15.11; entries from the config (MS-SMB2 2.2.32.5)."""
    cfg = req.server.config
    if not cfg.multichannel or not cfg.interfaces:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    entries = []
    for i, itf in enumerate(cfg.interfaces):
        if ":" in itf.address:
            sa = struct.pack("<HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, itf.address), 0)
            sa = struct.pack("<H", 0x17) + sa[2:]
        else:
            sa = struct.pack("<HH4s", 0x2, 0, socket.inet_aton(itf.address))
        sa = sa.ljust(128, b"\0")
        nxt = 152 if i != len(cfg.interfaces) - 1 else 0
        entries.append(struct.pack("<IIIIQ", nxt, itf.if_index, 1 if itf.rss else 0, 0, itf.speed) + sa)
    out = b"".join(entries)
    if len(out) > r.max_output_response:
        raise SmbError(st.STATUS_BUFFER_TOO_SMALL)
    return Reply(q.pack_ioctl_response(r.ctl_code, r.file_id, out))


def _set_sparse(req, o, r):
    if o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & (cr.FILE_WRITE_DATA | cr.FILE_WRITE_ATTRIBUTES | cr.FILE_APPEND_DATA):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    sparse = True if not r.input else bool(r.input[0])
    fs = o.tree.share.fs
    attrs = fs.stat(o.host_path).attributes
    attrs = (attrs | FILE_ATTRIBUTE_SPARSE_FILE) if sparse else (attrs & ~FILE_ATTRIBUTE_SPARSE_FILE)
    fs.set_attributes(o.host_path, attrs)
    return b"", st.STATUS_SUCCESS


def _set_zero_data(req, o, r):
    if len(r.input) < 16:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    start, end = struct.unpack_from("<QQ", r.input, 0)
    if start > end:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if o.is_directory or not o.access & cr.FILE_WRITE_DATA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    size = os.fstat(o.fd).st_size
    end = min(end, size)
    pos = start
    zeros = b"\0" * (1 << 20)
    while pos < end:
        # MS-FSCC 2.3.75: holes already read as zero; only rewrite allocated data, so a sparse
        # file of many TiB (one WRITE at a huge offset) cannot make us write TiB of zeros
        try:
            pos = os.lseek(o.fd, pos, os.SEEK_DATA)
            stop = min(os.lseek(o.fd, pos, os.SEEK_HOLE), end)
        except OSError as e:
            if e.errno == errno.ENXIO:   # no data at or after pos
                break
            stop = end                   # SEEK_DATA unsupported: treat it all as data
        while pos < stop:
            n = min(len(zeros), stop - pos)
            os.pwrite(o.fd, zeros[:n], pos)
            pos += n
    req.server.notify.report(o.host_path, "modified", False)
    return b"", st.STATUS_SUCCESS


def _query_allocated_ranges(req, o, r):
    if len(r.input) < 16:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    off, length = struct.unpack_from("<QQ", r.input, 0)
    if off > 0x7FFFFFFFFFFFFFFF or length > 0x7FFFFFFFFFFFFFFF or off + length > 0x7FFFFFFFFFFFFFFF:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & cr.FILE_READ_DATA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    size = os.fstat(o.fd).st_size
    end = min(off + length, size)
    ranges = []
    pos = off
    while pos < end:
        try:
            data = os.lseek(o.fd, pos, os.SEEK_DATA)
        except OSError:
            break
        if data >= end:
            break
        hole = os.lseek(o.fd, data, os.SEEK_HOLE)
        ranges.append((data, min(hole, end) - data))
        pos = hole
    # merge adjacent ranges
    out = b"".join(struct.pack("<QQ", a, n) for a, n in ranges)
    if len(out) > r.max_output_response:
        fit = r.max_output_response // 16 * 16
        if fit == 0:
            raise SmbError(st.STATUS_BUFFER_TOO_SMALL)
        return out[:fit], st.STATUS_BUFFER_OVERFLOW
    return out, st.STATUS_SUCCESS


def _resume_key(req, o, r):
    if r.max_output_response < 32:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    key = o.file_id + os.urandom(8)
    req.server.resume_keys[key] = o
    o.resume_key = key
    return key + struct.pack("<I", 0) + b"\0" * 4, st.STATUS_SUCCESS


def _copychunk(req, o, r):
    """MS-SMB2 3.3.5.15.6."""
    if len(r.input) < 32:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    key, count, _res = struct.unpack_from("<24sII", r.input, 0)
    limits = struct.pack("<III", COPYCHUNK_MAX_CHUNKS, COPYCHUNK_MAX_CHUNK_SIZE, COPYCHUNK_MAX_TOTAL)
    if r.max_output_response < 12:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if len(r.input) < 32 + 24 * count:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    chunks = [struct.unpack_from("<QQI", r.input, 32 + 24 * i) for i in range(count)]
    total = sum(c[2] for c in chunks)
    if count > COPYCHUNK_MAX_CHUNKS or any(c[2] > COPYCHUNK_MAX_CHUNK_SIZE or c[2] == 0 for c in chunks) \
            or total > COPYCHUNK_MAX_TOTAL:
        return limits, st.STATUS_INVALID_PARAMETER
    src = req.server.resume_keys.get(key)
    if src is None or src.closed or src.session is not req.session:
        raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
    if r.ctl_code == FSCTL_SRV_COPYCHUNK and not o.access & cr.FILE_READ_DATA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if not o.access & cr.FILE_WRITE_DATA or not src.access & cr.FILE_READ_DATA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    done = written = 0
    for s_off, t_off, n in chunks:
        if req.server.locks.conflicts(src, s_off, n, write=False) or \
                req.server.locks.conflicts(o, t_off, n, write=True):
            return struct.pack("<III", done, 0, written), st.STATUS_FILE_LOCK_CONFLICT
        data = os.pread(src.fd, n, s_off)
        if len(data) < n:
            return struct.pack("<III", done, 0, written), st.STATUS_INVALID_VIEW_SIZE
        os.pwrite(o.fd, data, t_off)
        done += 1
        written += n
    req.server.notify.report(o.host_path, "modified", False)
    return struct.pack("<III", done, n if count else 0, written), st.STATUS_SUCCESS


def _reparse(req, o, r):
    raise SmbError(st.STATUS_NOT_A_REPARSE_POINT)


def _object_id(req, o, r):
    stt = os.stat(o.host_path)
    oid = struct.pack("<QQ", stt.st_ino, stt.st_dev)
    return oid + req.server.config.server_guid + oid + b"\0" * 16, st.STATUS_SUCCESS


def _enumerate_snapshots(req, o, r):
    if r.max_output_response < 16:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    return struct.pack("<III", 0, 0, 2) + b"\0\0\0\0", st.STATUS_SUCCESS


def _get_compression(req, o, r):
    return struct.pack("<H", 0), st.STATUS_SUCCESS


def _set_compression(req, o, r):
    if len(r.input) < 2:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    (fmt,) = struct.unpack_from("<H", r.input, 0)
    if fmt not in (0, 1, 2):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if fmt != 0:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    return b"", st.STATUS_SUCCESS


def _resiliency(req, o, r):
    if req.conn.dialect < 0x0210:
        raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)
    raise SmbError(st.STATUS_NOT_SUPPORTED)


_FILE_FSCTLS = {
    FSCTL_SET_SPARSE: _set_sparse,
    FSCTL_SET_ZERO_DATA: _set_zero_data,
    FSCTL_QUERY_ALLOCATED_RANGES: _query_allocated_ranges,
    FSCTL_SRV_REQUEST_RESUME_KEY: _resume_key,
    FSCTL_SRV_COPYCHUNK: _copychunk,
    FSCTL_SRV_COPYCHUNK_WRITE: _copychunk,
    FSCTL_GET_REPARSE_POINT: _reparse,
    FSCTL_CREATE_OR_GET_OBJECT_ID: _object_id,
    FSCTL_SRV_ENUMERATE_SNAPSHOTS: _enumerate_snapshots,
    FSCTL_GET_COMPRESSION: _get_compression,
    FSCTL_SET_COMPRESSION: _set_compression,
    FSCTL_LMR_REQUEST_RESILIENCY: _resiliency,
}
