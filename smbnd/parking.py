"""Parked requests: a request that must wait for oplock/lease breaks (MS-SMB2 3.3.4.2 interim
STATUS_PENDING response; MS-FSA 2.1.4.12 NeedToWait) re-runs its whole handler each time the
caching state of the file it waits on changes, until the handler answers.
"""
from __future__ import annotations

import asyncio
import logging

from . import status as st
from .errors import SmbError
from .wire import messages as m
from .wire.header import CREATE
from .wire.messages import MessageError

log = logging.getLogger("smbnd.oplock")

STILL_WAITING = object()     # a re-run parked request returns this while it must keep waiting


def _loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def soon(fn, *args) -> None:
    """Run fn after the current request's responses are out (directly without an event loop)."""
    loop = _loop()
    if loop is None:
        fn(*args)
    else:
        loop.call_soon(fn, *args)


def later(delay: float, fn, *args):
    loop = _loop()
    return loop.call_later(delay, fn, *args) if loop is not None else None


def cancel(timer) -> None:
    if timer is not None:
        timer.cancel()


class _Parked:
    __slots__ = ("req", "op", "retry", "file_key", "timer", "expired", "orphan")

    def __init__(self, req, op, retry, file_key):
        self.req, self.op, self.retry, self.file_key = req, op, retry, file_key
        self.timer = None
        self.expired = False
        self.orphan = False     # its connection is gone: it runs on for the session, unanswered


class Parking:
    def __init__(self, server):
        self.server = server
        self._waiters: dict = {}         # file key -> [_Parked]
        self._parked: dict = {}          # Request -> _Parked

    def is_parked(self, req) -> bool:
        return req in self._parked

    def park(self, req, file_key, retry, max_wait: float):
        """Make `req` wait until the caching state of `file_key` changes, then run retry(req) again.
        Returns the interim Reply the first time, STILL_WAITING on a re-run, or None when the
        request can't wait (not the last of its compound, MS-SMB2 <159>, or waited max_wait):
        the caller then goes on without waiting."""
        from .connection import Reply
        p = self._parked.get(req)
        if p is None:
            if not req.is_last:
                return None
            op = req.go_async(self._cancel_parked)
            p = _Parked(req, op, retry, file_key)
            self._parked[req] = p
            p.timer = later(max_wait, self._parked_timeout, p)
            self._waiters.setdefault(file_key, []).append(p)
            reply = Reply(status=st.STATUS_PENDING)
            reply.pending = op
            return reply
        if p.expired:
            return None
        p.file_key = file_key
        self._waiters.setdefault(file_key, []).append(p)
        return STILL_WAITING

    def wake(self, file_key) -> None:
        for p in self._waiters.pop(file_key, ()):
            soon(self._rerun, p)

    def _cancel_parked(self, op) -> None:
        for req, p in list(self._parked.items()):
            if p.op is op:
                if op.done and _session_lives_on(req):
                    p.orphan = True     # its connection went away, not the request (_session_lives_on)
                    continue
                self._drop(p)

    def _drop(self, p: _Parked) -> None:
        self._parked.pop(p.req, None)
        cancel(p.timer)
        ws = self._waiters.get(p.file_key)
        if ws and p in ws:
            ws.remove(p)
            if not ws:
                del self._waiters[p.file_key]

    def _parked_timeout(self, p: _Parked) -> None:
        p.timer = None
        p.expired = True
        self._rerun(p)

    def _rerun(self, p: _Parked) -> None:
        if (p.op.done and not p.orphan) or self._parked.get(p.req) is not p:
            return
        ws = self._waiters.get(p.file_key)
        if ws and p in ws:
            ws.remove(p)
        req = p.req
        if req.conn.closed and not (p.orphan and _session_lives_on(req)):
            self._drop(p)
            return
        status, body = None, None
        if req.session is None or self.server.sessions.get(req.session.session_id) is not req.session:
            status = st.STATUS_USER_SESSION_DELETED
        elif req.tree is not None and req.session.trees.get(req.tree.tree_id) is not req.tree:
            status = st.STATUS_NETWORK_NAME_DELETED
        else:
            reply = _run(p.retry, req)
            if reply is STILL_WAITING:
                return
            status, body = reply.status, reply.body
        self._drop(p)
        p.op.complete(status, body if body is not None else [m.ERROR_BODY])


def _session_lives_on(req) -> bool:
    """A parked CREATE whose connection is gone while its session keeps other channels (MS-SMB2
    3.3.7.1: the session and its opens outlive one channel) goes on without anyone to answer: the
    open it makes belongs to the session, and the client's replay on another channel finds it by
    CreateGuid (3.3.5.9.10; as Windows, smbtorture smb2.replay.dhv2-pending2*-windows)."""
    sess = req.session
    if req.hdr.command != CREATE or sess is None:
        return False
    return any(c is not req.conn and not c.closed for c in sess.channels)


def _run(handler, req):
    """Run a handler again for a parked request, mapping errors as Connection._process_one does."""
    from .connection import Reply
    from .vfs import VfsError, map_oserror
    try:
        return handler(req)
    except SmbError as e:
        return Reply(m.pack_error(e.data), e.status)
    except MessageError:
        return Reply(status=st.STATUS_INVALID_PARAMETER)
    except VfsError as e:
        return Reply(status=e.status)
    except OSError as e:
        return Reply(status=map_oserror(e))
    except Exception:
        log.exception("re-running a parked request")
        return Reply(status=st.STATUS_INTERNAL_ERROR)
