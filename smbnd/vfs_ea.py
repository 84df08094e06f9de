"""Extended attributes and security descriptors of share files, kept in user xattrs.

* EAs (MS-FSCC 2.4.15 FileFullEaInformation; MS-FSA 2.1.5.1 EaBuffer, 2.1.5.14 set): the whole
  list lives in one xattr (``user.smbnd.eas``) as a FILE_FULL_EA_INFORMATION
  chain. Names are stored upper-cased, as NTFS does (Windows returns EA names
  capitalised); setting an EA with an empty value removes it. Without user
  xattr support the share answers STATUS_EAS_NOT_SUPPORTED.
* Security descriptors (MS-DTYP 2.4.6, self-relative) live in
  ``user.smbnd.sd``; without xattr support they are kept in process memory
  (keyed by inode), like the DOS-attribute record.
"""
from __future__ import annotations

import errno
import os

from smbnd import status as st
from smbnd.vfs_meta import map_oserror
from smbnd.wire.fscc import FsccError
from smbnd.wire.fscc_ea import decode_full_ea_list, encode_full_ea_list, full_ea_list_size

XATTR_EAS = "user.smbnd.eas"
XATTR_SD = "user.smbnd.sd"
MAX_EA_LIST = 0xFFFF        # MS-FSA: the packed EA set of a file is limited to 64 KiB
_NOSUP = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)
_NODATA = (errno.ENODATA, getattr(errno, "ENOATTR", errno.ENODATA))


class EaSdStore:
    def __init__(self, fs):
        self.fs = fs
        self._mem_sd: dict[tuple[int, int], bytes] = {}

    # ------------------------------------------------------------------ EAs
    @property
    def eas_supported(self) -> bool:
        return self.fs._xattr_ok

    def get_eas(self, path: str) -> list[tuple[str, bytes, int]]:
        if not self.fs._xattr_ok:
            return []
        try:
            raw = os.getxattr(path, XATTR_EAS)
        except OSError as e:
            if e.errno in _NOSUP:
                self.fs._xattr_ok = False
            return []
        try:
            return decode_full_ea_list(raw) if raw else []
        except FsccError:
            return []   # damaged record: behave as if the file had no EAs

    def ea_size(self, path: str) -> int:
        return full_ea_list_size(self.get_eas(path)) if self.fs._xattr_ok else 0

    def set_eas(self, path: str, changes) -> int:
        """Apply (name, value, flags) changes (MS-FSA 2.1.5.14, FileFullEaInformation):
        an empty value deletes the EA, otherwise it is added or replaced."""
        if self.fs.read_only:
            return st.STATUS_ACCESS_DENIED
        if not self.fs._xattr_ok:
            return st.STATUS_EAS_NOT_SUPPORTED
        cur = self.get_eas(path)
        for name, value, flags in changes:
            key = name.upper()
            cur = [e for e in cur if e[0] != key]
            if value:
                cur.append((key, bytes(value), flags))
        if full_ea_list_size(cur) > MAX_EA_LIST:
            return st.STATUS_EA_TOO_LARGE
        try:
            if cur:
                os.setxattr(path, XATTR_EAS, encode_full_ea_list(cur)[0])
            else:
                try:
                    os.removexattr(path, XATTR_EAS)
                except OSError as e:
                    if e.errno not in _NODATA:
                        raise
        except OSError as e:
            if e.errno in _NOSUP:
                self.fs._xattr_ok = False
                return st.STATUS_EAS_NOT_SUPPORTED
            if e.errno in (errno.ENOSPC, errno.E2BIG, errno.ERANGE):
                return st.STATUS_EA_TOO_LARGE
            return map_oserror(e)
        return st.STATUS_SUCCESS

    # ------------------------------------------------------------------- SDs
    def get_sd(self, path: str) -> bytes | None:
        """The stored self-relative SD, or None (the caller supplies the default)."""
        try:
            sres = os.stat(path)
        except OSError:
            return None
        mem = self._mem_sd.get((sres.st_dev, sres.st_ino))
        if mem is not None or not self.fs._xattr_ok:
            return mem
        try:
            return os.getxattr(path, XATTR_SD) or None
        except OSError as e:
            if e.errno in _NOSUP:
                self.fs._xattr_ok = False
            return None

    def set_sd(self, path: str, blob: bytes) -> int:
        if self.fs.read_only:
            return st.STATUS_ACCESS_DENIED
        try:
            sres = os.stat(path)
            key = (sres.st_dev, sres.st_ino)
            if self.fs._xattr_ok:
                try:
                    os.setxattr(path, XATTR_SD, blob)
                    self._mem_sd.pop(key, None)
                    return st.STATUS_SUCCESS
                except OSError as e:
                    if e.errno in _NOSUP:
                        self.fs._xattr_ok = False
                    elif e.errno not in (errno.ENOSPC, errno.E2BIG, errno.EPERM, errno.EACCES):
                        raise
            self._mem_sd[key] = bytes(blob)
        except OSError as e:
            return map_oserror(e)
        return st.STATUS_SUCCESS

    def forget(self, sres: os.stat_result) -> None:
        self._mem_sd.pop((sres.st_dev, sres.st_ino), None)
