"""Server-global state (MS-SMB2 3.3.1.5 ff.): shares, sessions, opens, and the handler table."""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time

from .config import ServerConfig
from .state import Open, Session, Share

log = logging.getLogger("smbnd.server")


class Server:
    def __init__(self, config: ServerConfig, users=None):
        from .auth import UserDB
        from .handlers import HANDLERS
        from .vfs import ShareFS

        self.config = config
        if users is None:
            users = UserDB.load(config.users_file) if config.users_file else UserDB.from_mapping({})
            for name, pw in config.users.items():
                users.add(name, password=pw)
        self.users = users
        self.shares: dict[str, Share] = {"ipc$": Share("IPC$", None)}
        for sc in config.shares:
            self.shares[sc.name.lower()] = Share(sc.name, sc, ShareFS(sc.path, read_only=sc.read_only))
        self.sessions: dict[int, Session] = {}
        self.opens: dict[int, Open] = {}
        self.handlers = HANDLERS
        self.start_time = time.time()
        self.connections: set = set()
        # SessionIds: random high bits so stale ids from another server instance don't collide
        self._session_ids = itertools.count((int.from_bytes(os.urandom(2), "little") << 40) | 1)
        self._volatile_ids = itertools.count(1)
        self._persistent_ids = itertools.count(int.from_bytes(os.urandom(3), "little") << 32 | 1)
        from .filestate import FileTable
        from .locks import LockManager
        from .notify import NotifyManager
        from .oplock import OplockManager
        self.files = FileTable()
        self.locks = LockManager(self)
        self.oplocks = OplockManager(self)
        self.oplocks.directory_leasing = config.directory_leasing   # opt-in, see config
        self.notify = NotifyManager(self)
        # 3.3.5.4: SMB2_GLOBAL_CAP_PERSISTENT_HANDLES when any share is continuously available
        self.persistent_handles = self.any_ca_share
        from .durable import DurableManager
        self.durable = DurableManager(self)
        self.resume_keys: dict[bytes, object] = {}
        # stable per-server domain SID tail for owner/group SIDs in security descriptors
        d = hashlib.sha256(config.name.encode()).digest()
        self.domain_sid_tail = "-".join(str(int.from_bytes(d[i:i + 4], "little")) for i in (0, 4, 8))
        self.durable.load()     # persistent opens of the CA shares' handle stores, disconnected

    @property
    def any_ca_share(self) -> bool:
        return any(s.config and s.config.ca for s in self.shares.values())

    def new_session_id(self) -> int:
        return next(self._session_ids)

    def new_file_ids(self) -> tuple[int, int]:
        return next(self._persistent_ids), next(self._volatile_ids)

    def file_state(self, key, create: bool = False, path: str = ""):
        return self.files.get(key, create=create, path=path)

    def release_file_state(self, state) -> None:
        self.files.release(state)

    def destroy_session(self, session: Session) -> None:
        """Session teardown (MS-SMB2 3.3.7.1 / 3.3.4.? ): close its opens, drop it."""
        from .handlers.files import close_open
        for o in [o for o in self.opens.values() if o.session is session]:
            try:
                if not self.durable.disconnect(o):   # durable/persistent/resilient opens stay (3.3.7.1)
                    close_open(self, o)
            except Exception:
                log.exception("closing open during session teardown")
        session.trees.clear()
        self.sessions.pop(session.session_id, None)
        # every channel's Connection.SessionTable loses it (multichannel, MS-SMB2 3.3.5.6 / 3.3.7.1)
        for conn in list(session.channels):
            conn.sessions.pop(session.session_id, None)
        session.channels.clear()
        session.binding.clear()
