"""Extended-attribute lists and stream listings (pure codecs).

* FILE_FULL_EA_INFORMATION chains (MS-FSCC 2.4.15): SMB2 CREATE "ExtA"
  context, SET_INFO / QUERY_INFO FileFullEaInformation.
* FILE_GET_EA_INFORMATION chains (MS-FSCC 2.4.15.1): the QUERY_INFO input
  buffer naming the EAs wanted.
* FileStreamInformation (MS-FSCC 2.4.49) for a file with named streams.

An EA is ``(name, value, flags)``; names travel as 8-bit (OEM/ASCII) strings.
"""
from __future__ import annotations

import struct

from smbnd import status as _st
from smbnd.wire.fscc import FsccError

FILE_NEED_EA = 0x80                     # MS-FSCC 2.4.15 Flags
MAX_EA_NAME = 255                       # EaNameLength is one byte
# MS-FSCC 2.4.15: an EaName may not contain these (nor control characters)
_EA_NAME_BAD = frozenset('"*+,/:;<=>?[\\]|')

_FULL_HDR = struct.Struct("<IBBH")      # NextEntryOffset, Flags, EaNameLength, EaValueLength
_GET_HDR = struct.Struct("<IB")         # NextEntryOffset, EaNameLength
_STREAM_HDR = struct.Struct("<IIQQ")    # NextEntryOffset, StreamNameLength, StreamSize, AllocationSize


class EaListInconsistent(FsccError):
    status = _st.STATUS_EA_LIST_INCONSISTENT


class InvalidEaName(FsccError):
    status = _st.STATUS_INVALID_EA_NAME


def ea_name_ok(name: str) -> bool:
    """MS-FSCC 2.4.15 EaName: 1..255 ASCII characters, no control or reserved characters."""
    return (0 < len(name) <= MAX_EA_NAME and name.isascii()
            and not any(ord(c) < 0x20 or c in _EA_NAME_BAD for c in name))


def decode_full_ea_list(buf: bytes) -> list[tuple[str, bytes, int]]:
    """Parse a FILE_FULL_EA_INFORMATION chain. Structural errors -> EaListInconsistent
    (what IoCheckEaBufferValidity returns), bad names -> InvalidEaName."""
    buf = bytes(buf)
    out: list[tuple[str, bytes, int]] = []
    off = 0
    if not buf:
        raise EaListInconsistent("empty EA list")
    while True:
        if off + _FULL_HDR.size > len(buf):
            raise EaListInconsistent("EA entry header truncated")
        nxt, flags, nlen, vlen = _FULL_HDR.unpack_from(buf, off)
        end = off + _FULL_HDR.size + nlen + 1 + vlen
        if end > len(buf) or (nxt and off + nxt < end) or buf[off + 8 + nlen] != 0:
            raise EaListInconsistent("EA entry out of bounds")
        if flags & ~FILE_NEED_EA:
            raise EaListInconsistent("bad EA flags")
        raw = buf[off + 8: off + 8 + nlen]
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidEaName("non-ASCII EA name") from None
        if not ea_name_ok(name):
            raise InvalidEaName(f"bad EA name {name!r}")
        out.append((name, buf[off + 9 + nlen: end], flags))
        if nxt == 0:
            return out
        if nxt % 4:
            raise EaListInconsistent("misaligned EA entry")
        off += nxt


def encode_full_ea_entry(name: str, value: bytes, flags: int = 0) -> bytes:
    """One entry with NextEntryOffset 0 and no trailing padding."""
    nb = name.encode("ascii")
    return _FULL_HDR.pack(0, flags & 0xFF, len(nb), len(value)) + nb + b"\0" + bytes(value)


def encode_full_ea_list(eas, max_bytes: int | None = None) -> tuple[bytes, int]:
    """Chain entries 4-byte aligned (MS-FSCC 2.4.15); returns (buffer, entries that fit)."""
    out = bytearray()
    prev = -1
    count = 0
    for name, value, flags in eas:
        ent = encode_full_ea_entry(name, value, flags)
        pos = (len(out) + 3) & ~3
        if max_bytes is not None and pos + len(ent) > max_bytes:
            break
        out.extend(b"\0" * (pos - len(out)))
        if prev >= 0:
            struct.pack_into("<I", out, prev, pos - prev)
        out.extend(ent)
        prev = pos
        count += 1
    return bytes(out), count


def full_ea_list_size(eas) -> int:
    """Size of the whole FILE_FULL_EA_INFORMATION chain: the EaSize that FileEaInformation
    and the directory classes report (the buffer a query of all EAs needs, as Samba)."""
    size = 0
    for name, value, _flags in eas:
        size = (size + 3) & ~3
        size += _FULL_HDR.size + len(name) + 1 + len(value)
    return size


def decode_get_ea_list(buf: bytes) -> list[str]:
    """Parse a FILE_GET_EA_INFORMATION chain (MS-FSCC 2.4.15.1)."""
    buf = bytes(buf)
    names: list[str] = []
    off = 0
    while True:
        if off + _GET_HDR.size > len(buf):
            raise EaListInconsistent("get-EA entry truncated")
        nxt, nlen = _GET_HDR.unpack_from(buf, off)
        end = off + 5 + nlen
        if end > len(buf) or (nxt and off + nxt < end):
            raise EaListInconsistent("get-EA entry out of bounds")
        try:
            name = buf[off + 5: end].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidEaName("non-ASCII EA name") from None
        if not ea_name_ok(name):
            raise InvalidEaName(f"bad EA name {name!r}")
        names.append(name)
        if nxt == 0:
            return names
        off += nxt


def encode_get_ea_list(names) -> bytes:
    """Build a FILE_GET_EA_INFORMATION chain (for tests and clients)."""
    out = bytearray()
    prev = -1
    for n in names:
        nb = n.encode("ascii")
        pos = (len(out) + 3) & ~3
        out.extend(b"\0" * (pos - len(out)))
        if prev >= 0:
            struct.pack_into("<I", out, prev, pos - prev)
        out.extend(_GET_HDR.pack(0, len(nb)) + nb + b"\0")
        prev = pos
    return bytes(out)


def encode_stream_list(streams) -> bytes:
    """FileStreamInformation (MS-FSCC 2.4.49): ``streams`` is a list of
    (name, size, allocation) where name is the full ":name:$DATA" form; entries
    8-byte aligned, the last with NextEntryOffset 0 and no padding."""
    out = bytearray()
    prev = -1
    for name, size, alloc in streams:
        nb = name.encode("utf-16-le", "surrogatepass")
        pos = (len(out) + 7) & ~7
        out.extend(b"\0" * (pos - len(out)))
        if prev >= 0:
            struct.pack_into("<I", out, prev, pos - prev)
        out.extend(_STREAM_HDR.pack(0, len(nb), size, alloc) + nb)
        prev = pos
    return bytes(out)
