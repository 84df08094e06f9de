"""Sparse-file FSCTLs: SET_SPARSE, SET_ZERO_DATA, QUERY_ALLOCATED_RANGES (MS-FSCC 2.3.64, 2.3.85,
2.3.51; object-store behaviour MS-FSA 2.1.5.10.29, 2.1.5.10.39, 2.1.5.10.22).

Model (the one Samba uses on Linux): the sparse flag is DOS metadata kept by the VFS; a
non-sparse file reports its whole requested range as allocated, a sparse one reports what
SEEK_DATA/SEEK_HOLE find; zeroing punches holes with fallocate() where the host allows.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from .. import status as st
from ..errors import SmbError
from ..vfs_meta import _fallocate
from ..wire import create as cr
from ..wire.fscc import FILE_ATTRIBUTE_SPARSE_FILE

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
INT64_MAX = 0x7FFFFFFFFFFFFFFF
_ZEROS = bytes(1 << 20)


def is_sparse(o) -> bool:
    return bool(o.tree.share.fs.stat(o.host_path).attributes & FILE_ATTRIBUTE_SPARSE_FILE)


def set_sparse(req, o, r):
    """MS-FSCC 2.3.64: an absent FILE_SET_SPARSE_BUFFER means SetSparse=TRUE; extra input bytes
    are ignored (Windows). Directories: STATUS_INVALID_PARAMETER. Any of WRITE_DATA,
    WRITE_ATTRIBUTES, APPEND_DATA is enough (MS-FSA 2.1.5.10.29)."""
    if o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & (cr.FILE_WRITE_DATA | cr.FILE_WRITE_ATTRIBUTES | cr.FILE_APPEND_DATA):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    sparse = True if not r.input else r.input[0] != 0
    status = o.tree.share.fs.set_sparse(o.host_path, sparse)
    if status != st.STATUS_SUCCESS:
        raise SmbError(status)
    return b"", st.STATUS_SUCCESS


def _fallocate_ok(fd: int, mode: int, off: int, length: int) -> bool:
    if _fallocate is None:
        return False
    if _fallocate(fd, mode, off, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
        return False
    raise OSError(err, os.strerror(err))


def _write_zeros(fd: int, pos: int, end: int) -> None:
    """Fallback: rewrite only allocated data with zeros (holes already read as zero), so a
    huge sparse file cannot make us write TiB of zeros."""
    while pos < end:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
            stop = min(os.lseek(fd, pos, os.SEEK_HOLE), end)
        except OSError as e:
            if e.errno == errno.ENXIO:   # no data at or after pos
                return
            stop = end                   # SEEK_DATA unsupported: treat it all as data
        while pos < stop:
            n = min(len(_ZEROS), stop - pos)
            os.pwrite(fd, _ZEROS[:n], pos)
            pos += n


def set_zero_data(req, o, r):
    """MS-FSCC 2.3.85 FILE_ZERO_DATA_INFORMATION {FileOffset, BeyondFinalZero}."""
    if len(r.input) < 16:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    start, end = struct.unpack_from("<QQ", r.input, 0)
    if start > INT64_MAX or end > INT64_MAX or start > end:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & cr.FILE_WRITE_DATA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    # a write to the range: other opens' byte-range locks apply (MS-FSA 2.1.5.10.39)
    if end > start and req.server.locks.conflicts(o, start, end - start, write=True):
        raise SmbError(st.STATUS_FILE_LOCK_CONFLICT)
    end = min(end, os.fstat(o.fd).st_size)   # never extends the file
    if start >= end:
        return b"", st.STATUS_SUCCESS
    keep = FALLOC_FL_KEEP_SIZE
    if is_sparse(o):
        done = _fallocate_ok(o.fd, keep | FALLOC_FL_PUNCH_HOLE, start, end - start)
    else:   # a non-sparse file keeps its allocation; only its data extents need zeroing:
        # ZERO_RANGE over a host-level hole would allocate it (one request could fill the disk)
        done = all(_fallocate_ok(o.fd, keep | FALLOC_FL_ZERO_RANGE, off, n)
                   or _fallocate_ok(o.fd, keep | FALLOC_FL_PUNCH_HOLE, off, n)
                   for off, n in list(_data_ranges(o.fd, start, end)))
    if not done:
        _write_zeros(o.fd, start, end)
    req.server.notify.report(o.host_path, "modified", False)
    return b"", st.STATUS_SUCCESS


def _data_ranges(fd: int, pos: int, end: int):
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return
            yield pos, end - pos          # no SEEK_DATA: everything is data
            return
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data
        pos = hole


def query_allocated_ranges(req, o, r):
    """MS-FSCC 2.3.51/2.3.52: FILE_ALLOCATED_RANGE_BUFFER in, an array of them out.
    Too small an output buffer for even one range: STATUS_BUFFER_TOO_SMALL; room for some:
    STATUS_BUFFER_OVERFLOW with as many as fit (MS-FSA 2.1.5.10.22)."""
    if len(r.input) < 16:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    off, length = struct.unpack_from("<QQ", r.input, 0)
    if off > INT64_MAX or length > INT64_MAX or off + length > INT64_MAX:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & cr.FILE_READ_DATA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    end = min(off + length, os.fstat(o.fd).st_size)
    if off >= end:
        ranges = []
    elif not is_sparse(o):
        ranges = [(off, end - off)]       # a non-sparse file is fully allocated
    else:
        ranges = list(_data_ranges(o.fd, off, end))
    fit = r.max_output_response // 16
    if len(ranges) > fit:
        if fit == 0:
            raise SmbError(st.STATUS_BUFFER_TOO_SMALL)
        return b"".join(struct.pack("<QQ", a, n) for a, n in ranges[:fit]), st.STATUS_BUFFER_OVERFLOW
    return b"".join(struct.pack("<QQ", a, n) for a, n in ranges), st.STATUS_SUCCESS
