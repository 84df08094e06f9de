"""QUERY_DIRECTORY entry encoders (MS-FSCC 2.4 directory information classes).

Entries are chained with NextEntryOffset; every entry starts on an 8-byte
boundary (MS-FSCC 2.4: "NextEntryOffset ... MUST be 8-byte aligned"), the
last entry has NextEntryOffset 0 and carries no trailing padding (Samba
smb2_query_directory: align 8, "no padding").
"""
from __future__ import annotations

import struct

from smbnd.wire.fscc import (
    FileBothDirectoryInformation,
    FileDirectoryInformation,
    FileFullDirectoryInformation,
    FileIdBothDirectoryInformation,
    FileIdExtdBothDirectoryInformation,
    FileIdExtdDirectoryInformation,
    FileIdFullDirectoryInformation,
    FileNamesInformation,
    InvalidInfoClass,
    _ft,
    _u16,
)

_U64 = (1 << 64) - 1

# NextEntryOffset, FileIndex, Creation, LastAccess, LastWrite, Change,
# EndOfFile, AllocationSize, FileAttributes, FileNameLength  (64 bytes)
_COMMON = struct.Struct("<IIQQQQQQII")
_EA = struct.Struct("<I")
_ID_FULL_TAIL = struct.Struct("<IIQ")        # EaSize, Reserved, FileId
_BOTH_TAIL = struct.Struct("<IBB24s")        # EaSize, ShortNameLength, Reserved1, ShortName[24]
_ID_BOTH_TAIL = struct.Struct("<IBB24sHQ")   # ... Reserved2, FileId
_ID_EXTD_TAIL = struct.Struct("<II16s")      # EaSize, ReparsePointTag, FileId[16]
_ID_EXTD_BOTH_TAIL = struct.Struct("<II16sBB24s")
_NAMES = struct.Struct("<III")               # NextEntryOffset, FileIndex, FileNameLength

_FIXED = {
    FileDirectoryInformation: 64,          # MS-FSCC 2.4 FileDirectoryInformation
    FileFullDirectoryInformation: 68,      # MS-FSCC 2.4 FileFullDirectoryInformation
    FileIdFullDirectoryInformation: 80,    # MS-FSCC 2.4 FileIdFullDirectoryInformation
    FileBothDirectoryInformation: 94,      # MS-FSCC 2.4 FileBothDirectoryInformation
    FileIdBothDirectoryInformation: 104,   # MS-FSCC 2.4 FileIdBothDirectoryInformation
    FileIdExtdDirectoryInformation: 88,    # MS-FSCC 2.4 FileIdExtdDirectoryInformation
    FileIdExtdBothDirectoryInformation: 114,  # MS-FSCC 2.4 FileIdExtdBothDirectoryInformation
    FileNamesInformation: 12,              # MS-FSCC 2.4 FileNamesInformation
}
DIR_INFO_CLASSES = frozenset(_FIXED)


def dir_entry_fixed_size(info_class: int) -> int:
    """Size of the fixed part of one entry (before FileName). Unknown -> InvalidInfoClass."""
    try:
        return _FIXED[info_class]
    except KeyError:
        raise InvalidInfoClass(f"directory info class {info_class}") from None


def _short(short_name: str) -> tuple[int, bytes]:
    b = _u16(short_name)[:24]
    return len(b), b.ljust(24, b"\0")


def encode_dir_entry(info_class: int, info, file_index: int = 0, short_name: str = "",
                     reparse_tag: int = 0) -> bytes:
    """Encode one entry with NextEntryOffset = 0 and no trailing padding."""
    name = _u16(info.name)
    if info_class == FileNamesInformation:
        return _NAMES.pack(0, file_index, len(name)) + name
    if info_class not in _FIXED:
        raise InvalidInfoClass(f"directory info class {info_class}")
    head = _COMMON.pack(0, file_index & 0xFFFFFFFF,
                        _ft(info.creation_time), _ft(info.last_access_time),
                        _ft(info.last_write_time), _ft(info.change_time),
                        info.end_of_file & _U64, info.allocation_size & _U64,
                        info.attributes & 0xFFFFFFFF, len(name))
    ea = info.ea_size & 0xFFFFFFFF
    fid = info.file_id & _U64
    if info_class == FileDirectoryInformation:
        tail = b""
    elif info_class == FileFullDirectoryInformation:
        tail = _EA.pack(ea)
    elif info_class == FileIdFullDirectoryInformation:
        tail = _ID_FULL_TAIL.pack(ea, 0, fid)
    elif info_class == FileBothDirectoryInformation:
        sl, sb = _short(short_name)
        tail = _BOTH_TAIL.pack(ea, sl, 0, sb)
    elif info_class == FileIdBothDirectoryInformation:
        sl, sb = _short(short_name)
        tail = _ID_BOTH_TAIL.pack(ea, sl, 0, sb, 0, fid)
    elif info_class == FileIdExtdDirectoryInformation:
        tail = _ID_EXTD_TAIL.pack(ea, reparse_tag, fid.to_bytes(16, "little"))
    else:  # FileIdExtdBothDirectoryInformation
        sl, sb = _short(short_name)
        tail = _ID_EXTD_BOTH_TAIL.pack(ea, reparse_tag, fid.to_bytes(16, "little"), sl, 0, sb)
    return head + tail + name


def encode_dir_entries(info_class: int, entries, max_bytes: int) -> tuple[bytes, int]:
    """Pack as many ``entries`` as fit in ``max_bytes``.

    Returns (buffer, consumed_count). consumed_count == 0 means the first
    entry did not fit (caller: STATUS_INFO_LENGTH_MISMATCH if it is the first
    entry of the enumeration, per Samba/MS-SMB2 3.3.5.18). Unknown class ->
    InvalidInfoClass (STATUS_INVALID_INFO_CLASS).
    """
    dir_entry_fixed_size(info_class)  # validates the class even for an empty list
    out = bytearray()
    prev = -1
    count = 0
    for info in entries:
        ent = encode_dir_entry(info_class, info, short_name=getattr(info, "short_name", ""))
        pos = (len(out) + 7) & ~7 if count else 0
        if pos + len(ent) > max_bytes:
            break
        if count:
            out.extend(b"\0" * (pos - len(out)))
            struct.pack_into("<I", out, prev, pos - prev)
        out.extend(ent)
        prev = pos
        count += 1
    return bytes(out), count
