"""Server-side copy: FSCTL_SRV_REQUEST_RESUME_KEY (MS-SMB2 3.3.5.15.7) and
FSCTL_SRV_COPYCHUNK / FSCTL_SRV_COPYCHUNK_WRITE (MS-SMB2 3.3.5.15.6)."""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

from .. import status as st
from ..errors import SmbError
from ..wire import create as cr

FSCTL_SRV_COPYCHUNK = 0x001440F2
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2

# ServerSideCopyMaxNumberofChunks / MaxChunkSize / MaxDataSize (MS-SMB2 3.3.3; Windows values)
COPYCHUNK_MAX_CHUNKS = 256
COPYCHUNK_MAX_CHUNK_SIZE = 1024 * 1024
COPYCHUNK_MAX_TOTAL = 16 * 1024 * 1024
RESPONSE_SIZE = 12          # SRV_COPYCHUNK_RESPONSE (2.2.32.1)
INT64_MAX = 0x7FFFFFFFFFFFFFFF
APPEND_OFFSET = 0xFFFFFFFFFFFFFFFF

# Open.ResumeKey (3.3.1.10) is derived from the FileId with a per-process secret, so it names one
# open, cannot be forged, and needs no table that outlives the open.
_KEY_SECRET = os.urandom(32)


def _resume_key(o) -> bytes:
    fid = o.file_id
    return fid + hmac.new(_KEY_SECRET, fid, hashlib.sha256).digest()[:8]


def request_resume_key(req, o, r):
    """SRV_REQUEST_RESUME_KEY response (2.2.32.3): ResumeKey(24), ContextLength(4)=0, Context(4)."""
    if r.max_output_response < 32:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    return _resume_key(o) + struct.pack("<II", 0, 0), st.STATUS_SUCCESS


def _find_source(req, key: bytes):
    persistent, volatile = struct.unpack_from("<QQ", key, 0)
    src = req.server.opens.get(volatile)
    if src is None or src.closed or src.persistent_id != persistent or src.is_pipe \
            or not hmac.compare_digest(_resume_key(src), key) or src.session is not req.session:
        return None
    return src


def _limits_reply():
    """3.3.5.15.6.2: STATUS_INVALID_PARAMETER carrying the server's limits."""
    return struct.pack("<III", COPYCHUNK_MAX_CHUNKS, COPYCHUNK_MAX_CHUNK_SIZE, COPYCHUNK_MAX_TOTAL), \
        st.STATUS_INVALID_PARAMETER


def copychunk(req, o, r):
    inp = r.input
    if len(inp) < 24:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    src = _find_source(req, inp[:24])
    if src is None:
        raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
    if r.max_output_response < RESPONSE_SIZE:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if len(inp) < 32:
        return _limits_reply()
    count, = struct.unpack_from("<I", inp, 24)
    if count > COPYCHUNK_MAX_CHUNKS or len(inp) < 32 + 24 * count:
        return _limits_reply()
    chunks = [struct.unpack_from("<QQI", inp, 32 + 24 * i) for i in range(count)]
    if any(n == 0 or n > COPYCHUNK_MAX_CHUNK_SIZE or (t > INT64_MAX and t != APPEND_OFFSET) or s > INT64_MAX
           for s, t, n in chunks) or sum(n for _, _, n in chunks) > COPYCHUNK_MAX_TOTAL:
        return _limits_reply()
    # access (3.3.5.15.6): source readable (READ_DATA, or EXECUTE as Windows and Samba accept);
    # destination writable, and readable too for FSCTL_SRV_COPYCHUNK
    if not src.access & (cr.FILE_READ_DATA | cr.FILE_EXECUTE):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if not o.access & (cr.FILE_WRITE_DATA | cr.FILE_APPEND_DATA):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if r.ctl_code == FSCTL_SRV_COPYCHUNK and not o.access & cr.FILE_READ_DATA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if src.is_directory or o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    locks = req.server.locks
    done = written = 0

    def partial(status):
        # 2.2.32.1: chunks and bytes written before the failing chunk
        return struct.pack("<III", done, 0, written), status

    for s_off, t_off, n in chunks:
        if t_off == APPEND_OFFSET:
            t_off = os.fstat(o.fd).st_size
        # copies go through the byte-range lock checks of reads and writes (Windows 2012+)
        if locks.conflicts(src, s_off, n, write=False) or locks.conflicts(o, t_off, n, write=True):
            return partial(st.STATUS_FILE_LOCK_CONFLICT)
        # whole chunk in one buffer: overlapping ranges of one file copy as if read first
        data = os.pread(src.fd, n, s_off)
        if len(data) < n:
            return partial(st.STATUS_INVALID_VIEW_SIZE)
        os.pwrite(o.fd, data, t_off)
        done += 1
        written += n
    if done:
        req.server.notify.report(o.host_path, "modified", False)
    # ChunkBytesWritten is 0 on success (2.2.32.1)
    return struct.pack("<III", done, 0, written), st.STATUS_SUCCESS
