"""MS-FSCC information-class encoders (pure, no I/O).

File information classes (MS-FSCC 2.4), file-system information classes
(MS-FSCC 2.5), FILE_ATTRIBUTE_* (MS-FSCC 2.6) and the size tables the
QUERY_INFO handler needs to decide between STATUS_INFO_LENGTH_MISMATCH and
STATUS_BUFFER_OVERFLOW (MS-SMB2 3.3.5.20.1).

Directory-entry encoders live in ``fscc_dir`` and SET_INFO decoders in
``fscc_set``; both are re-exported from here.

Every encoder takes an object with the attributes of ``smbnd.vfs.FileInfo``
(duck-typed so this module stays import-free of the VFS).

Exceptions (all subclasses of ``FsccError`` which is a ``ValueError`` and
carries ``.status``):

* ``InvalidInfoClass``      -> STATUS_INVALID_INFO_CLASS  (unknown/unsupported class)
* ``InfoLengthMismatch``    -> STATUS_INFO_LENGTH_MISMATCH (input shorter than the fixed struct)
* ``InvalidInfoParameter``  -> STATUS_INVALID_PARAMETER   (well-sized but bad content)
"""
from __future__ import annotations

import struct

from smbnd import status as _st

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class FsccError(ValueError):
    """Base class; ``status`` is the NTSTATUS the caller should return."""

    status = _st.STATUS_INVALID_PARAMETER


class InvalidInfoClass(FsccError):
    status = _st.STATUS_INVALID_INFO_CLASS


class InfoLengthMismatch(FsccError):
    status = _st.STATUS_INFO_LENGTH_MISMATCH


class InvalidInfoParameter(FsccError):
    status = _st.STATUS_INVALID_PARAMETER


# ---------------------------------------------------------------------------
# FileInformationClass values (MS-FSCC 2.4)
# ---------------------------------------------------------------------------
FileDirectoryInformation = 1
FileFullDirectoryInformation = 2
FileBothDirectoryInformation = 3
FileBasicInformation = 4
FileStandardInformation = 5
FileInternalInformation = 6
FileEaInformation = 7
FileAccessInformation = 8
FileNameInformation = 9
FileRenameInformation = 10
FileLinkInformation = 11
FileNamesInformation = 12
FileDispositionInformation = 13
FilePositionInformation = 14
FileFullEaInformation = 15
FileModeInformation = 16
FileAlignmentInformation = 17
FileAllInformation = 18
FileAllocationInformation = 19
FileEndOfFileInformation = 20
FileAlternateNameInformation = 21
FileStreamInformation = 22
FilePipeInformation = 23
FilePipeLocalInformation = 24
FilePipeRemoteInformation = 25
FileCompressionInformation = 28
FileObjectIdInformation = 29
FileQuotaInformation = 32
FileReparsePointInformation = 33
FileNetworkOpenInformation = 34
FileAttributeTagInformation = 35
FileIdBothDirectoryInformation = 37
FileIdFullDirectoryInformation = 38
FileValidDataLengthInformation = 39
FileShortNameInformation = 40
FileSfioReserveInformation = 44
FileSfioVolumeInformation = 45
FileHardLinkInformation = 46
FileNormalizedNameInformation = 48
FileIdGlobalTxDirectoryInformation = 50
FileStandardLinkInformation = 54
FileIdInformation = 59
FileIdExtdDirectoryInformation = 60
FileIdExtdBothDirectoryInformation = 63
FileDispositionInformationEx = 64
FileRenameInformationEx = 65
FileStatInformation = 68
FileStatLxInformation = 70
FileCaseSensitiveInformation = 71
FileLinkInformationEx = 72

# FsInformationClass values (MS-FSCC 2.5)
FileFsVolumeInformation = 1
FileFsLabelInformation = 2
FileFsSizeInformation = 3
FileFsDeviceInformation = 4
FileFsAttributeInformation = 5
FileFsControlInformation = 6
FileFsFullSizeInformation = 7
FileFsObjectIdInformation = 8
FileFsDriverPathInformation = 9
FileFsVolumeFlagsInformation = 10
FileFsSectorSizeInformation = 11

# ---------------------------------------------------------------------------
# FILE_ATTRIBUTE_* (MS-FSCC 2.6)
# ---------------------------------------------------------------------------
FILE_ATTRIBUTE_READONLY = 0x00000001
FILE_ATTRIBUTE_HIDDEN = 0x00000002
FILE_ATTRIBUTE_SYSTEM = 0x00000004
FILE_ATTRIBUTE_DIRECTORY = 0x00000010
FILE_ATTRIBUTE_ARCHIVE = 0x00000020
FILE_ATTRIBUTE_NORMAL = 0x00000080
FILE_ATTRIBUTE_TEMPORARY = 0x00000100
FILE_ATTRIBUTE_SPARSE_FILE = 0x00000200
FILE_ATTRIBUTE_REPARSE_POINT = 0x00000400
FILE_ATTRIBUTE_COMPRESSED = 0x00000800
FILE_ATTRIBUTE_OFFLINE = 0x00001000
FILE_ATTRIBUTE_NOT_CONTENT_INDEXED = 0x00002000
FILE_ATTRIBUTE_ENCRYPTED = 0x00004000
FILE_ATTRIBUTE_INTEGRITY_STREAM = 0x00008000
FILE_ATTRIBUTE_NO_SCRUB_DATA = 0x00020000
FILE_ATTRIBUTE_RECALL_ON_OPEN = 0x00040000
FILE_ATTRIBUTE_PINNED = 0x00080000
FILE_ATTRIBUTE_UNPINNED = 0x00100000
FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS = 0x00400000

# FileSystemAttributes for FileFsAttributeInformation (MS-FSCC 2.5.1)
FILE_CASE_SENSITIVE_SEARCH = 0x00000001
FILE_CASE_PRESERVED_NAMES = 0x00000002
FILE_UNICODE_ON_DISK = 0x00000004
FILE_PERSISTENT_ACLS = 0x00000008
FILE_FILE_COMPRESSION = 0x00000010
FILE_VOLUME_QUOTAS = 0x00000020
FILE_SUPPORTS_SPARSE_FILES = 0x00000040
FILE_SUPPORTS_REPARSE_POINTS = 0x00000080
FILE_SUPPORTS_REMOTE_STORAGE = 0x00000100
FILE_VOLUME_IS_COMPRESSED = 0x00008000
FILE_SUPPORTS_OBJECT_IDS = 0x00010000
FILE_SUPPORTS_ENCRYPTION = 0x00020000
FILE_NAMED_STREAMS = 0x00040000
FILE_READ_ONLY_VOLUME = 0x00080000
FILE_SUPPORTS_HARD_LINKS = 0x00400000
FILE_SUPPORTS_EXTENDED_ATTRIBUTES = 0x00800000

# What Samba advertises for a normal POSIX share (smbd_do_qfsinfo:
# CASE_PRESERVED|CASE_SENSITIVE_SEARCH|OBJECT_IDS|UNICODE_ON_DISK plus
# fs_capabilities incl. PERSISTENT_ACLS); we also claim sparse files.
DEFAULT_FS_ATTRIBUTES = (
    FILE_CASE_SENSITIVE_SEARCH
    | FILE_CASE_PRESERVED_NAMES
    | FILE_UNICODE_ON_DISK
    | FILE_PERSISTENT_ACLS
    | FILE_SUPPORTS_SPARSE_FILES
    | FILE_SUPPORTS_OBJECT_IDS
)

# FileFsDeviceInformation (MS-FSCC 2.5.10)
FILE_DEVICE_CD_ROM = 0x00000002
FILE_DEVICE_DISK = 0x00000007
FILE_REMOVABLE_MEDIA = 0x00000001
FILE_READ_ONLY_DEVICE = 0x00000002
FILE_FLOPPY_DISKETTE = 0x00000004
FILE_WRITE_ONCE_MEDIA = 0x00000008
FILE_REMOTE_DEVICE = 0x00000010
FILE_DEVICE_IS_MOUNTED = 0x00000020
FILE_VIRTUAL_VOLUME = 0x00000040
FILE_DEVICE_SECURE_OPEN = 0x00000100

# FileFsSectorSizeInformation flags (MS-FSCC 2.5.7)
SSINFO_FLAGS_ALIGNED_DEVICE = 0x00000001
SSINFO_FLAGS_PARTITION_ALIGNED_ON_DEVICE = 0x00000002
SSINFO_FLAGS_NO_SEEK_PENALTY = 0x00000004
SSINFO_FLAGS_TRIM_ENABLED = 0x00000008

# FileModeInformation bits (MS-FSCC 2.4)
FILE_WRITE_THROUGH = 0x00000002
FILE_SEQUENTIAL_ONLY = 0x00000004
FILE_NO_INTERMEDIATE_BUFFERING = 0x00000008
FILE_SYNCHRONOUS_IO_ALERT = 0x00000010
FILE_SYNCHRONOUS_IO_NONALERT = 0x00000020
FILE_DELETE_ON_CLOSE = 0x00001000

# FileDispositionInformationEx flags (MS-FSCC 2.4)
FILE_DISPOSITION_DO_NOT_DELETE = 0x00000000
FILE_DISPOSITION_DELETE = 0x00000001
FILE_DISPOSITION_POSIX_SEMANTICS = 0x00000002
FILE_DISPOSITION_FORCE_IMAGE_SECTION_CHECK = 0x00000004
FILE_DISPOSITION_ON_CLOSE = 0x00000008
FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE = 0x00000010

# FileRenameInformationEx flags (MS-FSCC 2.4)
FILE_RENAME_REPLACE_IF_EXISTS = 0x00000001
FILE_RENAME_POSIX_SEMANTICS = 0x00000002
FILE_RENAME_SUPPRESS_PIN_STATE_INHERITANCE = 0x00000004
FILE_RENAME_SUPPRESS_STORAGE_RESERVE_INHERITANCE = 0x00000008
FILE_RENAME_NO_INCREASE_AVAILABLE_SPACE = 0x00000010
FILE_RENAME_NO_DECREASE_AVAILABLE_SPACE = 0x00000020
FILE_RENAME_IGNORE_READONLY_ATTRIBUTE = 0x00000040
FILE_RENAME_FORCE_RESIZE_TARGET_SR = 0x00000080
FILE_RENAME_FORCE_RESIZE_SOURCE_SR = 0x00000100

DEFAULT_STREAM_NAME = "::$DATA"

_U64 = (1 << 64) - 1


def _ft(v: int) -> int:
    """Clamp a FILETIME into the unsigned 64-bit wire range."""
    return 0 if v < 0 else (v if v <= _U64 else _U64)


def _u16(s: str) -> bytes:
    return s.encode("utf-16-le", "surrogatepass")


# ---------------------------------------------------------------------------
# File information encoders (MS-FSCC 2.4)
# ---------------------------------------------------------------------------
_BASIC = struct.Struct("<QQQQII")


def encode_basic(info) -> bytes:
    """FileBasicInformation, MS-FSCC 2.4: 4 FILETIMEs, attributes, 4 reserved = 40."""
    return _BASIC.pack(_ft(info.creation_time), _ft(info.last_access_time),
                       _ft(info.last_write_time), _ft(info.change_time),
                       info.attributes & 0xFFFFFFFF, 0)


_STANDARD = struct.Struct("<QQIBBH")


def standard_nlink(info, delete_pending: bool) -> int:
    """NumberOfLinks as Samba reports it: directories 1, minus one when delete is pending."""
    n = 1 if info.is_directory else max(0, info.nlink)
    if delete_pending and n > 0:
        n -= 1
    return n


def encode_standard(info, delete_pending: bool = False, directory: bool | None = None) -> bytes:
    """FileStandardInformation, MS-FSCC 2.4: 24 bytes."""
    is_dir = info.is_directory if directory is None else directory
    return _STANDARD.pack(info.allocation_size & _U64, info.end_of_file & _U64,
                          standard_nlink(info, delete_pending),
                          1 if delete_pending else 0, 1 if is_dir else 0, 0)


def encode_internal(info) -> bytes:
    """FileInternalInformation, MS-FSCC 2.4: IndexNumber (8)."""
    return struct.pack("<Q", info.file_id & _U64)


def encode_ea(info) -> bytes:
    """FileEaInformation, MS-FSCC 2.4: EaSize (4)."""
    return struct.pack("<I", info.ea_size & 0xFFFFFFFF)


def encode_access(info, access_mask: int) -> bytes:
    """FileAccessInformation, MS-FSCC 2.4: AccessFlags (4)."""
    return struct.pack("<I", access_mask & 0xFFFFFFFF)


def encode_position(info, position: int) -> bytes:
    """FilePositionInformation, MS-FSCC 2.4: CurrentByteOffset (8)."""
    return struct.pack("<Q", position & _U64)


def encode_mode(info, mode: int) -> bytes:
    """FileModeInformation, MS-FSCC 2.4: Mode (4)."""
    return struct.pack("<I", mode & 0xFFFFFFFF)


def encode_alignment(info, alignment: int = 0) -> bytes:
    """FileAlignmentInformation, MS-FSCC 2.4: AlignmentRequirement (4); 0 = FILE_BYTE_ALIGNMENT."""
    return struct.pack("<I", alignment & 0xFFFFFFFF)


def encode_name(info, name: str) -> bytes:
    """FileNameInformation, MS-FSCC 2.4: FileNameLength (4) + name (UTF-16LE).

    For SMB2 ``name`` is the path from the share root with a leading
    backslash ("\\dir\\file", "\\" for the root) as Samba returns it.
    """
    b = _u16(name)
    return struct.pack("<I", len(b)) + b


def encode_all(info, *, name: str, access_mask: int = 0, position: int = 0,
               mode: int = 0, delete_pending: bool = False, alignment: int = 0) -> bytes:
    """FileAllInformation, MS-FSCC 2.4: Basic+Standard+Internal+Ea+Access+Position+Mode+Alignment+Name.

    Fixed part is 96 bytes; the name follows at offset 0x60 (100 + name bytes total).
    """
    return b"".join((
        encode_basic(info),
        encode_standard(info, delete_pending),
        encode_internal(info),
        encode_ea(info),
        encode_access(info, access_mask),
        encode_position(info, position),
        encode_mode(info, mode),
        encode_alignment(info, alignment),
        encode_name(info, name),
    ))


_NETOPEN = struct.Struct("<QQQQQQII")


def encode_network_open(info) -> bytes:
    """FileNetworkOpenInformation, MS-FSCC 2.4: 56 bytes."""
    return _NETOPEN.pack(_ft(info.creation_time), _ft(info.last_access_time),
                         _ft(info.last_write_time), _ft(info.change_time),
                         info.allocation_size & _U64, info.end_of_file & _U64,
                         info.attributes & 0xFFFFFFFF, 0)


def encode_attribute_tag(info, reparse_tag: int = 0) -> bytes:
    """FileAttributeTagInformation, MS-FSCC 2.4: FileAttributes, ReparseTag = 8."""
    return struct.pack("<II", info.attributes & 0xFFFFFFFF, reparse_tag & 0xFFFFFFFF)


_STREAM_HDR = struct.Struct("<IIQQ")


def encode_stream(info) -> bytes:
    """FileStreamInformation, MS-FSCC 2.4.

    Files: one "::$DATA" entry (24 + 14 = 38 bytes, NextEntryOffset 0);
    directories have no unnamed data stream -> empty buffer.
    """
    if info.is_directory:
        return b""
    nm = _u16(DEFAULT_STREAM_NAME)
    return _STREAM_HDR.pack(0, len(nm), info.end_of_file & _U64,
                            info.allocation_size & _U64) + nm


def encode_compression(info) -> bytes:
    """FileCompressionInformation, MS-FSCC 2.4: 16 bytes, COMPRESSION_FORMAT_NONE."""
    return struct.pack("<QHBBB3x", info.end_of_file & _U64, 0, 0, 0, 0)


def encode_normalized_name(info, name: str) -> bytes:
    """FileNormalizedNameInformation, MS-FSCC 2.4 layout (FILE_NAME_INFORMATION).

    Samba sends the share-relative path *without* a leading backslash ("" for root).
    """
    return encode_name(info, name)


def encode_alternate_name(info, short_name: str) -> bytes:
    """FileAlternateNameInformation, MS-FSCC 2.4 (FILE_NAME_INFORMATION layout)."""
    return encode_name(info, short_name)


def encode_id(info, volume_serial: int) -> bytes:
    """FileIdInformation, MS-FSCC 2.4: VolumeSerialNumber (8) + 128-bit FileId = 24."""
    return struct.pack("<QQQ", volume_serial & _U64, info.file_id & _U64, 0)


def encode_file_info(info_class: int, info, *, name: str = "", access_mask: int = 0,
                     position: int = 0, mode: int = 0, delete_pending: bool = False,
                     volume_serial: int = 0, normalized_name: str | None = None) -> bytes:
    """Dispatch a QUERY_INFO (SMB2_0_INFO_FILE) class. Unknown -> InvalidInfoClass."""
    c = info_class
    if c == FileBasicInformation:
        return encode_basic(info)
    if c == FileStandardInformation:
        return encode_standard(info, delete_pending)
    if c == FileInternalInformation:
        return encode_internal(info)
    if c == FileEaInformation:
        return encode_ea(info)
    if c == FileAccessInformation:
        return encode_access(info, access_mask)
    if c == FilePositionInformation:
        return encode_position(info, position)
    if c == FileModeInformation:
        return encode_mode(info, mode)
    if c == FileAlignmentInformation:
        return encode_alignment(info)
    if c == FileAllInformation:
        return encode_all(info, name=name, access_mask=access_mask, position=position,
                          mode=mode, delete_pending=delete_pending)
    if c == FileNetworkOpenInformation:
        return encode_network_open(info)
    if c == FileAttributeTagInformation:
        return encode_attribute_tag(info)
    if c == FileStreamInformation:
        return encode_stream(info)
    if c == FileCompressionInformation:
        return encode_compression(info)
    if c == FileNormalizedNameInformation:
        nn = normalized_name if normalized_name is not None else name.lstrip("\\")
        return encode_normalized_name(info, nn)
    if c == FileIdInformation:
        return encode_id(info, volume_serial)
    if c == FileNameInformation:
        return encode_name(info, name)
    raise InvalidInfoClass(f"file info class {info_class}")


# ---------------------------------------------------------------------------
# File-system information encoders (MS-FSCC 2.5)
# ---------------------------------------------------------------------------

def encode_fs_volume(creation_time: int, serial: int, label: str = "",
                     supports_objects: bool = False) -> bytes:
    """FileFsVolumeInformation, MS-FSCC 2.5.9: 18 fixed bytes + label."""
    lb = _u16(label)
    return struct.pack("<QIIBB", _ft(creation_time), serial & 0xFFFFFFFF, len(lb),
                       1 if supports_objects else 0, 0) + lb


def encode_fs_size(total_units: int, free_units: int, sectors_per_unit: int,
                   bytes_per_sector: int) -> bytes:
    """FileFsSizeInformation, MS-FSCC 2.5.8: 24 bytes."""
    return struct.pack("<QQII", total_units & _U64, free_units & _U64,
                       sectors_per_unit & 0xFFFFFFFF, bytes_per_sector & 0xFFFFFFFF)


def encode_fs_full_size(total_units: int, caller_free_units: int, actual_free_units: int,
                        sectors_per_unit: int, bytes_per_sector: int) -> bytes:
    """FileFsFullSizeInformation, MS-FSCC 2.5.4: 32 bytes."""
    return struct.pack("<QQQII", total_units & _U64, caller_free_units & _U64,
                       actual_free_units & _U64, sectors_per_unit & 0xFFFFFFFF,
                       bytes_per_sector & 0xFFFFFFFF)


def encode_fs_device(device_type: int = FILE_DEVICE_DISK,
                     characteristics: int = FILE_DEVICE_IS_MOUNTED) -> bytes:
    """FileFsDeviceInformation, MS-FSCC 2.5.10: 8 bytes.

    Samba: FILE_DEVICE_DISK, FILE_DEVICE_IS_MOUNTED (| FILE_READ_ONLY_DEVICE on RO shares).
    """
    return struct.pack("<II", device_type, characteristics)


def encode_fs_attribute(attributes: int = DEFAULT_FS_ATTRIBUTES,
                        max_component_length: int = 255, fs_name: str = "NTFS") -> bytes:
    """FileFsAttributeInformation, MS-FSCC 2.5.1: 12 fixed bytes + name (not NUL terminated)."""
    nb = _u16(fs_name)
    return struct.pack("<III", attributes, max_component_length, len(nb)) + nb


def encode_fs_object_id(object_id: bytes = b"\0" * 16, extended_info: bytes = b"\0" * 48) -> bytes:
    """FileFsObjectIdInformation, MS-FSCC 2.5.6: ObjectId (16) + ExtendedInfo (48) = 64."""
    return bytes(object_id[:16]).ljust(16, b"\0") + bytes(extended_info[:48]).ljust(48, b"\0")


def encode_fs_sector_size(bytes_per_sector: int = 512, physical_bytes_per_sector: int | None = None,
                          flags: int = SSINFO_FLAGS_ALIGNED_DEVICE
                          | SSINFO_FLAGS_PARTITION_ALIGNED_ON_DEVICE) -> bytes:
    """FileFsSectorSizeInformation, MS-FSCC 2.5.7: 7 x ULONG = 28 bytes."""
    p = bytes_per_sector if physical_bytes_per_sector is None else physical_bytes_per_sector
    return struct.pack("<IIIIIII", bytes_per_sector, p, p, p, flags, 0, 0)


# ---------------------------------------------------------------------------
# Size tables for QUERY_INFO truncation (MS-SMB2 3.3.5.20.1)
# ---------------------------------------------------------------------------
_FILE_FIXED = {
    FileBasicInformation: 40,
    FileStandardInformation: 24,
    FileInternalInformation: 8,
    FileEaInformation: 4,
    FileAccessInformation: 4,
    FilePositionInformation: 8,
    FileModeInformation: 4,
    FileAlignmentInformation: 4,
    FileNetworkOpenInformation: 56,
    FileAttributeTagInformation: 8,
    FileCompressionInformation: 16,
    FileIdInformation: 24,
}
# Minimum OutputBufferLength for variable classes (Samba's *fixed_portion):
# smaller -> STATUS_INFO_LENGTH_MISMATCH, otherwise truncate + STATUS_BUFFER_OVERFLOW.
_FILE_MIN = {
    FileAllInformation: 104,
    FileNameInformation: 8,
    FileNormalizedNameInformation: 8,
    FileAlternateNameInformation: 8,
    FileStreamInformation: 32,
}
_FS_FIXED = {
    FileFsSizeInformation: 24,
    FileFsDeviceInformation: 8,
    FileFsFullSizeInformation: 32,
    FileFsObjectIdInformation: 64,
    FileFsControlInformation: 48,
    FileFsSectorSizeInformation: 28,
}
_FS_MIN = {
    FileFsVolumeInformation: 24,
    FileFsAttributeInformation: 16,
}


def fixed_size(info_class: int) -> int | None:
    """Size of a fixed-size *file* info class, or None for variable-length/unknown classes."""
    return _FILE_FIXED.get(info_class)


def min_size(info_class: int) -> int | None:
    """Minimum output buffer for a file info class (fixed size, or fixed portion of a variable one)."""
    v = _FILE_FIXED.get(info_class)
    return v if v is not None else _FILE_MIN.get(info_class)


def fs_fixed_size(fs_class: int) -> int | None:
    """Size of a fixed-size *file-system* info class, or None."""
    return _FS_FIXED.get(fs_class)


def fs_min_size(fs_class: int) -> int | None:
    v = _FS_FIXED.get(fs_class)
    return v if v is not None else _FS_MIN.get(fs_class)


# Re-exports (kept at the bottom: the sub-modules import names defined above).
from smbnd.wire.fscc_dir import (  # noqa: E402
    DIR_INFO_CLASSES,
    dir_entry_fixed_size,
    encode_dir_entries,
    encode_dir_entry,
)
from smbnd.wire.fscc_set import (  # noqa: E402
    BasicInfo,
    DispositionInfo,
    RenameInfo,
    decode_allocation,
    decode_basic,
    decode_disposition,
    decode_disposition_ex,
    decode_end_of_file,
    decode_link,
    decode_link_ex,
    decode_mode,
    decode_position,
    decode_rename,
    decode_rename_ex,
    decode_set_info,
    decode_valid_data_length,
)
