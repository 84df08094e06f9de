"""Named data streams (MS-FSA 2.1.1.3 Stream; ``file:name:$DATA``) kept as sidecar files.

Layout (like Samba's streams_depot)::

    <share root>/.smbnd:streams/<id>/<h>        stream data (a plain file: READ/WRITE/locks use its fd)
    <share root>/.smbnd:streams/<id>/<h>.name   the stream name as created (UTF-8)

* ``<id>`` names the base file or directory: 32 hex digits kept in the
  ``user.smbnd.streamid`` xattr of the base object, so streams follow renames
  and hard links of the file (they belong to the inode). Without user xattrs
  the id is derived from (st_dev, st_ino).
* ``<h>`` is a hash of the upper-cased stream name: stream names are
  case-insensitive (MS-FSA 2.1.1.3) and may be longer than a host file name.
* The store directory's name contains ``:``, which no SMB path component can
  contain (it starts a stream), so it can be neither listed (``listdir``
  drops names a Windows client cannot use) nor opened over SMB.
* The base object's deletion removes its streams (``remove_all``); overwrite
  and supersede of the unnamed stream remove them too (as Samba does).
* Not done yet: renaming a stream (SET_INFO answers STATUS_NOT_SUPPORTED), and
  deferring a file's deletion until its open stream handles close (the stream
  data stays readable through those handles, but the names go at once).
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil

from smbnd.vfs_path import upcase

STORE_NAME = ".smbnd:streams"
XATTR_STREAM_ID = "user.smbnd.streamid"
_ID_RE = re.compile(r"^(?:[0-9a-f]{32}|i[0-9a-f]+-[0-9a-f]+)$")
_NOSUP = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


def stream_key(name: str) -> str:
    """Host file name of a stream's data (case-insensitive name -> fixed-size hash)."""
    return hashlib.sha256(upcase(name).encode("utf-8", "surrogatepass")).hexdigest()[:40]


class StreamStore:
    def __init__(self, fs):
        self.fs = fs
        self.root = os.path.join(fs.root, STORE_NAME)

    # ------------------------------------------------------------- identity
    def _id(self, base: str, create: bool) -> str | None:
        fs = self.fs
        if fs._xattr_ok:
            try:
                v = os.getxattr(base, XATTR_STREAM_ID).decode("ascii", "replace")
                if _ID_RE.match(v):
                    return v
            except OSError as e:
                if e.errno in _NOSUP:
                    fs._xattr_ok = False
                elif not create:
                    return None
            if fs._xattr_ok:
                if not create:
                    return None
                new = secrets.token_hex(16)
                try:
                    os.setxattr(base, XATTR_STREAM_ID, new.encode("ascii"))
                    return new
                except OSError as e:
                    if e.errno not in _NOSUP:
                        raise
                    fs._xattr_ok = False
        sres = os.stat(base)
        sid = f"i{sres.st_dev:x}-{sres.st_ino:x}"
        if not create and not os.path.isdir(os.path.join(self.root, sid)):
            return None
        return sid

    def _dir(self, base: str, create: bool = False) -> str | None:
        sid = self._id(base, create)
        if sid is None:
            return None
        d = os.path.join(self.root, sid)
        if create:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            os.makedirs(d, mode=0o700, exist_ok=True)
        return d

    # ---------------------------------------------------------------- access
    def data_path(self, base: str, name: str, create: bool = False) -> str | None:
        """Host path of the stream's data file (it may not exist yet); None when the base
        object has no stream store and ``create`` is False. Raises OSError."""
        d = self._dir(base, create)
        return None if d is None else os.path.join(d, stream_key(name))

    def register(self, base: str, name: str) -> None:
        """Record the stream's display name; call right after creating its data file."""
        d = self._dir(base, True)
        with open(os.path.join(d, stream_key(name) + ".name"), "w", encoding="utf-8",
                  errors="surrogatepass") as f:
            f.write(name)

    def list(self, base: str) -> list[tuple[str, os.stat_result]]:
        """[(name as created, stat of the data)] sorted case-insensitively."""
        try:
            d = self._dir(base)
        except OSError:
            return []
        if d is None:
            return []
        out = []
        try:
            ents = os.listdir(d)
        except OSError:
            return []
        for e in ents:
            if not e.endswith(".name"):
                continue
            data = os.path.join(d, e[:-5])
            try:
                with open(os.path.join(d, e), encoding="utf-8", errors="surrogatepass") as f:
                    name = f.read()
                out.append((name, os.stat(data)))
            except OSError:
                continue
        out.sort(key=lambda x: upcase(x[0]))
        return out

    def has_streams(self, base: str) -> bool:
        return bool(self.list(base))

    def remove(self, base: str, name: str) -> None:
        """Delete one stream (data and name record); the store directory goes when empty."""
        d = self._dir(base)
        if d is None:
            return
        h = os.path.join(d, stream_key(name))
        for p in (h + ".name", h):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(d)
        except OSError:
            pass

    def remove_data_path(self, data_path: str) -> None:
        """Delete a stream given its data path (delete-on-close of a stream handle)."""
        for p in (data_path + ".name", data_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(os.path.dirname(data_path))
        except OSError:
            pass

    def remove_all(self, base: str) -> None:
        """Drop every named stream of ``base`` (its deletion, overwrite or supersede)."""
        try:
            d = self._dir(base)
        except OSError:
            return
        if d is not None and os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)

    def rename(self, base: str, old: str, new: str, replace: bool) -> bool:
        """Rename a stream within its file; False if ``new`` exists and not ``replace``."""
        d = self._dir(base, True)
        src, dst = os.path.join(d, stream_key(old)), os.path.join(d, stream_key(new))
        if src != dst and os.path.exists(dst) and not replace:
            return False
        os.replace(src, dst)
        try:
            os.unlink(src + ".name")
        except FileNotFoundError:
            pass
        self.register(base, new)
        return True

    def dir_of(self, base: str) -> str | None:
        """The store directory of ``base`` if it has one (before deleting ``base``)."""
        try:
            d = self._dir(base)
        except OSError:
            return None
        return d if d is not None and os.path.isdir(d) else None

    @staticmethod
    def drop_dir(d: str | None) -> None:
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)

    def display_name(self, base: str, name: str) -> str:
        """The stream's name as it was created (names match case-insensitively)."""
        try:
            d = self._dir(base)
            if d is not None:
                with open(os.path.join(d, stream_key(name) + ".name"), encoding="utf-8",
                          errors="surrogatepass") as f:
                    return f.read()
        except OSError:
            pass
        return name
