"""Byte-range locks (MS-FSA 2.1.4.10, 2.1.5.8, 2.1.5.9; MS-SMB2 3.3.5.14).

The locks of a stream live in FileState.locks (ByteRangeLock, owner = the Open); each Open keeps
its own list in Open.locks too. Blocking LOCK requests wait in FileState.lock_waiters and are
retried whenever a lock of that stream goes away (unlock, close, logoff, tree disconnect,
connection drop all end in LockManager.remove/on_close).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import status as st
from .state import ByteRangeLock
from .wire.messages import ERROR_BODY

MAX_U64 = 0xFFFFFFFFFFFFFFFF
LOCK_SEQUENCE_BUCKETS = 64      # MS-SMB2 3.3.1.10 Open.LockSequenceArray: indices 1..64
LOCK_RESPONSE = b"\x04\x00\x00\x00"   # MS-SMB2 2.2.27
STATUS_INVALID_LOCK_RANGE = getattr(st, "STATUS_INVALID_LOCK_RANGE", 0xC00001A1)   # MS-ERREF 2.3


def range_valid(offset: int, length: int) -> bool:
    """MS-FSA 2.1.5.8 / 2.1.5.9: a range holding bytes past 2^64-1 is STATUS_INVALID_LOCK_RANGE."""
    return length == 0 or offset + length - 1 <= MAX_U64


def ranges_overlap(off1: int, len1: int, off2: int, len2: int) -> bool:
    """MS-FSA 2.1.4.10: {0, 0} overlaps nothing; otherwise the ranges [off, off+len-1] intersect.
    A zero-length range at X has last byte X-1, so it only meets ranges that start before X and
    reach X (e.g. {10,0} meets {9,2} but not {9,1}, {10,1} or another {10,0})."""
    if (off1 == 0 and len1 == 0) or (off2 == 0 and len2 == 0):
        return False
    last1 = min(off1 + len1 - 1, MAX_U64)   # an invalid (read/write) range is capped at 2^64-1
    last2 = min(off2 + len2 - 1, MAX_U64)
    return off1 <= last2 and last1 >= off2


def range_conflicts(locks, o, offset: int, length: int, exclusive: bool, lock_intent: bool) -> bool:
    """MS-FSA 2.1.4.10 for `o` accessing [offset, length): an exclusive lock conflicts with any access
    by another open, and with an exclusive lock request by its owner (a shared lock stacks on the
    owner's exclusive lock; reads and writes through the owner pass); a shared lock conflicts with
    exclusive access (writes, exclusive locks) by anyone, its owner included."""
    for lk in locks:
        if not ranges_overlap(offset, length, lk.offset, lk.length):
            continue
        if lk.exclusive:
            if lk.owner is not o or (lock_intent and exclusive):
                return True
        elif exclusive:
            return True
    return False


@dataclass(eq=False)
class LockWaiter:
    """A blocking LOCK (single element without FAIL_IMMEDIATELY) waiting as an async operation."""
    op: Any                      # connection.AsyncOp
    open: Any
    offset: int
    length: int
    exclusive: bool
    on_granted: Callable[[], None] | None = None


class LockManager:
    def __init__(self, server):
        self.server = server

    def _state(self, o):
        return self.server.files.get(o.file_key)

    # ---- READ / WRITE (MS-FSA 2.1.5.2 / 2.1.5.3)
    def conflicts(self, o, offset: int, length: int, write: bool) -> bool:
        if length == 0:
            return False    # a zero-byte read or write transfers nothing (smb2.lock.zerobyteread)
        state = self._state(o)
        if state is None or not state.locks:
            return False
        return range_conflicts(state.locks, o, offset, length, write, lock_intent=False)

    # ---- locking (MS-FSA 2.1.5.8)
    def can_lock(self, state, o, offset: int, length: int, exclusive: bool) -> bool:
        return not range_conflicts(state.locks, o, offset, length, exclusive, lock_intent=True)

    def add(self, state, o, offset: int, length: int, exclusive: bool) -> ByteRangeLock:
        lk = ByteRangeLock(offset, length, exclusive, o)
        state.locks.append(lk)
        o.locks.append(lk)
        if o.dh is not None:    # a persistent/resilient open: in its handle store before the reply
            self.server.durable.stores.persist_locks(o)
        return lk

    def drop(self, state, lk: ByteRangeLock) -> None:
        """Remove one lock object (rollback of a partly granted request)."""
        if lk in state.locks:
            state.locks.remove(lk)
        if lk in lk.owner.locks:
            lk.owner.locks.remove(lk)
            if lk.owner.dh is not None:
                self.server.durable.stores.persist_locks(lk.owner)

    def unlock(self, state, o, offset: int, length: int) -> int:
        """MS-FSA 2.1.5.9: remove the owner's lock with exactly this range, an exclusive one first."""
        if not range_valid(offset, length):
            return STATUS_INVALID_LOCK_RANGE
        victim = None
        for lk in state.locks:
            if lk.owner is o and lk.offset == offset and lk.length == length:
                victim = lk
                if lk.exclusive:
                    break
        if victim is None:
            return st.STATUS_RANGE_NOT_LOCKED
        self.drop(state, victim)
        return st.STATUS_SUCCESS

    def remove(self, state, o, offset: int, length: int) -> bool:
        return self.unlock(state, o, offset, length) == st.STATUS_SUCCESS

    # ---- waiters
    def add_waiter(self, state, waiter: LockWaiter) -> None:
        state.lock_waiters.append(waiter)

    def drop_waiter(self, state, op) -> None:
        state.lock_waiters[:] = [w for w in state.lock_waiters if w.op is not op]
        self.server.files.release(state)

    def retry_waiters(self, state) -> None:
        """Grant waiting blocking locks that no longer conflict, in arrival order (MS-FSA 2.1.5.8:
        the wait ends when the conflicting lock goes away); a waiter whose open is gone fails with
        STATUS_RANGE_NOT_LOCKED as on Windows and Samba (smb2.lock.cancel)."""
        for w in list(state.lock_waiters):
            if w not in state.lock_waiters:
                continue
            if w.op.done or w.open.closed:
                state.lock_waiters.remove(w)
                if not w.op.done:
                    w.op.complete(st.STATUS_RANGE_NOT_LOCKED, [ERROR_BODY])
                continue
            if self.can_lock(state, w.open, w.offset, w.length, w.exclusive):
                state.lock_waiters.remove(w)
                self.add(state, w.open, w.offset, w.length, w.exclusive)
                if w.on_granted is not None:
                    w.on_granted()
                w.op.complete(st.STATUS_SUCCESS, [LOCK_RESPONSE])

    def on_close(self, state, o) -> None:
        """An open goes away (CLOSE, tree disconnect, logoff, connection drop): its locks are
        released and its own pending lock requests end (MS-FSA 2.1.5.4)."""
        mine = [w for w in state.lock_waiters if w.open is o]
        if not o.locks and not mine:
            return
        for lk in list(o.locks):
            if lk in state.locks:
                state.locks.remove(lk)
        o.locks.clear()
        self.retry_waiters(state)

    # ---- MS-SMB2 3.3.5.14 lock sequence verification (replay detection)
    def sequence_checked(self, req, o) -> bool:
        """Whether LockSequence applies: resilient, durable or persistent opens, or any open when a
        3.x connection advertises multichannel (MS-SMB2 3.3.5.14; Samba does the same)."""
        conn = req.conn
        if conn.dialect <= 0x0202:
            return False
        if o.resilient or o.durable or o.persistent:
            return True
        from .wire import negotiate as ng
        return conn.dialect >= 0x0300 and bool(conn.server_capabilities & ng.CAP_MULTI_CHANNEL)

    def sequence_slot(self, req, o, lock_sequence: int):
        """Returns (index, number) for a checked request with a valid bucket, else None."""
        index, number = lock_sequence >> 4, lock_sequence & 0xF
        if not 1 <= index <= LOCK_SEQUENCE_BUCKETS or not self.sequence_checked(req, o):
            return None
        return index, number

    def is_replay(self, o, slot) -> bool:
        """A request whose entry is valid and equal is a replay and succeeds without effect;
        otherwise the entry becomes invalid until this request succeeds."""
        arr = _sequence_array(o)
        index, number = slot
        if arr[index] == number:
            return True
        arr[index] = 0xFF
        return False

    def sequence_done(self, o, slot) -> None:
        if slot is not None and not o.closed:
            _sequence_array(o)[slot[0]] = slot[1]


def _sequence_array(o) -> bytearray:
    """Open.LockSequenceArray (MS-SMB2 3.3.1.10): kept on the Open so that it survives a durable
    reconnect; 0xFF marks an invalid entry (index 0 unused)."""
    if o.lock_sequences is None:
        o.lock_sequences = bytearray(b"\xff" * (LOCK_SEQUENCE_BUCKETS + 1))
    return o.lock_sequences
