"""Per-file state shared by all Opens of one backing file (MS-FSA 2.1.1.? Stream/File)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class FileState:
    key: tuple
    path: str
    opens: list = field(default_factory=list)
    delete_pending: bool = False
    locks: list = field(default_factory=list)        # ByteRangeLock
    lock_waiters: list = field(default_factory=list)  # locks.LockWaiter: pending blocking LOCKs


class FileTable:
    def __init__(self):
        self.by_key: dict[tuple, FileState] = {}
        # called with the key when it has no FileState: opens restored from a handle store are
        # rebuilt lazily (smbnd.pending), the file's ones before anybody looks at its state
        self.miss = None

    def get(self, key, create: bool = False, path: str = "") -> FileState | None:
        s = self.by_key.get(key)
        if s is None and self.miss is not None:
            self.miss(key)
            s = self.by_key.get(key)
        if s is None and create:
            s = self.by_key[key] = FileState(key, path)
        elif s is not None and path:
            s.path = path
        return s

    def release(self, state: FileState) -> None:
        if not state.opens and not state.lock_waiters and self.by_key.get(state.key) is state:
            del self.by_key[state.key]
