"""LOCK (MS-SMB2 3.3.5.14): byte-range locks, fail-immediately and blocking (async) forms."""
from __future__ import annotations

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..wire import messages as m

LOCK_RESPONSE = b"\x04\x00\x00\x00"


def _validate(locks) -> bool:
    """3.3.5.14.1/2: unlock batches contain only unlocks; a lock batch of several elements must all
    be FAIL_IMMEDIATELY; each element has exactly one of SHARED/EXCLUSIVE/UNLOCK."""
    unlocking = bool(locks[0].flags & m.LOCKFLAG_UNLOCK)
    for i, lk in enumerate(locks):
        kind = lk.flags & (m.LOCKFLAG_SHARED_LOCK | m.LOCKFLAG_EXCLUSIVE_LOCK | m.LOCKFLAG_UNLOCK)
        if kind not in (m.LOCKFLAG_SHARED_LOCK, m.LOCKFLAG_EXCLUSIVE_LOCK, m.LOCKFLAG_UNLOCK):
            return False
        if lk.flags & ~(kind | m.LOCKFLAG_FAIL_IMMEDIATELY):
            return False
        if unlocking != bool(lk.flags & m.LOCKFLAG_UNLOCK):
            return False
        if unlocking and lk.flags & m.LOCKFLAG_FAIL_IMMEDIATELY:
            return False
        if lk.length and lk.offset + lk.length - 1 > 0xFFFFFFFFFFFFFFFF:
            return False
    return True


def lock(req) -> Reply:
    _seq, fid, locks = m.parse_lock(req.msg)
    o = req.open(fid)
    if o.is_pipe or o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not _validate(locks):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    server = req.server
    state = server.files.get(o.file_key)
    mgr = server.locks
    if locks[0].flags & m.LOCKFLAG_UNLOCK:
        for lk in locks:
            if not mgr.remove(state, o, lk.offset, lk.length):
                raise SmbError(st.STATUS_RANGE_NOT_LOCKED)
        mgr.retry_waiters(state)
        return Reply(LOCK_RESPONSE)
    granted = []
    for i, lk in enumerate(locks):
        excl = bool(lk.flags & m.LOCKFLAG_EXCLUSIVE_LOCK)
        if mgr.can_lock(state, o, lk.offset, lk.length, excl):
            mgr.add(state, o, lk.offset, lk.length, excl)
            granted.append(lk)
            continue
        if lk.flags & m.LOCKFLAG_FAIL_IMMEDIATELY or len(locks) > 1:
            for g in granted:   # all-or-nothing (3.3.5.14.2)
                mgr.remove(state, o, g.offset, g.length)
            raise SmbError(st.STATUS_LOCK_NOT_GRANTED)
        # a single blocking lock: wait asynchronously until it can be granted, or cancel
        def _cancel(op, state=state):
            state.lock_waiters[:] = [w for w in state.lock_waiters if w[0] is not op]

        op = req.go_async(_cancel)
        state.lock_waiters.append((op, o, lk.offset, lk.length, excl))
        reply = Reply(status=st.STATUS_PENDING)
        reply.pending = op
        return reply
    return Reply(LOCK_RESPONSE)


def retry_pending(server, state) -> None:
    """Grant waiting blocking locks that no longer conflict (in arrival order)."""
    for w in list(state.lock_waiters):
        op, o, off, length, excl = w
        if o.closed or op.done:
            state.lock_waiters.remove(w)
            if not op.done:
                op.complete(st.STATUS_RANGE_NOT_LOCKED, [m.ERROR_BODY])
            continue
        if server.locks.can_lock(state, o, off, length, excl):
            state.lock_waiters.remove(w)
            server.locks.add(state, o, off, length, excl)
            op.complete(st.STATUS_SUCCESS, [LOCK_RESPONSE])
