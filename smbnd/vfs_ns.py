"""Namespace mutations of a share's backing directory (mixin of smbnd.vfs.ShareFS): mkdir, delete,
rename, truncate, allocation. Every path given here was produced by ShareFS.lookup/resolve and is
inside the share (MS-FSA 2.1.5.x semantics are applied by the handlers; these return NTSTATUS)."""
from __future__ import annotations

import ctypes
import errno
import os
import stat as S

from smbnd import status as st
from smbnd.vfs_meta import _fallocate, map_oserror
from smbnd.vfs_path import upcase


class NamespaceOps:
    def _forget(self, path: str, sres: os.stat_result | None) -> None:
        if sres is not None:
            self._mem.pop((sres.st_dev, sres.st_ino), None)
        self.invalidate(os.path.dirname(path))
        self.invalidate(path)

    def mkdir(self, host_path: str) -> int:
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        try:
            os.mkdir(host_path, 0o777)
        except FileNotFoundError:
            return st.STATUS_OBJECT_PATH_NOT_FOUND
        except OSError as e:
            return map_oserror(e)
        self.invalidate(os.path.dirname(host_path))
        return st.STATUS_SUCCESS

    def delete_object(self, host_path: str, is_dir: bool) -> None:
        """Remove a file or (empty) directory together with its named streams
        (MS-FSA 2.1.5.4: the last close of a delete-pending file). Raises OSError."""
        sres = os.lstat(host_path)
        store = self.streams.dir_of(host_path) if is_dir or sres.st_nlink <= 1 else None
        os.rmdir(host_path) if is_dir else os.unlink(host_path)
        self.streams.drop_dir(store)
        self.meta.forget(sres)
        self._forget(host_path, sres if is_dir or sres.st_nlink <= 1 else None)

    def unlink(self, host_path: str) -> int:
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        try:
            sres = os.lstat(host_path)
            if S.S_ISDIR(sres.st_mode):
                return st.STATUS_FILE_IS_A_DIRECTORY
            if sres.st_nlink <= 1:
                self.streams.remove_all(host_path)
            os.unlink(host_path)
        except OSError as e:
            return map_oserror(e)
        if sres.st_nlink <= 1:
            self._forget(host_path, sres)
        else:
            self.invalidate(os.path.dirname(host_path))
        return st.STATUS_SUCCESS

    def rmdir(self, host_path: str) -> int:
        if self.read_only or os.path.realpath(host_path) == self.root:
            return st.STATUS_ACCESS_DENIED
        try:
            sres = os.lstat(host_path)
            if not S.S_ISDIR(sres.st_mode):
                return st.STATUS_NOT_A_DIRECTORY
            store = self.streams.dir_of(host_path)
            os.rmdir(host_path)
            self.streams.drop_dir(store)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return st.STATUS_DIRECTORY_NOT_EMPTY
            return map_oserror(e)
        self._forget(host_path, sres)
        return st.STATUS_SUCCESS

    def rename(self, src: str, dst: str, replace: bool, *, new_name: str | None = None) -> int:
        """Rename resolved ``src`` to ``dst`` (from ``resolve(..., for_create=True)``).

        ``new_name``: the final component as the client spelled it; it is used
        as the on-disk name, so case-only renames ("foo" -> "FOO", where dst
        resolves to src itself) work. Windows rules (MS-FSA 2.1.5.15.12):
        dst exists and not replace -> OBJECT_NAME_COLLISION; replace onto an
        existing directory -> ACCESS_DENIED; renaming the root -> ACCESS_DENIED.
        """
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        if os.path.realpath(src) == self.root or os.path.realpath(dst) == self.root:
            return st.STATUS_ACCESS_DENIED
        target = os.path.join(os.path.dirname(dst), new_name) if new_name else dst
        try:
            s_st = os.lstat(src)
            try:
                d_st = os.lstat(dst)
            except FileNotFoundError:
                d_st = None
            if d_st is not None and (d_st.st_dev, d_st.st_ino) == (s_st.st_dev, s_st.st_ino) \
                    and os.path.dirname(dst) == os.path.dirname(src) \
                    and upcase(os.path.basename(dst)) == upcase(os.path.basename(src)):
                d_st = None  # same file, case-only (or no-op) rename
            if d_st is not None:
                if not replace:
                    return st.STATUS_OBJECT_NAME_COLLISION
                if S.S_ISDIR(d_st.st_mode):
                    return st.STATUS_ACCESS_DENIED
                if d_st.st_nlink <= 1:
                    self.streams.remove_all(dst)   # the replaced file's streams go with it
                if dst != target or S.S_ISDIR(s_st.st_mode):
                    os.unlink(dst)
                    self._forget(dst, d_st if d_st.st_nlink <= 1 else None)
            elif target != src and os.path.lexists(target) and not replace:
                return st.STATUS_OBJECT_NAME_COLLISION
            if target != src:
                os.rename(src, target)
        except FileNotFoundError:
            return st.STATUS_OBJECT_NAME_NOT_FOUND
        except OSError as e:
            return map_oserror(e)
        except (UnicodeError, ValueError):
            return st.STATUS_OBJECT_NAME_INVALID
        for p in (src, target):
            self.invalidate(os.path.dirname(p))
        self.invalidate(src)
        return st.STATUS_SUCCESS

    def truncate(self, host_path: str, size: int) -> int:
        """FileEndOfFileInformation."""
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        if size < 0:
            return st.STATUS_INVALID_PARAMETER
        try:
            os.truncate(host_path, size)
        except OSError as e:
            return map_oserror(e)
        except OverflowError:
            return st.STATUS_DISK_FULL
        return st.STATUS_SUCCESS

    def set_allocation(self, host_path: str, size: int) -> int:
        """FileAllocationInformation (MS-FSA 2.1.5.15.1): below EOF truncates;
        above EOF reserves space without changing EOF (fallocate KEEP_SIZE,
        silently skipped when the fs cannot)."""
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        if size < 0:
            return st.STATUS_INVALID_PARAMETER
        try:
            sres = os.stat(host_path)
            if S.S_ISDIR(sres.st_mode):
                return st.STATUS_INVALID_PARAMETER
            if size < sres.st_size:
                os.truncate(host_path, size)
                return st.STATUS_SUCCESS
            if _fallocate is not None and size > sres.st_blocks * 512:
                fd = os.open(host_path, os.O_WRONLY | os.O_NOFOLLOW)
                try:
                    if _fallocate(fd, 1, 0, size) != 0:  # FALLOC_FL_KEEP_SIZE
                        err = ctypes.get_errno()
                        if err in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                            return st.STATUS_DISK_FULL
                finally:
                    os.close(fd)
        except OSError as e:
            return map_oserror(e)
        except OverflowError:
            return st.STATUS_DISK_FULL
        return st.STATUS_SUCCESS
