"""SET_INFO input decoders (MS-FSCC 2.4, semantics from MS-FSA 2.1.5.15).

Error contract (only these are raised, all ``FsccError`` subclasses):

* ``InfoLengthMismatch``   -> STATUS_INFO_LENGTH_MISMATCH: the buffer is shorter
  than the fixed part of the structure (MS-FSA 2.1.5.15: "If InputBufferSize
  is less than the size of ..., return STATUS_INFO_LENGTH_MISMATCH").
* ``InvalidInfoParameter`` -> STATUS_INVALID_PARAMETER: well-sized but invalid
  content (FileNameLength 0/odd/beyond the buffer, negative sizes, time < -2,
  unsupported mode bits).
* ``InvalidInfoClass``     -> STATUS_INVALID_INFO_CLASS (``decode_set_info`` only).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from smbnd.wire.fscc import (
    FILE_DISPOSITION_DELETE,
    FILE_NO_INTERMEDIATE_BUFFERING,
    FILE_RENAME_REPLACE_IF_EXISTS,
    FILE_SEQUENTIAL_ONLY,
    FILE_SYNCHRONOUS_IO_ALERT,
    FILE_SYNCHRONOUS_IO_NONALERT,
    FILE_WRITE_THROUGH,
    FileAllocationInformation,
    FileBasicInformation,
    FileDispositionInformation,
    FileDispositionInformationEx,
    FileEndOfFileInformation,
    FileLinkInformation,
    FileLinkInformationEx,
    FileModeInformation,
    FilePositionInformation,
    FileRenameInformation,
    FileRenameInformationEx,
    FileValidDataLengthInformation,
    InfoLengthMismatch,
    InvalidInfoClass,
    InvalidInfoParameter,
)

# Special FILETIME values in FileBasicInformation (MS-FSA 2.1.5.15.2)
TIME_NO_CHANGE = 0
TIME_STOP_UPDATING = -1
TIME_RESUME_UPDATING = -2


@dataclass(frozen=True)
class BasicInfo:
    """Decoded FileBasicInformation. Times are signed: 0 = don't change,
    -1 = stop automatic updates for this handle, -2 = resume them,
    >0 = set this FILETIME. FileAttributes 0 = don't change."""
    creation_time: int
    last_access_time: int
    last_write_time: int
    change_time: int
    file_attributes: int


@dataclass(frozen=True)
class RenameInfo:
    """FileRenameInformation / FileLinkInformation (SMB2 layout, MS-FSCC 2.4
    FILE_RENAME_INFORMATION_TYPE_2) and their *Ex variants (``flags``)."""
    replace_if_exists: bool
    root_directory: int
    file_name: str
    flags: int = 0


@dataclass(frozen=True)
class DispositionInfo:
    delete_pending: bool
    flags: int = 0


def _need(buf: bytes, n: int, what: str) -> None:
    if len(buf) < n:
        raise InfoLengthMismatch(f"{what}: need {n} bytes, got {len(buf)}")


def decode_basic(buf: bytes) -> BasicInfo:
    """FileBasicInformation (MS-FSCC 2.4): 4 x FILETIME, FileAttributes, Reserved = 40 bytes
    (the I/O manager requires the full structure; Samba accepts 36)."""
    _need(buf, 40, "FileBasicInformation")
    c, a, w, ch, attrs = struct.unpack_from("<qqqqI", buf, 0)
    for t in (c, a, w, ch):
        if t < TIME_RESUME_UPDATING:  # MS-FSA 2.1.5.15.2: < -2 -> STATUS_INVALID_PARAMETER
            raise InvalidInfoParameter("FileBasicInformation time < -2")
    return BasicInfo(c, a, w, ch, attrs)


def _decode_name_struct(buf: bytes, what: str) -> tuple[int, int, str]:
    # ReplaceIfExists/Flags (4 used of 8), RootDirectory (8), FileNameLength (4), FileName
    _need(buf, 20, what)
    head, root, nlen = struct.unpack_from("<I4xQI", buf, 0)
    if nlen == 0 or nlen & 1 or 20 + nlen > len(buf):
        raise InvalidInfoParameter(f"{what}: bad FileNameLength {nlen}")
    name = bytes(buf[20:20 + nlen]).decode("utf-16-le", "surrogatepass")
    name = name.rstrip("\x00")
    if not name:
        raise InvalidInfoParameter(f"{what}: empty name")
    return head, root, name


def decode_rename(buf: bytes) -> RenameInfo:
    """FileRenameInformation, SMB2 layout (MS-FSCC 2.4 FILE_RENAME_INFORMATION_TYPE_2):
    ReplaceIfExists (1), Reserved (7), RootDirectory (8), FileNameLength (4), FileName."""
    head, root, name = _decode_name_struct(buf, "FileRenameInformation")
    return RenameInfo(bool(head & 0xFF), root, name, 0)


def decode_rename_ex(buf: bytes) -> RenameInfo:
    """FileRenameInformationEx (MS-FSCC 2.4): Flags (4), pad (4), RootDirectory, Len, Name."""
    flags, root, name = _decode_name_struct(buf, "FileRenameInformationEx")
    return RenameInfo(bool(flags & FILE_RENAME_REPLACE_IF_EXISTS), root, name, flags)


def decode_link(buf: bytes) -> RenameInfo:
    """FileLinkInformation (MS-FSCC 2.4, SMB2 layout identical to rename)."""
    head, root, name = _decode_name_struct(buf, "FileLinkInformation")
    return RenameInfo(bool(head & 0xFF), root, name, 0)


def decode_link_ex(buf: bytes) -> RenameInfo:
    """FileLinkInformationEx (MS-FSCC 2.4): Flags share FILE_LINK_REPLACE_IF_EXISTS = 1."""
    flags, root, name = _decode_name_struct(buf, "FileLinkInformationEx")
    return RenameInfo(bool(flags & 1), root, name, flags)


def decode_disposition(buf: bytes) -> DispositionInfo:
    """FileDispositionInformation (MS-FSCC 2.4): DeletePending (1 byte, nonzero = TRUE)."""
    _need(buf, 1, "FileDispositionInformation")
    d = buf[0] != 0
    return DispositionInfo(d, FILE_DISPOSITION_DELETE if d else 0)


def decode_disposition_ex(buf: bytes) -> DispositionInfo:
    """FileDispositionInformationEx (MS-FSCC 2.4): Flags (4)."""
    _need(buf, 4, "FileDispositionInformationEx")
    (flags,) = struct.unpack_from("<I", buf, 0)
    return DispositionInfo(bool(flags & FILE_DISPOSITION_DELETE), flags)


def _decode_i64(buf: bytes, what: str) -> int:
    _need(buf, 8, what)
    (v,) = struct.unpack_from("<q", buf, 0)
    if v < 0:
        raise InvalidInfoParameter(f"{what}: negative value")
    return v


def decode_end_of_file(buf: bytes) -> int:
    """FileEndOfFileInformation (MS-FSCC 2.4): EndOfFile (8, signed; < 0 invalid)."""
    return _decode_i64(buf, "FileEndOfFileInformation")


def decode_allocation(buf: bytes) -> int:
    """FileAllocationInformation (MS-FSCC 2.4): AllocationSize (8, signed; < 0 invalid)."""
    return _decode_i64(buf, "FileAllocationInformation")


def decode_valid_data_length(buf: bytes) -> int:
    """FileValidDataLengthInformation (MS-FSCC 2.4): ValidDataLength (8)."""
    return _decode_i64(buf, "FileValidDataLengthInformation")


def decode_position(buf: bytes) -> int:
    """FilePositionInformation (MS-FSCC 2.4): CurrentByteOffset (8); < 0 invalid (MS-FSA 2.1.5.15)."""
    return _decode_i64(buf, "FilePositionInformation")


_MODE_ALLOWED = (FILE_WRITE_THROUGH | FILE_SEQUENTIAL_ONLY | FILE_NO_INTERMEDIATE_BUFFERING
                 | FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT)
_MODE_FIXED_AT_OPEN = (FILE_NO_INTERMEDIATE_BUFFERING | FILE_SYNCHRONOUS_IO_ALERT
                       | FILE_SYNCHRONOUS_IO_NONALERT)


def decode_mode(buf: bytes, open_mode: int = 0) -> int:
    """FileModeInformation (MS-FSCC 2.4): Mode (4).

    MS-FSA 2.1.5.15 (FileModeInformation): bits outside WRITE_THROUGH|SEQUENTIAL_ONLY|
    NO_INTERMEDIATE_BUFFERING|SYNCHRONOUS_IO_* -> INVALID_PARAMETER; the
    NO_INTERMEDIATE_BUFFERING / SYNCHRONOUS_IO_* bits must equal those the handle was
    opened with (``open_mode``; SMB2 opens never have the sync bits) -> so with the
    default only 0, 2, 4, 6 are accepted, like Samba.
    """
    _need(buf, 4, "FileModeInformation")
    (mode,) = struct.unpack_from("<I", buf, 0)
    if mode & ~_MODE_ALLOWED:
        raise InvalidInfoParameter(f"FileModeInformation: bad bits 0x{mode:x}")
    if (mode ^ open_mode) & _MODE_FIXED_AT_OPEN:
        raise InvalidInfoParameter("FileModeInformation: open-time bits differ")
    return mode


_DECODERS = {
    FileBasicInformation: decode_basic,
    FileRenameInformation: decode_rename,
    FileRenameInformationEx: decode_rename_ex,
    FileLinkInformation: decode_link,
    FileLinkInformationEx: decode_link_ex,
    FileDispositionInformation: decode_disposition,
    FileDispositionInformationEx: decode_disposition_ex,
    FileEndOfFileInformation: decode_end_of_file,
    FileAllocationInformation: decode_allocation,
    FileValidDataLengthInformation: decode_valid_data_length,
    FilePositionInformation: decode_position,
    FileModeInformation: decode_mode,
}


def decode_set_info(info_class: int, buf: bytes):
    """Dispatch a SET_INFO (SMB2_0_INFO_FILE) input buffer by class."""
    try:
        dec = _DECODERS[info_class]
    except KeyError:
        raise InvalidInfoClass(f"set info class {info_class}") from None
    return dec(bytes(buf))
