"""IOCTL / FSCTL (MS-SMB2 3.3.5.15, MS-FSCC 2.3)."""
from __future__ import annotations

import os
import struct

from .. import status as st
from ..connection import Reply
from ..errors import Disconnect, SmbError
from ..wire import negotiate as ng
from ..wire import query as q
from . import ioctl_copy as cc
from . import ioctl_net
from . import ioctl_sparse as sp

FSCTL_DFS_GET_REFERRALS = 0x00060194
FSCTL_DFS_GET_REFERRALS_EX = 0x000601B0
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FSCTL_PIPE_PEEK = 0x0011400C
FSCTL_PIPE_WAIT = 0x00110018
FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_LMR_REQUEST_RESILIENCY = 0x001401D4
FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = cc.FSCTL_SRV_COPYCHUNK
FSCTL_SRV_COPYCHUNK_WRITE = cc.FSCTL_SRV_COPYCHUNK_WRITE
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

ALL_FF16 = b"\xff" * 16
# FSCTLs addressed to the server, not to an open: FileId must be all 0xFF (MS-SMB2 3.3.5.15)
NO_HANDLE_FSCTLS = (FSCTL_DFS_GET_REFERRALS, FSCTL_DFS_GET_REFERRALS_EX, FSCTL_PIPE_WAIT,
                    FSCTL_VALIDATE_NEGOTIATE_INFO, FSCTL_QUERY_NETWORK_INTERFACE_INFO)


# smbtorture's test-only FSCTLs (Samba libcli/smb/smb_constants.h; enabled by config torture_fsctls,
# as Samba enables them with smbd:FSCTL_SMBTORTURE): they exercise the client's handling of padded
# response bodies.
FSCTL_SMBTORTURE_IOCTL_RESPONSE_BODY_PADDING8 = 0x83848013
FSCTL_SMBTORTURE_GLOBAL_READ_RESPONSE_BODY_PADDING8 = 0x83848023
FSCTL_SMBTORTURE_FSP_ASYNC_SLEEP = 0x83848043


def _async_sleep(req, o, r) -> Reply:
    """Pends for Input[0] milliseconds holding the handle; a CLOSE meanwhile waits (Samba bug 14769)."""
    import asyncio
    if len(r.input) != 1:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    op = req.go_async()
    marker = object()
    o.holds.append(marker)

    def _done():
        status = st.STATUS_FILE_CLOSED if o.closed else st.STATUS_SUCCESS
        op.complete(status, [q.pack_ioctl_response(r.ctl_code, o.file_id, b"")] if status == 0
                    else [b"\x09\x00\x00\x00\x00\x00\x00\x00\x00"])
        waiters = [h for h in o.holds if h is not marker]
        o.holds.clear()
        for w in waiters:
            if callable(w):
                w()
    asyncio.get_running_loop().call_later(r.input[0] / 1000, _done)
    reply = Reply(status=st.STATUS_PENDING)
    reply.pending = op
    return reply


def _smbtorture(req, r) -> Reply:
    if r.input:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.ctl_code == FSCTL_SMBTORTURE_GLOBAL_READ_RESPONSE_BODY_PADDING8:
        req.conn.read_body_padding = 8
        return Reply(q.pack_ioctl_response(r.ctl_code, r.file_id, b""))
    return Reply(q.pack_ioctl_response(r.ctl_code, r.file_id, bytes([8]) * r.max_output_response, body_padding=8))


def ioctl(req) -> Reply:
    r = q.parse_ioctl(req.msg)
    cfg = req.server.config
    if r.flags != q.IOCTL_IS_FSCTL:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if r.max_output_response > cfg.max_transact_size or r.max_input_response > cfg.max_transact_size \
            or len(r.input) > cfg.max_transact_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    code = r.ctl_code
    if cfg.torture_fsctls and code in (FSCTL_SMBTORTURE_IOCTL_RESPONSE_BODY_PADDING8,
                                       FSCTL_SMBTORTURE_GLOBAL_READ_RESPONSE_BODY_PADDING8):
        return _smbtorture(req, r)
    if code in NO_HANDLE_FSCTLS:
        if r.file_id != ALL_FF16:
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        if code == FSCTL_VALIDATE_NEGOTIATE_INFO:
            return _validate_negotiate(req, r)
        if code == FSCTL_QUERY_NETWORK_INTERFACE_INFO:
            return _network_interfaces(req, r)
        if code == FSCTL_PIPE_WAIT:
            raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)   # no pipe exists
        raise SmbError(st.STATUS_FS_DRIVER_REQUIRED)   # DFS referral: not a DFS server (3.3.5.15.2)
    o = req.open(r.file_id)
    if o.is_pipe:
        from .pipes import pipe_transceive
        return pipe_transceive(req, o, r)
    if code == FSCTL_SMBTORTURE_FSP_ASYNC_SLEEP and cfg.torture_fsctls:
        return _async_sleep(req, o, r)
    handler = _FILE_FSCTLS.get(code)
    if handler is None:
        # what the object store answers for an FSCTL it does not know (Windows, Samba)
        raise SmbError(st.STATUS_FS_DRIVER_REQUIRED if req.tree.share.is_ipc else st.STATUS_INVALID_DEVICE_REQUEST)
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
    out = ioctl_net.network_interfaces(req, r)
    return Reply(q.pack_ioctl_response(r.ctl_code, r.file_id, out))


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
    # MS-SMB2 3.3.5.15.9 (smbnd.durable): Timeout ms + Reserved; 2.0.2 -> INVALID_DEVICE_REQUEST
    return req.server.durable.request_resiliency(req, o, r)


_FILE_FSCTLS = {
    FSCTL_SET_SPARSE: sp.set_sparse,
    FSCTL_SET_ZERO_DATA: sp.set_zero_data,
    FSCTL_QUERY_ALLOCATED_RANGES: sp.query_allocated_ranges,
    FSCTL_SRV_REQUEST_RESUME_KEY: cc.request_resume_key,
    FSCTL_SRV_COPYCHUNK: cc.copychunk,
    FSCTL_SRV_COPYCHUNK_WRITE: cc.copychunk,
    FSCTL_GET_REPARSE_POINT: _reparse,
    FSCTL_CREATE_OR_GET_OBJECT_ID: _object_id,
    FSCTL_SRV_ENUMERATE_SNAPSHOTS: _enumerate_snapshots,
    FSCTL_GET_COMPRESSION: _get_compression,
    FSCTL_SET_COMPRESSION: _set_compression,
    FSCTL_LMR_REQUEST_RESILIENCY: _resiliency,
}
