"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19, MS-FSA 2.1.5.10 / 2.1.4.1): watches on directory opens, fed by
the server's own namespace changes through `NotifyManager.report`.

Model (MS-FSA 2.1.1.8 ChangeNotifyEntry): the first CHANGE_NOTIFY on a directory open creates a
watch whose CompletionFilter, WatchTree and buffer size (that request's OutputBufferLength) stay
fixed until the open is closed, as Windows does (smbtorture smb2.notify.mask-change / valid-req).
Events that arrive while no request is pending are kept (NotifyEventList) for the next request;
more than fit the watch's buffer make the next request fail with STATUS_NOTIFY_ENUM_DIR.

Name events (added / removed / renamed) are reported at once. Changes made through a handle
(data, size, attributes, times, security, a file's rename) are collected per file and reported as
one FILE_ACTION_MODIFIED when a handle of that file is closed, the way NTFS reports them at
cleanup: a create + write + set-info sequence shows up as ADDED then a single MODIFIED.
"""
from __future__ import annotations

import os
import struct

from . import status as st
from .connection import Reply
from .errors import SmbError
from .wire import query as q

FILE_NOTIFY_CHANGE_FILE_NAME = 0x001
FILE_NOTIFY_CHANGE_DIR_NAME = 0x002
FILE_NOTIFY_CHANGE_ATTRIBUTES = 0x004
FILE_NOTIFY_CHANGE_SIZE = 0x008
FILE_NOTIFY_CHANGE_LAST_WRITE = 0x010
FILE_NOTIFY_CHANGE_LAST_ACCESS = 0x020
FILE_NOTIFY_CHANGE_CREATION = 0x040
FILE_NOTIFY_CHANGE_EA = 0x080
FILE_NOTIFY_CHANGE_SECURITY = 0x100

# MS-FSCC 2.7.1 FILE_NOTIFY_INFORMATION.Action
ACTION_ADDED, ACTION_REMOVED, ACTION_MODIFIED, ACTION_RENAMED_OLD, ACTION_RENAMED_NEW = 1, 2, 3, 4, 5
MAX_EVENTS = 10000               # hard cap of a watch's NotifyEventList, whatever its buffer size
FILE_LIST_DIRECTORY = 0x1        # MS-SMB2 2.2.13.1.2

# kinds of NotifyManager.report for changes of an object's content or metadata
MODIFY_KINDS = {
    "modified": FILE_NOTIFY_CHANGE_LAST_WRITE | FILE_NOTIFY_CHANGE_SIZE,   # data written / truncated
    "size": FILE_NOTIFY_CHANGE_SIZE | FILE_NOTIFY_CHANGE_ATTRIBUTES,
    "attributes": FILE_NOTIFY_CHANGE_ATTRIBUTES,
    "security": FILE_NOTIFY_CHANGE_SECURITY,
    "ea": FILE_NOTIFY_CHANGE_EA,
}
_TIME_UNCHANGED = (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE, -1, -2)   # MS-FSCC 2.4.7


def basic_info_filter(info) -> int:
    """Which change a FileBasicInformation set makes (MS-FSA 2.1.5.14.2): only the fields it sets."""
    bits = 0
    if getattr(info, "file_attributes", 0):
        bits |= FILE_NOTIFY_CHANGE_ATTRIBUTES
    for field, bit in (("creation_time", FILE_NOTIFY_CHANGE_CREATION),
                       ("last_access_time", FILE_NOTIFY_CHANGE_LAST_ACCESS),
                       ("last_write_time", FILE_NOTIFY_CHANGE_LAST_WRITE)):
        if getattr(info, field, 0) not in _TIME_UNCHANGED:
            bits |= bit
    return bits


def _entry_size(name: str) -> int:
    n = 12 + 2 * len(name)
    return n + (-n % 4)


def encode_entries(entries: list[tuple[int, str]]) -> bytes:
    """MS-FSCC 2.7.1: FILE_NOTIFY_INFORMATION records, each 4-byte aligned, chained by NextEntryOffset."""
    out = bytearray()
    last = 0
    for action, name in entries:
        nb = name.encode("utf-16-le")
        start = len(out)
        out += struct.pack("<III", 0, action, len(nb)) + nb
        out += b"\0" * ((4 - len(out) % 4) % 4)
        if start:
            struct.pack_into("<I", out, last, start - last)
        last = start
    return bytes(out)


class Watch:
    """MS-FSA 2.1.1.8 ChangeNotifyEntry of one directory open."""
    __slots__ = ("open", "filter", "recursive", "max_size", "pending", "events", "size", "overflow")

    def __init__(self, o, filt: int, recursive: bool, max_size: int):
        self.open = o
        self.filter = filt
        self.recursive = recursive
        self.max_size = max_size
        self.pending: list = []                  # (AsyncOp, OutputBufferLength), oldest first
        self.events: list[tuple[int, str]] = []  # NotifyEventList
        self.size = 0                            # encoded size of `events`
        self.overflow = False

    def add(self, action: int, name: str) -> None:
        if self.overflow:
            return
        self.size += _entry_size(name)
        self.events.append((action, name))
        if self.size > self.max_size or len(self.events) > MAX_EVENTS:
            self.overflow = True          # the buffer overflowed: the next answer is NOTIFY_ENUM_DIR
            self.events.clear()
            self.size = 0

    def take(self, outlen: int) -> tuple[int, bytes]:
        """The answer to a request now: (status, FILE_NOTIFY_INFORMATION bytes); clears the list."""
        overflow, events = self.overflow, self.events
        self.overflow, self.events, self.size = False, [], 0
        if overflow:
            return st.STATUS_NOTIFY_ENUM_DIR, b""
        data = encode_entries(events)
        if len(data) > min(outlen, self.max_size):   # MS-SMB2 3.3.5.19: does not fit
            return st.STATUS_NOTIFY_ENUM_DIR, b""
        return st.STATUS_SUCCESS, data


class NotifyManager:
    def __init__(self, server):
        self.server = server
        self.watches: dict[int, Watch] = {}        # Open.volatile_id -> Watch
        self._modified: dict[str, int] = {}        # host path -> change bits not yet reported

    # ---- events
    def report(self, host_path: str, kind, is_dir: bool, new_path: str | None = None, info=None) -> None:
        """A change of the object at host_path. kind: "added", "removed", "renamed" (to new_path),
        "delete_pending", a MODIFY_KINDS name, "basic" (a FileBasicInformation `info`) or a
        FILE_NOTIFY_CHANGE_* mask of a modification."""
        if kind == "delete_pending":
            self._delete_pending(host_path)
            return
        if kind in ("added", "removed"):
            self._modified.pop(host_path, None)
            if self.watches:
                name_bit = FILE_NOTIFY_CHANGE_DIR_NAME if is_dir else FILE_NOTIFY_CHANGE_FILE_NAME
                self._emit(host_path, ACTION_ADDED if kind == "added" else ACTION_REMOVED, name_bit)
            return
        if kind == "renamed":
            self._renamed(host_path, new_path, is_dir)
            return
        if not self.watches:
            return
        bits = basic_info_filter(info) if kind == "basic" else \
            (kind if isinstance(kind, int) else MODIFY_KINDS.get(kind, FILE_NOTIFY_CHANGE_LAST_WRITE))
        if bits:
            self._modified[host_path] = self._modified.get(host_path, 0) | bits

    def _renamed(self, src: str, dst: str, is_dir: bool) -> None:
        """MS-FSA 2.1.5.14.11: within one directory RENAMED_OLD_NAME / RENAMED_NEW_NAME, across
        directories REMOVED / ADDED (MS-FSCC 2.7.1); a renamed file is also modified (its attributes
        and change time), reported when a handle of it is closed (smb2.notify.mask-change, rec)."""
        pending = self._modified.pop(src, 0)
        if is_dir:
            prefix = src.rstrip("/") + "/"      # changes under a renamed directory move along
            for p in [p for p in self._modified if p.startswith(prefix)]:
                self._modified[dst.rstrip("/") + "/" + p[len(prefix):]] = self._modified.pop(p)
        if self.watches:
            name_bit = FILE_NOTIFY_CHANGE_DIR_NAME if is_dir else FILE_NOTIFY_CHANGE_FILE_NAME
            same_dir = os.path.dirname(src.rstrip("/")) == os.path.dirname(dst.rstrip("/"))
            self._emit(src, ACTION_RENAMED_OLD if same_dir else ACTION_REMOVED, name_bit)
            self._emit(dst, ACTION_RENAMED_NEW if same_dir else ACTION_ADDED, name_bit)
            if not is_dir:
                pending |= FILE_NOTIFY_CHANGE_ATTRIBUTES | FILE_NOTIFY_CHANGE_CREATION
        if pending:
            self._modified[dst] = pending

    def _emit(self, host_path: str, action: int, bits: int) -> None:
        """MS-FSA 2.1.4.1: every watch on the object's parent directory (or an ancestor, with
        WatchTree) whose CompletionFilter shares a bit with the change gets the event."""
        for w in list(self.watches.values()):
            if not w.filter & bits:
                continue
            rel = self._rel(w.open.host_path.rstrip("/") + "/", host_path, w.recursive)
            if rel is not None:
                w.add(action, rel)
                self._flush(w)

    @staticmethod
    def _rel(base: str, path: str | None, recursive: bool) -> str | None:
        if not path or not path.startswith(base):
            return None
        rel = path[len(base):].rstrip("/")
        if not rel or (not recursive and "/" in rel):
            return None
        return rel.replace("/", "\\")

    def _flush(self, w: Watch) -> None:
        while w.pending and (w.events or w.overflow):
            op, outlen = w.pending.pop(0)
            status, data = w.take(outlen)
            op.complete(status, [q.pack_output_buffer(data)])

    def _delete_pending(self, host_path: str) -> None:
        """Delete-on-close set on a watched directory: its waiting requests complete with
        STATUS_DELETE_PENDING (as Windows and Samba do; smb2.notify.rmdir1-4)."""
        path = host_path.rstrip("/")
        for w in list(self.watches.values()):
            if w.open.host_path.rstrip("/") == path and w.pending:
                pending, w.pending = w.pending, []
                for op, _ in pending:
                    op.complete(st.STATUS_DELETE_PENDING, [q.pack_output_buffer(b"")])

    # ---- open teardown
    def on_close(self, o) -> None:
        """A handle closes: report what was changed through the file's handles (NTFS reports these
        at cleanup), and end the handle's own watch: its waiting requests complete with
        STATUS_NOTIFY_CLEANUP (MS-SMB2 3.3.4.? / MS-FSA 2.1.5.4)."""
        bits = self._modified.pop(o.host_path, 0)
        if bits and not o.delete_on_close and self.watches:
            self._emit(o.host_path, ACTION_MODIFIED, bits)
        w = self.watches.pop(o.volatile_id, None)
        if w is None:
            return
        pending, w.pending = w.pending, []
        for op, _ in pending:
            op.complete(st.STATUS_NOTIFY_CLEANUP, [q.pack_output_buffer(b"")])


def change_notify(req) -> Reply:
    """MS-SMB2 3.3.5.19."""
    flags, outlen, fid, filt = q.parse_change_notify(req.msg)
    o = req.open(fid)
    if not o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if outlen > req.server.config.max_transact_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & FILE_LIST_DIRECTORY:
        raise SmbError(st.STATUS_ACCESS_DENIED)     # MS-FSA 2.1.5.10 (Samba: change_notify_create)
    mgr = req.server.notify
    w = mgr.watches.get(o.volatile_id)
    if w is None:
        w = mgr.watches[o.volatile_id] = Watch(o, filt, bool(flags & q.WATCH_TREE), outlen)
    if w.events or w.overflow:
        status, data = w.take(outlen)
        return Reply(q.pack_output_buffer(data), status)

    def _cancel(op):
        w.pending[:] = [(p, n) for (p, n) in w.pending if p is not op]

    op = req.go_async(_cancel)
    w.pending.append((op, outlen))
    reply = Reply(status=st.STATUS_PENDING)
    reply.pending = op
    return reply
