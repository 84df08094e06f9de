"""Byte-range locks (MS-FSA 2.1.5.7, MS-SMB2 3.3.5.14)."""
from __future__ import annotations

from .state import ByteRangeLock


def _overlap(a_off: int, a_len: int, b_off: int, b_len: int) -> bool:
    if a_len == 0 or b_len == 0:
        return False
    return a_off < b_off + b_len and b_off < a_off + a_len


class LockManager:
    def __init__(self, server):
        self.server = server

    def _state(self, o):
        return self.server.files.get(o.file_key)

    def conflicts(self, o, offset: int, length: int, write: bool) -> bool:
        """READ/WRITE check (MS-FSA 2.1.5.2/2.1.5.3): exclusive locks of other opens block both;
        shared locks block writes from everyone."""
        state = self._state(o)
        if state is None or not state.locks:
            return False
        for lk in state.locks:
            if not _overlap(offset, length, lk.offset, lk.length):
                continue
            if lk.exclusive and lk.owner is not o:
                return True
            if not lk.exclusive and write:
                return True
        return False

    def can_lock(self, state, o, offset: int, length: int, exclusive: bool) -> bool:
        """MS-FSA 2.1.5.7: overlapping ranges conflict unless both locks are shared.
        A zero-length lock covers only its offset, inside another lock's range."""
        for lk in state.locks:
            if length == 0:
                hit = lk.length > 0 and lk.offset < offset < lk.offset + lk.length
            else:
                hit = _overlap(offset, length, lk.offset, lk.length)
            if hit and (exclusive or lk.exclusive):
                return False
        return True

    def add(self, state, o, offset: int, length: int, exclusive: bool) -> None:
        lk = ByteRangeLock(offset, length, exclusive, o)
        state.locks.append(lk)
        o.locks.append(lk)

    def remove(self, state, o, offset: int, length: int) -> bool:
        for lk in state.locks:
            if lk.owner is o and lk.offset == offset and lk.length == length:
                state.locks.remove(lk)
                o.locks.remove(lk)
                return True
        return False

    def on_close(self, state, o) -> None:
        if o.locks:
            for lk in o.locks:
                if lk in state.locks:
                    state.locks.remove(lk)
            o.locks.clear()
            self.retry_waiters(state)

    def retry_waiters(self, state) -> None:
        from .handlers.lock import retry_pending
        retry_pending(self.server, state)
