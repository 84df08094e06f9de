"""QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO, SET_INFO, IOCTL (MS-SMB2 2.2.31-2.2.40)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .header import HEADER_SIZE
from .messages import MessageError, buffer_at

H = HEADER_SIZE

# QUERY_DIRECTORY flags (2.2.33)
RESTART_SCANS = 0x01
RETURN_SINGLE_ENTRY = 0x02
INDEX_SPECIFIED = 0x04
REOPEN = 0x10


@dataclass(slots=True)
class QueryDirectoryRequest:
    info_class: int
    flags: int
    file_index: int
    file_id: bytes
    pattern: str
    output_length: int


def parse_query_directory(msg) -> QueryDirectoryRequest:
    if len(msg) < H + 32:
        raise MessageError("short query directory")
    size, cls, flags, idx, fid, noff, nlen, outlen = struct.unpack_from("<HBBI16sHHI", msg, H)
    if size != 33:
        raise MessageError("bad size")
    pattern = ""
    if nlen:
        try:
            pattern = buffer_at(msg, noff, nlen, 32).decode("utf-16-le")
        except UnicodeDecodeError as e:
            raise MessageError("bad pattern") from e
    return QueryDirectoryRequest(cls, flags, idx, fid, pattern, outlen)


def pack_output_buffer(data: bytes, fixed_size: int = 9) -> bytes:
    """QUERY_DIRECTORY / QUERY_INFO / CHANGE_NOTIFY responses: StructureSize 9, offset, length."""
    if not data:
        return struct.pack("<HHI", fixed_size, 0, 0) + b"\0"
    return struct.pack("<HHI", fixed_size, H + 8, len(data)) + data


# CHANGE_NOTIFY (2.2.35)
WATCH_TREE = 0x1


def parse_change_notify(msg) -> tuple[int, int, bytes, int]:
    if len(msg) < H + 32:
        raise MessageError("short change notify")
    size, flags, outlen, fid, filt, _r = struct.unpack_from("<HHI16sII", msg, H)
    if size != 32:
        raise MessageError("bad size")
    return flags, outlen, fid, filt


# QUERY_INFO (2.2.37)
INFO_FILE = 1
INFO_FILESYSTEM = 2
INFO_SECURITY = 3
INFO_QUOTA = 4


@dataclass(slots=True)
class QueryInfoRequest:
    info_type: int
    info_class: int
    output_length: int
    input: bytes
    additional_info: int
    flags: int
    file_id: bytes


def parse_query_info(msg) -> QueryInfoRequest:
    if len(msg) < H + 40:
        raise MessageError("short query info")
    size, itype, cls, outlen, ioff, _r, ilen, addl, flags, fid = struct.unpack_from("<HBBIHHIII16s", msg, H)
    if size != 41:
        raise MessageError("bad size")
    inp = buffer_at(msg, ioff, ilen, 40)
    return QueryInfoRequest(itype, cls, outlen, inp, addl, flags, fid)


# SET_INFO (2.2.39)
@dataclass(slots=True)
class SetInfoRequest:
    info_type: int
    info_class: int
    buffer: bytes
    additional_info: int
    file_id: bytes


def parse_set_info(msg) -> SetInfoRequest:
    if len(msg) < H + 32:
        raise MessageError("short set info")
    size, itype, cls, blen, boff, _r, addl, fid = struct.unpack_from("<HBBIHHI16s", msg, H)
    if size != 33:
        raise MessageError("bad size")
    return SetInfoRequest(itype, cls, buffer_at(msg, boff, blen, 32), addl, fid)


SET_INFO_RESPONSE = struct.pack("<H", 2)

# IOCTL (2.2.31, 2.2.32)
IOCTL_IS_FSCTL = 0x1


@dataclass(slots=True)
class IoctlRequest:
    ctl_code: int
    file_id: bytes
    input: bytes
    max_input_response: int
    max_output_response: int
    flags: int


def parse_ioctl(msg) -> IoctlRequest:
    if len(msg) < H + 56:
        raise MessageError("short ioctl")
    (size, _r, code, fid, ioff, ilen, maxin, ooff, olen, maxout, flags, _r2) = struct.unpack_from(
        "<HHI16sIIIIIIII", msg, H)
    if size != 57:
        raise MessageError("bad size")
    inp = buffer_at(msg, ioff, ilen, 56)
    return IoctlRequest(code, fid, inp, maxin, maxout, flags)


def pack_ioctl_response(code: int, file_id: bytes, output: bytes, input_echo: bytes = b"",
                        body_padding: int = 0) -> bytes:
    ioff = H + 48 + body_padding
    ooff = ioff + ((len(input_echo) + 7) & ~7)
    pad = b"\0" * (ooff - ioff - len(input_echo))
    return struct.pack("<HHI16sIIIIII", 49, 0, code, file_id, ioff, len(input_echo), ooff, len(output), 0, 0) \
        + b"\0" * body_padding + input_echo + pad + output
