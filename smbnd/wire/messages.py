"""Fixed-layout SMB2 requests/responses: session, tree, close, flush, read, write, lock,
echo, oplock/lease break (MS-SMB2 2.2.5-2.2.26). Offsets are from the SMB2 header start.
READ/WRITE are on the hot path: struct only."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .header import HEADER_SIZE

H = HEADER_SIZE


class MessageError(ValueError):
    """Malformed request body: caller answers STATUS_INVALID_PARAMETER."""


def _need(msg, n: int) -> None:
    if len(msg) < H + n:
        raise MessageError("request body truncated")


def buffer_at(msg, off: int, length: int, fixed: int = 0) -> bytes:
    """The variable part [off, off+length) of a request; it must lie after the header and the
    command's `fixed` bytes and inside the message."""
    if length == 0:
        return b""
    if off < H + fixed or off + length > len(msg):
        raise MessageError("buffer outside message")
    return bytes(msg[off: off + length])


_buffer = buffer_at


def check_size(msg, expected: int) -> None:
    _need(msg, 2)
    (size,) = struct.unpack_from("<H", msg, H)
    if size != expected:
        raise MessageError(f"StructureSize {size} != {expected}")


# ---- SESSION_SETUP (2.2.5, 2.2.6)
SESSION_FLAG_BINDING = 0x01
SESSION_FLAG_IS_GUEST = 0x0001
SESSION_FLAG_IS_NULL = 0x0002
SESSION_FLAG_ENCRYPT_DATA = 0x0004
_SS_REQ = struct.Struct("<HBBIIHHQ")


@dataclass(slots=True)
class SessionSetupRequest:
    flags: int
    security_mode: int
    capabilities: int
    security_buffer: bytes
    previous_session_id: int


def parse_session_setup(msg) -> SessionSetupRequest:
    _need(msg, 24)
    size, flags, secmode, caps, _chan, off, length, prev = _SS_REQ.unpack_from(msg, H)
    if size != 25:
        raise MessageError("bad size")
    return SessionSetupRequest(flags, secmode, caps, _buffer(msg, off, length), prev)


def pack_session_setup_response(session_flags: int, token: bytes) -> bytes:
    return struct.pack("<HHHH", 9, session_flags, H + 8, len(token)) + token


# ---- LOGOFF / ECHO / CANCEL / TREE_DISCONNECT / FLUSH response: 4-byte bodies
EMPTY4 = struct.pack("<HH", 4, 0)

# ---- TREE_CONNECT (2.2.9, 2.2.10)
SHARE_TYPE_DISK = 1
SHARE_TYPE_PIPE = 2
SHAREFLAG_MANUAL_CACHING = 0x0
SHAREFLAG_ENCRYPT_DATA = 0x8000
SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM = 0x800
SHARE_CAP_DFS = 0x08
SHARE_CAP_CONTINUOUS_AVAILABILITY = 0x10
SHARE_CAP_SCALEOUT = 0x20
SHARE_CAP_CLUSTER = 0x40
SHARE_CAP_ASYMMETRIC = 0x80
TREE_CONNECT_FLAG_EXTENSION_PRESENT = 0x4


def parse_tree_connect(msg, dialect: int) -> tuple[int, str]:
    _need(msg, 8)
    size, flags, off, length = struct.unpack_from("<HHHH", msg, H)
    if size != 9:
        raise MessageError("bad size")
    if dialect >= 0x0311 and flags & TREE_CONNECT_FLAG_EXTENSION_PRESENT:
        # 2.2.9.1: PathOffset is relative to the Buffer in the extension; the path offset field
        # of the extension header is relative to the start of the TREE_CONNECT request.
        _need(msg, 16)
        (path_off,) = struct.unpack_from("<I", msg, H + 8 + 4)
        raw = _buffer(msg, H + path_off, length)
    else:
        raw = _buffer(msg, off, length)
    try:
        return flags, raw.decode("utf-16-le")
    except UnicodeDecodeError as e:
        raise MessageError("bad path") from e


def pack_tree_connect_response(share_type: int, share_flags: int, caps: int, max_access: int) -> bytes:
    return struct.pack("<HBBIII", 16, share_type, 0, share_flags, caps, max_access)


# ---- CLOSE (2.2.15, 2.2.16)
CLOSE_FLAG_POSTQUERY_ATTRIB = 0x1


def parse_close(msg) -> tuple[int, bytes]:
    _need(msg, 24)
    size, flags, _r = struct.unpack_from("<HHI", msg, H)
    if size != 24:
        raise MessageError("bad size")
    return flags, bytes(msg[H + 8: H + 24])


_CLOSE_RESP = struct.Struct("<HHIQQQQQQI")


def pack_close_response(flags: int, times=(0, 0, 0, 0), alloc: int = 0, eof: int = 0, attrs: int = 0) -> bytes:
    return _CLOSE_RESP.pack(60, flags, 0, times[0], times[1], times[2], times[3], alloc, eof, attrs)


# ---- FLUSH (2.2.17)
def parse_flush(msg) -> bytes:
    _need(msg, 24)
    check_size(msg, 24)
    return bytes(msg[H + 8: H + 24])


# ---- READ (2.2.19, 2.2.20)
READFLAG_READ_UNBUFFERED = 0x01
_READ_REQ = struct.Struct("<HBBIQ16sIIIHH")
_READ_RESP = struct.Struct("<HBBIII")


@dataclass(slots=True)
class ReadRequest:
    flags: int
    length: int
    offset: int
    file_id: bytes
    minimum_count: int
    channel: int


def parse_read(msg) -> ReadRequest:
    if len(msg) < H + 48:
        raise MessageError("short read")
    size, _pad, flags, length, offset, fid, minc, chan, _rem, _cio, _cil = _READ_REQ.unpack_from(msg, H)
    if size != 49:
        raise MessageError("bad size")
    return ReadRequest(flags, length, offset, fid, minc, chan)


def pack_read_response_fixed(data_len: int, padding: int = 0) -> bytes:
    # DataOffset 0x50 = header(64) + 16 fixed bytes (+ padding before the data, if any)
    return _READ_RESP.pack(17, 0x50 + padding, 0, data_len, 0, 0)


# ---- WRITE (2.2.21, 2.2.22)
WRITEFLAG_WRITE_THROUGH = 0x1
WRITEFLAG_WRITE_UNBUFFERED = 0x2
_WRITE_REQ = struct.Struct("<HHIQ16sIIHHI")


@dataclass(slots=True)
class WriteRequest:
    data_offset: int
    length: int
    offset: int
    file_id: bytes
    channel: int
    flags: int


def parse_write(msg) -> WriteRequest:
    if len(msg) < H + 48:
        raise MessageError("short write")
    size, doff, length, offset, fid, chan, _rem, _cio, _cil, flags = _WRITE_REQ.unpack_from(msg, H)
    if size != 49:
        raise MessageError("bad size")
    if length and (doff < H + 48 or doff + length > len(msg)):
        raise MessageError("write data outside message")
    return WriteRequest(doff, length, offset, fid, chan, flags)


def pack_write_response(count: int) -> bytes:
    return struct.pack("<HHIIHH", 17, 0, count, 0, 0, 0)


# ---- LOCK (2.2.26, 2.2.27)
LOCKFLAG_SHARED_LOCK = 0x1
LOCKFLAG_EXCLUSIVE_LOCK = 0x2
LOCKFLAG_UNLOCK = 0x4
LOCKFLAG_FAIL_IMMEDIATELY = 0x10


@dataclass(slots=True)
class LockElement:
    offset: int
    length: int
    flags: int


def parse_lock(msg) -> tuple[int, bytes, list[LockElement]]:
    _need(msg, 48)
    size, count, seq = struct.unpack_from("<HHI", msg, H)
    if size != 48:
        raise MessageError("bad size")
    fid = bytes(msg[H + 8: H + 24])
    if count == 0:
        raise MessageError("no locks")
    if len(msg) < H + 24 + 24 * count:
        raise MessageError("lock array truncated")
    locks = []
    for i in range(count):
        o, ln, fl, _ = struct.unpack_from("<QQII", msg, H + 24 + 24 * i)
        locks.append(LockElement(o, ln, fl))
    return seq, fid, locks


# ---- OPLOCK BREAK (2.2.23-2.2.25)
def pack_oplock_break_notification(level: int, file_id: bytes) -> bytes:
    return struct.pack("<HBBI", 24, level, 0, 0) + file_id


def pack_lease_break_notification(new_epoch: int, flags: int, lease_key: bytes, current: int, new: int) -> bytes:
    return struct.pack("<HHI16sIIIII", 44, new_epoch, flags, lease_key, current, new, 0, 0, 0)


def parse_break_ack(msg) -> tuple[str, int, bytes, int]:
    """Returns ('oplock', level, file_id, 0) or ('lease', 0, lease_key, lease_state)."""
    _need(msg, 2)
    (size,) = struct.unpack_from("<H", msg, H)
    if size == 24:
        _need(msg, 24)
        level = msg[H + 2]
        return "oplock", level, bytes(msg[H + 8: H + 24]), 0
    if size == 36:
        _need(msg, 36)
        _s, _r, flags, key, state, _dur = struct.unpack_from("<HHI16sIQ", msg, H)
        return "lease", 0, key, state
    raise MessageError("bad break ack size")


def pack_oplock_break_response(level: int, file_id: bytes) -> bytes:
    return struct.pack("<HBBI", 24, level, 0, 0) + file_id


def pack_lease_break_response(lease_key: bytes, state: int) -> bytes:
    return struct.pack("<HHI16sIQ", 36, 0, 0, lease_key, state, 0)


# ---- ERROR response (2.2.2)
ERROR_BODY = struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"


def pack_error(data: bytes = b"") -> bytes:
    if not data:
        return ERROR_BODY
    return struct.pack("<HBBI", 9, 0, 0, len(data)) + data
