"""LOCK (MS-SMB2 3.3.5.14): byte-range locks, fail-immediately and blocking (async) forms."""
from __future__ import annotations

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..locks import LOCK_RESPONSE, STATUS_INVALID_LOCK_RANGE, LockWaiter, range_valid
from ..wire import messages as m

SHARED, EXCLUSIVE, UNLOCK, FAIL = (m.LOCKFLAG_SHARED_LOCK, m.LOCKFLAG_EXCLUSIVE_LOCK, m.LOCKFLAG_UNLOCK,
                                   m.LOCKFLAG_FAIL_IMMEDIATELY)
LOCK_FLAGS = (SHARED | FAIL, EXCLUSIVE | FAIL)          # 2.2.26.1 valid combinations of a lock batch
BLOCKING_FLAGS = (SHARED, EXCLUSIVE)


def _check_flags(locks) -> None:
    """3.3.5.14.1/3.3.5.14.2 flag validation, judged as Windows and Samba do: the first element decides
    between an unlock batch and a lock batch; a lock batch is rejected as a whole (a blocking element
    only alone, no unlock element, only valid combinations); in an unlock batch a bad element fails
    only when it is reached, after the unlocks before it took effect (3.3.5.14.1)."""
    first = locks[0].flags
    if first == UNLOCK:
        return
    if first in BLOCKING_FLAGS:
        if len(locks) > 1:
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        return
    if first not in LOCK_FLAGS:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    for lk in locks[1:]:
        if lk.flags not in LOCK_FLAGS:
            raise SmbError(st.STATUS_INVALID_PARAMETER)


def lock(req) -> Reply:
    seq, fid, locks = m.parse_lock(req.msg)
    o = req.open(fid)
    if o.is_pipe or o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)   # MS-FSA 2.1.5.8: no locks on directories
    server = req.server
    mgr = server.locks
    # 3.3.5.14: LockSequenceIndex/Number replay detection before anything else
    slot = mgr.sequence_slot(req, o, seq)
    if slot is not None and mgr.is_replay(o, slot):
        return Reply(LOCK_RESPONSE)
    _check_flags(locks)
    state = server.files.get(o.file_key)
    if state is None:
        raise SmbError(st.STATUS_FILE_CLOSED)
    if locks[0].flags == UNLOCK:
        return _unlock(req, mgr, state, o, locks, slot)
    server.oplocks.on_lock(o)   # MS-FSA 2.1.4.12 LOCK: level II / R caching of others breaks
    granted = []
    for lk in locks:
        excl = bool(lk.flags & EXCLUSIVE)
        status = None
        if not range_valid(lk.offset, lk.length):
            status = STATUS_INVALID_LOCK_RANGE                  # MS-FSA 2.1.5.8 validation
        elif mgr.can_lock(state, o, lk.offset, lk.length, excl):
            granted.append(mgr.add(state, o, lk.offset, lk.length, excl))
            continue
        elif lk.flags & FAIL:
            status = st.STATUS_LOCK_NOT_GRANTED
        if status is not None:
            for g in granted:   # all-or-nothing (3.3.5.14.2: granted locks of the request are undone)
                mgr.drop(state, g)
            if granted:
                mgr.retry_waiters(state)
            raise SmbError(status)
        return _wait(req, mgr, state, o, lk, excl, slot)   # a single blocking lock
    mgr.sequence_done(o, slot)
    return Reply(LOCK_RESPONSE)


def _unlock(req, mgr, state, o, locks, slot) -> Reply:
    """3.3.5.14.1: elements are unlocked in order; the first failure ends the request and the unlocks
    before it are not rolled back."""
    status = st.STATUS_SUCCESS
    changed = False
    for lk in locks:
        if lk.flags != UNLOCK:
            status = st.STATUS_INVALID_PARAMETER
            break
        status = mgr.unlock(state, o, lk.offset, lk.length)
        if status != st.STATUS_SUCCESS:
            break
        changed = True
    if changed:
        mgr.retry_waiters(state)
    if status != st.STATUS_SUCCESS:
        raise SmbError(status)
    mgr.sequence_done(o, slot)
    return Reply(LOCK_RESPONSE)


def _wait(req, mgr, state, o, lk, excl, slot) -> Reply:
    """MS-FSA 2.1.5.8: a lock without FAIL_IMMEDIATELY waits (as an async operation, MS-SMB2 3.3.4.2)
    until the conflicting locks go away, its open is closed (STATUS_RANGE_NOT_LOCKED) or it is
    cancelled (STATUS_CANCELLED)."""
    op = req.go_async(lambda op: mgr.drop_waiter(state, op))
    mgr.add_waiter(state, LockWaiter(op, o, lk.offset, lk.length, excl,
                                     on_granted=lambda: mgr.sequence_done(o, slot)))
    reply = Reply(status=st.STATUS_PENDING)
    reply.pending = op
    return reply
