"""Host-side helpers for the share VFS: FILETIME conversion, errno -> NTSTATUS,
the persisted DOS-metadata record (user xattr) and statx/fallocate via libc."""
from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from smbnd import status as st
from smbnd.wire.fscc import (
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_NOT_CONTENT_INDEXED,
    FILE_ATTRIBUTE_OFFLINE,
    FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_SYSTEM,
    FILE_ATTRIBUTE_TEMPORARY,
)

FILETIME_UNIX_EPOCH = 116444736000000000  # 1970-01-01 in 100ns units since 1601


def unix_to_filetime(ns: int) -> int:
    """Nanoseconds since the Unix epoch -> FILETIME (MS-DTYP 2.3.3)."""
    return ns // 100 + FILETIME_UNIX_EPOCH


def filetime_to_unix_ns(ft: int) -> int:
    return (ft - FILETIME_UNIX_EPOCH) * 100


class VfsError(Exception):
    def __init__(self, status: int, msg: str = ""):
        super().__init__(msg or st.name(status))
        self.status = status


_ERRNO_MAP = {
    errno.ENOENT: st.STATUS_OBJECT_NAME_NOT_FOUND,
    errno.EACCES: st.STATUS_ACCESS_DENIED,
    errno.EPERM: st.STATUS_ACCESS_DENIED,
    errno.EEXIST: st.STATUS_OBJECT_NAME_COLLISION,
    errno.ENOTEMPTY: st.STATUS_DIRECTORY_NOT_EMPTY,
    errno.ENOSPC: st.STATUS_DISK_FULL,
    errno.EDQUOT: st.STATUS_DISK_FULL,
    errno.EFBIG: st.STATUS_DISK_FULL,
    errno.EISDIR: st.STATUS_FILE_IS_A_DIRECTORY,
    errno.ENOTDIR: st.STATUS_OBJECT_PATH_NOT_FOUND,
    errno.EIO: st.STATUS_UNEXPECTED_IO_ERROR,
    errno.EROFS: st.STATUS_MEDIA_WRITE_PROTECTED,
    errno.ENAMETOOLONG: st.STATUS_OBJECT_NAME_INVALID,
    errno.ELOOP: st.STATUS_OBJECT_PATH_NOT_FOUND,
    errno.EINVAL: st.STATUS_INVALID_PARAMETER,
    errno.EXDEV: st.STATUS_NOT_SAME_DEVICE,
    errno.EBUSY: st.STATUS_SHARING_VIOLATION,
    errno.ETXTBSY: st.STATUS_SHARING_VIOLATION,
    errno.EMFILE: st.STATUS_TOO_MANY_OPENED_FILES,
    errno.ENFILE: st.STATUS_TOO_MANY_OPENED_FILES,
    errno.ENOMEM: st.STATUS_NO_MEMORY,
    errno.EBADF: st.STATUS_INVALID_HANDLE,
    errno.EOPNOTSUPP: st.STATUS_NOT_SUPPORTED,
    errno.ENOSYS: st.STATUS_NOT_SUPPORTED,
    errno.EMLINK: st.STATUS_INSUFFICIENT_RESOURCES,
    errno.ESTALE: st.STATUS_OBJECT_NAME_NOT_FOUND,
}


def map_oserror(e: OSError) -> int:
    """errno -> NTSTATUS (same choices as Samba's unix_nt_errmap where they exist)."""
    if isinstance(e, UnicodeError):
        return st.STATUS_OBJECT_NAME_INVALID
    return _ERRNO_MAP.get(getattr(e, "errno", None), st.STATUS_UNSUCCESSFUL)


# DOS attribute bits we persist (MS-FSA 2.1.5.15.2 settable attributes).
PERSIST_MASK = (FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM
                | FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_TEMPORARY | FILE_ATTRIBUTE_OFFLINE
                | FILE_ATTRIBUTE_NOT_CONTENT_INDEXED)

XATTR_NAME = "user.smbnd.dosinfo"
# magic, flags, attributes, creation FILETIME, change FILETIME, ref mtime ns, ref size
_REC = struct.Struct("<4sIIqqqq")
_REC_MAGIC = b"SND1"
_F_ATTRS, _F_CREATE, _F_CHANGE = 1, 2, 4
_F_SPARSE = 8  # FSCTL_SET_SPARSE state (MS-FSCC 2.3.64); not settable via FileBasicInformation


@dataclass
class _Record:
    flags: int = 0
    attrs: int = 0
    creation: int = 0
    change: int = 0
    ref_mtime: int = 0
    ref_size: int = 0

    def pack(self) -> bytes:
        return _REC.pack(_REC_MAGIC, self.flags, self.attrs, self.creation, self.change,
                         self.ref_mtime, self.ref_size)

    @classmethod
    def unpack(cls, b: bytes) -> "_Record | None":
        if len(b) != _REC.size:
            return None
        magic, *rest = _REC.unpack(b)
        return cls(*rest) if magic == _REC_MAGIC else None


# statx(2) for birth time (Python 3.11 os.stat has no st_birthtime on Linux).
_STATX_BTIME = 0x800
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _statx = _libc.statx
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    _statx.restype = ctypes.c_int
    _fallocate = _libc.fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - non-glibc
    _statx = None
    _fallocate = None


def _birth_ns(path: str) -> int | None:
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(256)
    if _statx(-100, os.fsencode(path), 0, _STATX_BTIME, buf) != 0:
        return None
    (mask,) = struct.unpack_from("<I", buf, 0)
    if not mask & _STATX_BTIME:
        return None
    sec, nsec = struct.unpack_from("<qI", buf, 80)  # struct statx.stx_btime
    return sec * 1_000_000_000 + nsec


# FIEMAP (linux/fiemap.h): the data extents of a file, without the xattr block that
# st_blocks also counts on ext4 once a file's xattrs (EAs, SD, DOS record) leave the inode.
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_HDR = struct.Struct("=QQIIII")
_FIEMAP_EXT = struct.Struct("=QQQ16xI12x")
_FIEMAP_EXTENT_LAST = 0x1
_FIEMAP_BATCH = 64


def data_allocation(path: str, fallback: int) -> int:
    """Bytes allocated to the data of ``path`` (MS-FSCC AllocationSize), or ``fallback``."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return fallback
    total, start = 0, 0
    try:
        for _ in range(1024):
            buf = bytearray(_FIEMAP_HDR.size + _FIEMAP_BATCH * _FIEMAP_EXT.size)
            _FIEMAP_HDR.pack_into(buf, 0, start, (1 << 64) - 1 - start, 0, 0, _FIEMAP_BATCH, 0)
            fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf)
            n = _FIEMAP_HDR.unpack_from(buf, 0)[3]
            if n == 0:
                return total
            for i in range(n):
                logical, _phys, length, flags = _FIEMAP_EXT.unpack_from(buf, _FIEMAP_HDR.size + i * _FIEMAP_EXT.size)
                total += length
                start = logical + length
                if flags & _FIEMAP_EXTENT_LAST:
                    return total
        return total
    except OSError:
        return fallback
    finally:
        os.close(fd)
