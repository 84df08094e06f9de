"""Share VFS: maps SMB2 path names onto a backing host directory (pure, synchronous).

Path rules (``ShareFS.lookup``/``resolve``), in the order they are applied:

* leading ``\\`` or ``/`` on a CREATE name -> STATUS_INVALID_PARAMETER
  (MS-SMB2 3.3.5.9); ``/`` is accepted as a separator like Samba does.
* lexical pass left to right (Samba check_path_syntax): control characters
  0x00-0x1F and ``|`` -> OBJECT_NAME_INVALID; ``..`` removes the previous
  component, ``..`` above the share root -> STATUS_OBJECT_PATH_SYNTAX_BAD
  (what Windows and Samba return, smbtorture smb2.mkdir ``..\\..\\..``);
  an intermediate ``.`` is skipped, a final ``.`` (or the name ``.``) ->
  OBJECT_NAME_INVALID; empty components (``a\\\\b``) -> OBJECT_NAME_INVALID;
  a single trailing separator is allowed and reported (``trailing_sep``).
* wildcards ``* ? < > "`` anywhere -> OBJECT_NAME_INVALID (NTFS; Samba
  filename_convert_dirfsp). Components longer than 255 UTF-16 units ->
  OBJECT_NAME_INVALID. Trailing dots/spaces are kept verbatim: the SMB
  server hands names to NTFS unmodified (no Win32 stripping).
* ``:`` starts a stream in the last component only: ``name::$DATA`` is the
  file itself; ``name:s`` / ``name:s:$DATA`` is the named data stream ``s``
  (``Lookup.stream_name``, stored by ``smbnd.vfs_streams``); other stream
  types and empty names -> OBJECT_NAME_INVALID (stream names may contain
  wildcards and control characters, as on NTFS).
* each component is looked up exactly first, then case-insensitively
  (Windows simple upcase) in the directory unless ``case_sensitive``;
  missing intermediate -> OBJECT_PATH_NOT_FOUND, intermediate that is not a
  directory -> OBJECT_PATH_NOT_FOUND, missing final -> OBJECT_NAME_NOT_FOUND
  or (for_create) SUCCESS + path to create.
* symlinks are followed only when their fully resolved target stays inside
  the share root; a link escaping the root -> STATUS_ACCESS_DENIED; dangling
  or looping links are treated as absent (and as ACCESS_DENIED when the
  caller wants to create over one). The returned host path never contains
  symlinks (as of the lookup; callers may open it with O_NOFOLLOW).

Error convention: methods returning data (``stat``, ``listdir``) raise
``VfsError`` (``.status`` = NTSTATUS); mutators return an NTSTATUS int.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat as S
import threading
import time
import zlib
from dataclasses import dataclass

from smbnd import status as st
from smbnd.vfs_ea import EaSdStore
from smbnd.vfs_ns import NamespaceOps
from smbnd.vfs_short import maybe_short, short_name
from smbnd.vfs_streams import StreamStore
from smbnd.vfs_meta import (  # noqa: F401  (re-exported API)
    _F_ATTRS,
    _F_CHANGE,
    _F_CREATE,
    _F_SPARSE,
    FILETIME_UNIX_EPOCH,
    PERSIST_MASK,
    XATTR_NAME,
    VfsError,
    _birth_ns,
    _fallocate,
    _Record,
    data_allocation,
    filetime_to_unix_ns,
    map_oserror,
    unix_to_filetime,
)
from smbnd.vfs_path import (  # noqa: F401  (re-exported API)
    _BAD_CHARS,
    DOS_DOT,
    DOS_QM,
    DOS_STAR,
    MAX_COMPONENT_UNITS,
    WILDCARD_CHARS,
    ParsedPath,
    _utf16_units,
    _windows_name_ok,
    has_wildcards,
    parse_smb_path,
    upcase,
    wildcard_match,
)
from smbnd.wire.fscc import (
    FILE_ATTRIBUTE_ARCHIVE,
    FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_NORMAL,
    FILE_ATTRIBUTE_SPARSE_FILE,
    FILE_ATTRIBUTE_SYSTEM,
    FILE_ATTRIBUTE_TEMPORARY,
)


# ---------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------
@dataclass
class FileInfo:
    creation_time: int
    last_access_time: int
    last_write_time: int
    change_time: int
    allocation_size: int
    end_of_file: int
    attributes: int
    file_id: int
    nlink: int
    is_directory: bool
    name: str
    ea_size: int = 0
    short_name: str = ""    # 8.3 alias for directory listings (filled by the caller)


@dataclass
class Lookup:
    status: int
    host_path: str | None = None
    exists: bool = False
    is_directory: bool = False
    name: str = ""          # final component (on-disk case when it exists)
    smb_path: str = ""      # share-relative, backslash separated, on-disk case
    trailing_sep: bool = False
    stream: str = ""
    stream_name: str = ""   # named data stream of the object (vfs_streams), "" for none


_RACY_NS = 100_000_000  # directory mtimes this recent are not trusted for negative lookups
_DIR_CACHE_MAX = 1024


@dataclass
class _DirIndex:
    key: tuple[int, int, int]
    stable: bool
    index: dict[str, str]


class ShareFS(NamespaceOps):
    """One share root on the host file system."""

    def __init__(self, root: str, *, case_sensitive: bool = False, read_only: bool = False):
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise VfsError(st.STATUS_BAD_NETWORK_NAME, f"share root {root!r} is not a directory")
        self.case_sensitive = case_sensitive
        self.read_only = read_only
        self.volume_serial = zlib.crc32(os.fsencode(self.root)) & 0xFFFFFFFF
        self._lock = threading.Lock()
        self._dircache: dict[str, _DirIndex] = {}
        self._mem: dict[tuple[int, int], _Record] = {}
        self._xattr_ok = True
        self.streams = StreamStore(self)   # named data streams (sidecar files)
        self.meta = EaSdStore(self)        # EAs and security descriptors (xattrs)

    map_oserror = staticmethod(map_oserror)

    # ------------------------------------------------------------------ paths
    def _inside(self, real: str) -> bool:
        r = self.root
        return real == r or real.startswith(r if r.endswith(os.sep) else r + os.sep)

    def to_smb_path(self, host_path: str) -> str:
        """Host path under the root -> share-relative backslash path ("" = root)."""
        rel = os.path.relpath(host_path, self.root)
        return "" if rel == "." else rel.replace(os.sep, "\\")

    def invalidate(self, dir_host_path: str) -> None:
        """Forget cached case-folding data for one directory."""
        with self._lock:
            self._dircache.pop(dir_host_path, None)

    def _dir_index(self, d: str, force: bool = False) -> _DirIndex:
        dst = os.stat(d)
        key = (dst.st_ino, dst.st_mtime_ns, dst.st_ctime_ns)
        with self._lock:
            ent = self._dircache.get(d)
        if ent is not None and not force and ent.key == key:
            return ent
        now = time.time_ns()
        with os.scandir(d) as it:
            names = sorted(e.name for e in it)
        index: dict[str, str] = {}
        for n in names:
            index.setdefault(upcase(n), n)
        stable = max(dst.st_mtime_ns, dst.st_ctime_ns) < now - _RACY_NS
        ent = _DirIndex(key, stable, index)
        with self._lock:
            self._dircache.pop(d, None)
            if len(self._dircache) >= _DIR_CACHE_MAX:
                self._dircache.pop(next(iter(self._dircache)))
            self._dircache[d] = ent
        return ent

    def _child(self, d: str, comp: str) -> str | None:
        """On-disk name of ``comp`` in directory ``d`` or None (exact first, then upcase)."""
        try:
            os.lstat(os.path.join(d, comp))
            return comp
        except FileNotFoundError:
            pass
        if self.case_sensitive:
            return None
        key = upcase(comp)
        ent = self._dir_index(d)
        hit = ent.index.get(key)
        if hit is None and maybe_short(comp):   # an 8.3 alias (smbnd.vfs_short)
            hit = next((n for n in ent.index.values() if short_name(n) == key), None)
        if hit is None and ent.stable:
            return None
        if hit is not None and os.path.lexists(os.path.join(d, hit)):
            return hit
        ent = self._dir_index(d, force=True)  # stale or racy entry: rescan once
        hit = ent.index.get(key)
        return hit if hit is not None and os.path.lexists(os.path.join(d, hit)) else None

    def lookup(self, smb_path: str, *, for_create: bool = False,
               allow_leading_sep: bool = False) -> Lookup:
        status, parsed = parse_smb_path(smb_path, allow_leading_sep=allow_leading_sep)
        if parsed is None:
            return Lookup(status)
        try:
            return self._walk(parsed, for_create)
        except (UnicodeError, ValueError):
            return Lookup(st.STATUS_OBJECT_NAME_INVALID)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return Lookup(st.STATUS_OBJECT_PATH_NOT_FOUND)
            return Lookup(map_oserror(e))

    def _walk(self, p: ParsedPath, for_create: bool) -> Lookup:
        cur = self.root
        shown: list[str] = []
        comps = p.components
        if not comps:
            return Lookup(st.STATUS_SUCCESS, cur, True, True, "", "", p.trailing_sep, p.stream,
                          p.stream_name)
        last = len(comps) - 1
        for i, comp in enumerate(comps):
            actual = self._child(cur, comp)
            if actual is None:
                if i != last:
                    return Lookup(st.STATUS_OBJECT_PATH_NOT_FOUND)
                if not for_create:
                    return Lookup(st.STATUS_OBJECT_NAME_NOT_FOUND)
                shown.append(comp)
                return Lookup(st.STATUS_SUCCESS, os.path.join(cur, comp), False, False, comp,
                              "\\".join(shown), p.trailing_sep, p.stream, p.stream_name)
            path = os.path.join(cur, actual)
            lst = os.lstat(path)
            if S.S_ISLNK(lst.st_mode):
                real = os.path.realpath(path)
                if not self._inside(real):
                    return Lookup(st.STATUS_ACCESS_DENIED)
                try:
                    lst = os.stat(real)
                except OSError:  # dangling or looping link
                    if i != last:
                        return Lookup(st.STATUS_OBJECT_PATH_NOT_FOUND)
                    return Lookup(st.STATUS_ACCESS_DENIED if for_create
                                  else st.STATUS_OBJECT_NAME_NOT_FOUND)
                path = real
            shown.append(actual)
            is_dir = S.S_ISDIR(lst.st_mode)
            if i != last:
                if not is_dir:
                    return Lookup(st.STATUS_OBJECT_PATH_NOT_FOUND)
                cur = path
                continue
            if p.trailing_sep and not is_dir:
                return Lookup(st.STATUS_OBJECT_NAME_INVALID)
            return Lookup(st.STATUS_SUCCESS, path, True, is_dir, actual, "\\".join(shown),
                          p.trailing_sep, p.stream, p.stream_name)
        raise AssertionError("unreachable")

    def resolve(self, smb_path: str, *, for_create: bool,
                allow_leading_sep: bool = False) -> tuple[int, str | None]:
        """(NTSTATUS, absolute host path). See module docstring for the rules."""
        r = self.lookup(smb_path, for_create=for_create, allow_leading_sep=allow_leading_sep)
        return r.status, r.host_path

    # --------------------------------------------------------------- metadata
    def _get_record(self, path: str, sres: os.stat_result) -> _Record | None:
        rec = self._mem.get((sres.st_dev, sres.st_ino))
        if rec is not None or not self._xattr_ok:
            return rec
        try:
            return _Record.unpack(os.getxattr(path, XATTR_NAME))
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                self._xattr_ok = False
            return None

    def _put_record(self, path: str, sres: os.stat_result, rec: _Record) -> None:
        key = (sres.st_dev, sres.st_ino)
        if self._xattr_ok:
            try:
                os.setxattr(path, XATTR_NAME, rec.pack())
                self._mem.pop(key, None)
                return
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                    self._xattr_ok = False
                elif e.errno not in (errno.EPERM, errno.EACCES, errno.EROFS, errno.ENOSPC,
                                     errno.E2BIG):
                    raise
        self._mem[key] = rec  # fall back to process memory

    def _creation_ft(self, path: str, sres: os.stat_result, rec: _Record | None) -> int:
        if rec is not None and rec.flags & _F_CREATE:
            return rec.creation
        b = _birth_ns(path)
        if b is None:
            b = min(sres.st_mtime_ns, sres.st_ctime_ns)  # Samba's fallback without btime
        return unix_to_filetime(b)

    def _info(self, path: str, sres: os.stat_result, name: str) -> FileInfo:
        rec = self._get_record(path, sres)
        is_dir = S.S_ISDIR(sres.st_mode)
        change = unix_to_filetime(sres.st_ctime_ns)
        if (rec is not None and rec.flags & _F_CHANGE
                and (rec.ref_mtime, rec.ref_size) == (sres.st_mtime_ns, sres.st_size)):
            change = rec.change
        if is_dir:
            attrs = FILE_ATTRIBUTE_DIRECTORY
            if rec is not None and rec.flags & _F_ATTRS:
                attrs |= rec.attrs & PERSIST_MASK & ~FILE_ATTRIBUTE_TEMPORARY
            eof = alloc = 0
        else:
            if rec is not None and rec.flags & _F_ATTRS:
                attrs = rec.attrs & PERSIST_MASK or FILE_ATTRIBUTE_NORMAL
            else:
                attrs = FILE_ATTRIBUTE_ARCHIVE
            if rec is not None and rec.flags & _F_SPARSE:
                attrs = (attrs & ~FILE_ATTRIBUTE_NORMAL) | FILE_ATTRIBUTE_SPARSE_FILE
            eof = sres.st_size
            alloc = sres.st_blocks * 512
            if alloc > (eof + 4095) & ~4095:   # preallocated, or an ext4 xattr block counted in st_blocks
                alloc = data_allocation(path, alloc)
            alloc = max(alloc, (eof + 4095) & ~4095)
        return FileInfo(
            creation_time=self._creation_ft(path, sres, rec),
            last_access_time=unix_to_filetime(sres.st_atime_ns),
            last_write_time=unix_to_filetime(sres.st_mtime_ns),
            change_time=change,
            allocation_size=alloc,
            end_of_file=eof,
            attributes=attrs,
            file_id=sres.st_ino,
            nlink=sres.st_nlink,
            is_directory=is_dir,
            name=name,
            ea_size=self.meta.ea_size(path) if self._xattr_ok else 0,
        )

    def stat(self, host_path: str, name_hint: str | None = None) -> FileInfo:
        """FileInfo for a resolved host path; raises VfsError."""
        try:
            sres = os.stat(host_path)
            name = name_hint if name_hint is not None else (
                "" if host_path == self.root else os.path.basename(host_path))
            return self._info(host_path, sres, name)
        except OSError as e:
            raise VfsError(map_oserror(e), str(e)) from None
        except (UnicodeError, ValueError) as e:
            raise VfsError(st.STATUS_OBJECT_NAME_INVALID, str(e)) from None

    def listdir(self, host_path: str) -> list[FileInfo]:
        """"." and ".." first (".." of the share root is the root itself), then the
        entries sorted by (upcase(name), name). Entries whose names a Windows
        client could not use, and symlinks that dangle or leave the share, are
        omitted. Raises VfsError (a non-directory -> STATUS_NOT_A_DIRECTORY)."""
        try:
            dot = self._info(host_path, os.stat(host_path), ".")
            if not dot.is_directory:
                raise VfsError(st.STATUS_NOT_A_DIRECTORY)
            parent = host_path if host_path == self.root else os.path.dirname(host_path)
            dotdot = self._info(parent, os.stat(parent), "..")
            with os.scandir(host_path) as it:
                ents = list(it)
        except OSError as e:
            raise VfsError(map_oserror(e), str(e)) from None
        out: list[FileInfo] = []
        for e in ents:
            if not _windows_name_ok(e.name):
                continue
            p = e.path
            try:
                sres = e.stat(follow_symlinks=False)
                if S.S_ISLNK(sres.st_mode):
                    real = os.path.realpath(p)
                    if not self._inside(real):
                        continue
                    sres = os.stat(real)
                    p = real
                out.append(self._info(p, sres, e.name))
            except OSError:
                continue  # vanished or dangling
        out.sort(key=lambda i: (upcase(i.name), i.name))
        return [dot, dotdot] + out

    def set_times(self, host_path: str, *, creation_time: int | None = None,
                  last_access_time: int | None = None, last_write_time: int | None = None,
                  change_time: int | None = None) -> int:
        """Set FILETIMEs; None/0/-1/-2 leave a time unchanged (handle-level -1/-2
        semantics are the caller's). Creation and change times live in the
        metadata record; change time holds until the file's mtime/size change."""
        if self.read_only:
            return st.STATUS_ACCESS_DENIED

        def want(v: int | None) -> bool:
            return v is not None and v > 0

        try:
            sres = os.stat(host_path)
            if want(last_access_time) or want(last_write_time):
                a = filetime_to_unix_ns(last_access_time) if want(last_access_time) else sres.st_atime_ns
                m = filetime_to_unix_ns(last_write_time) if want(last_write_time) else sres.st_mtime_ns
                if not (-(1 << 63) <= a < 1 << 63 and -(1 << 63) <= m < 1 << 63):
                    return st.STATUS_INVALID_PARAMETER  # beyond year 2262: not representable
                os.utime(host_path, ns=(a, m))
                sres = os.stat(host_path)
            if want(creation_time) or want(change_time):
                rec = self._get_record(host_path, sres) or _Record()
                self._pin_creation(host_path, sres, rec)
                if want(creation_time):
                    rec.creation = creation_time
                if want(change_time):
                    rec.flags |= _F_CHANGE
                    rec.change, rec.ref_mtime, rec.ref_size = change_time, sres.st_mtime_ns, sres.st_size
                self._put_record(host_path, sres, rec)
        except OSError as e:
            return map_oserror(e)
        except (OverflowError, ValueError):
            return st.STATUS_INVALID_PARAMETER
        return st.STATUS_SUCCESS

    def _pin_creation(self, path: str, sres: os.stat_result, rec: _Record) -> None:
        if not rec.flags & _F_CREATE:
            rec.creation = self._creation_ft(path, sres, None)
            rec.flags |= _F_CREATE

    def set_attributes(self, host_path: str, attributes: int) -> int:
        """FileBasicInformation.FileAttributes (MS-FSA 2.1.5.15.2): 0 = no change;
        DIRECTORY on a file or TEMPORARY on a directory -> INVALID_PARAMETER;
        NORMAL alone clears everything (reported back as NORMAL)."""
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        if attributes == 0:
            return st.STATUS_SUCCESS
        try:
            sres = os.stat(host_path)
            is_dir = S.S_ISDIR(sres.st_mode)
            if attributes & FILE_ATTRIBUTE_DIRECTORY and not is_dir:
                return st.STATUS_INVALID_PARAMETER
            if attributes & FILE_ATTRIBUTE_TEMPORARY and is_dir:
                return st.STATUS_INVALID_PARAMETER
            rec = self._get_record(host_path, sres) or _Record()
            self._pin_creation(host_path, sres, rec)
            mask = PERSIST_MASK
            if os.path.realpath(host_path) == self.root:  # MS-FSA 2.1.5.15.2: root keeps H/S
                mask &= ~(FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM)
            old = rec.attrs if rec.flags & _F_ATTRS else 0
            rec.flags |= _F_ATTRS
            rec.attrs = (old & ~mask) | (attributes & mask)
            self._put_record(host_path, sres, rec)
        except OSError as e:
            return map_oserror(e)
        return st.STATUS_SUCCESS

    def set_sparse(self, host_path: str, sparse: bool) -> int:
        """FSCTL_SET_SPARSE (MS-FSA 2.1.5.10.30): the FILE_ATTRIBUTE_SPARSE_FILE state,
        kept in the metadata record (host files are sparse-capable anyway)."""
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        try:
            sres = os.stat(host_path)
            if S.S_ISDIR(sres.st_mode):
                return st.STATUS_INVALID_PARAMETER
            rec = self._get_record(host_path, sres) or _Record()
            if bool(rec.flags & _F_SPARSE) == sparse:
                return st.STATUS_SUCCESS
            self._pin_creation(host_path, sres, rec)
            rec.flags = rec.flags | _F_SPARSE if sparse else rec.flags & ~_F_SPARSE
            self._put_record(host_path, sres, rec)
        except OSError as e:
            return map_oserror(e)
        return st.STATUS_SUCCESS

    def init_metadata(self, host_path: str, attributes: int = 0) -> int:
        """Call right after creating a file/directory: pins the creation time and
        stores the initial DOS attributes (files always get ARCHIVE, MS-FSA 2.1.5.1.2.1)."""
        if self.read_only:
            return st.STATUS_ACCESS_DENIED
        try:
            sres = os.stat(host_path)
            rec = _Record()
            self._pin_creation(host_path, sres, rec)
            a = attributes & PERSIST_MASK
            if S.S_ISDIR(sres.st_mode):
                a &= ~FILE_ATTRIBUTE_TEMPORARY
            else:
                a |= FILE_ATTRIBUTE_ARCHIVE
            rec.flags |= _F_ATTRS
            rec.attrs = a
            self._put_record(host_path, sres, rec)
        except OSError as e:
            return map_oserror(e)
        return st.STATUS_SUCCESS

    def statvfs(self) -> tuple[int, int, int, int]:
        """(total_units, caller_free_units, sectors_per_unit, bytes_per_sector)."""
        t, free, _actual, spu, bps = self.statvfs_full()
        return t, free, spu, bps

    def statvfs_full(self) -> tuple[int, int, int, int, int]:
        """(total, caller_available, actual_available, sectors_per_unit, bytes_per_sector)."""
        try:
            v = os.statvfs(self.root)
        except OSError as e:
            raise VfsError(map_oserror(e), str(e)) from None
        bps = 512
        unit = v.f_frsize or v.f_bsize or 4096
        spu = max(1, unit // bps)
        scale = (spu * bps) / unit if unit else 1
        return (int(v.f_blocks / scale), int(v.f_bavail / scale), int(v.f_bfree / scale), spu, bps)
