"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19, MS-FSA 2.1.5.10): watches on directory opens, fed by the
server's own namespace changes."""
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

ACTION_ADDED, ACTION_REMOVED, ACTION_MODIFIED, ACTION_RENAMED_OLD, ACTION_RENAMED_NEW = 1, 2, 3, 4, 5
MAX_BUFFERED = 1000


def _filter_for(kind: str, is_dir: bool) -> int:
    name_bit = FILE_NOTIFY_CHANGE_DIR_NAME if is_dir else FILE_NOTIFY_CHANGE_FILE_NAME
    if kind in ("added", "removed", "renamed"):
        return name_bit
    if kind == "attributes":
        return FILE_NOTIFY_CHANGE_ATTRIBUTES
    if kind == "security":
        return FILE_NOTIFY_CHANGE_SECURITY
    return FILE_NOTIFY_CHANGE_LAST_WRITE | FILE_NOTIFY_CHANGE_SIZE


def encode_entries(entries: list[tuple[int, str]]) -> bytes:
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
    __slots__ = ("open", "filter", "recursive", "pending", "buffered", "overflow")

    def __init__(self, o, filt: int, recursive: bool):
        self.open = o
        self.filter = filt
        self.recursive = recursive
        self.pending: list = []         # (AsyncOp, output_length)
        self.buffered: list[tuple[int, str]] = []
        self.overflow = False


class NotifyManager:
    def __init__(self, server):
        self.server = server
        self.watches: dict[int, Watch] = {}

    def report(self, host_path: str, kind: str, is_dir: bool, new_path: str | None = None) -> None:
        if not self.watches:
            return
        bit = _filter_for(kind, is_dir)
        for w in list(self.watches.values()):
            if not w.filter & bit:
                continue
            base = w.open.host_path.rstrip("/") + "/"
            items = []
            if kind == "renamed":
                for action, path in ((ACTION_RENAMED_OLD, host_path), (ACTION_RENAMED_NEW, new_path)):
                    rel = self._rel(base, path, w.recursive)
                    if rel is not None:
                        items.append((action, rel))
                if len(items) == 1:  # moved in or out of the watched directory
                    items = [(ACTION_REMOVED if items[0][0] == ACTION_RENAMED_OLD else ACTION_ADDED, items[0][1])]
            else:
                rel = self._rel(base, host_path, w.recursive)
                if rel is not None:
                    action = {"added": ACTION_ADDED, "removed": ACTION_REMOVED}.get(kind, ACTION_MODIFIED)
                    items.append((action, rel))
            if items:
                self._deliver(w, items)

    @staticmethod
    def _rel(base: str, path: str | None, recursive: bool) -> str | None:
        if not path or not path.startswith(base):
            return None
        rel = path[len(base):]
        if not rel or (not recursive and "/" in rel):
            return None
        return rel.replace("/", "\\")

    def _deliver(self, w: Watch, items) -> None:
        w.buffered.extend(items)
        if len(w.buffered) > MAX_BUFFERED:
            w.overflow = True
            w.buffered.clear()
        self._flush(w)

    def _flush(self, w: Watch) -> None:
        while w.pending and (w.buffered or w.overflow):
            op, outlen = w.pending.pop(0)
            if w.overflow:
                w.overflow = False
                op.complete(st.STATUS_NOTIFY_ENUM_DIR, [q.pack_output_buffer(b"")])
                continue
            data = encode_entries(w.buffered)
            w.buffered.clear()
            if len(data) > outlen:
                op.complete(st.STATUS_NOTIFY_ENUM_DIR, [q.pack_output_buffer(b"")])
            else:
                op.complete(st.STATUS_SUCCESS, [q.pack_output_buffer(data)])

    def on_close(self, o) -> None:
        w = self.watches.pop(o.volatile_id, None)
        if w is None:
            return
        for op, _ in w.pending:
            op.complete(st.STATUS_NOTIFY_CLEANUP, [q.pack_output_buffer(b"")])
        w.pending.clear()


def change_notify(req) -> Reply:
    flags, outlen, fid, filt = q.parse_change_notify(req.msg)
    o = req.open(fid)
    if not o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if outlen > req.server.config.max_transact_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    mgr = req.server.notify
    w = mgr.watches.get(o.volatile_id)
    if w is None:
        w = mgr.watches[o.volatile_id] = Watch(o, filt, bool(flags & q.WATCH_TREE))
    else:
        w.filter, w.recursive = filt, bool(flags & q.WATCH_TREE)
    if w.overflow or w.buffered:
        op_status, data = (st.STATUS_NOTIFY_ENUM_DIR, b"") if w.overflow else (st.STATUS_SUCCESS,
                                                                                 encode_entries(w.buffered))
        w.overflow = False
        w.buffered.clear()
        if len(data) > outlen:
            return Reply(q.pack_output_buffer(b""), st.STATUS_NOTIFY_ENUM_DIR)
        return Reply(q.pack_output_buffer(data), op_status)

    def _cancel(op):
        w.pending[:] = [(p, n) for (p, n) in w.pending if p is not op]

    op = req.go_async(_cancel)
    w.pending.append((op, outlen))
    reply = Reply(status=st.STATUS_PENDING)
    reply.pending = op
    return reply
