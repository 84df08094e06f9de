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
        from .vfs_gate import IoGates
        self.gates = IoGates()                  # freeze/thaw, storage faults (cluster node ops)
        self.handlers = self.gates.wrap_handlers(HANDLERS)
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
        # cluster node: the LIFs it serves (by listen address); their stores are loaded now
        self.hosted_lifs: set[str] = {config.lifs[h] for h, _p in config.listen if h in config.lifs}
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

    # ------------------------------------------------------------------ cluster: LIF moves
    def host_lif(self, lif: str) -> int:
        """This server takes over `lif` (docs/cluster-design.md "state moves with the LIF"): open the
        LIF's store of every CA share, every row becomes a disconnected open with a fresh reconnect
        window (MS-SMB2 3.3.7.1 state, reclaimed by DH2C 3.3.5.9.12). Returns the opens loaded."""
        if lif in self.hosted_lifs:
            return 0
        self.hosted_lifs.add(lif)
        return self.durable.stores.load_lif(lif)

    async def host_lif_async(self, lif: str) -> int:
        """host_lif, yielding to the event loop while it indexes a big store (heartbeats and control
        pings of a node keep flowing)."""
        import asyncio
        if lif in self.hosted_lifs:
            return 0
        self.hosted_lifs.add(lif)
        steps = self.durable.stores.load_lif_steps(lif)
        result = None
        for _ in range(10_000_000):
            try:
                step = steps.send(result)
            except StopIteration as done:
                return done.value
            # store reads run in a thread; indexing the rows in slices
            result = await asyncio.to_thread(step) if callable(step) else await asyncio.sleep(0)
        return 0

    def release_lif(self, lif: str) -> int:
        """Give `lif` away: close its connections (3.3.7.1: persistent opens disconnect, others are
        closed as a filer loses them), then drop every open of the LIF from memory -- fds, timers,
        FileState, share modes, locks, leases -- keeping the store rows of the persistent (and CA
        resilient) ones for the next owner; close the LIF's stores. Returns the opens handed over."""
        steps = self._release_steps(lif)
        for _ in range(10_000_000):
            try:
                next(steps)
            except StopIteration as done:
                return done.value
        return 0

    async def release_lif_async(self, lif: str) -> int:
        """release_lif, yielding to the event loop every 200 opens."""
        import asyncio
        steps = self._release_steps(lif)
        for _ in range(10_000_000):
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            await asyncio.sleep(0)
        return 0

    def _release_steps(self, lif: str, chunk: int = 200):
        from .handlers.files import close_open
        self.hosted_lifs.discard(lif)
        for c in [c for c in self.connections if c.lif == lif]:
            c.close()
        stores = {id(s) for (_sh, lf), s in self.durable.stores.by_share.items() if lf == lif}
        handed = self.durable.pending.drop_stores(stores)   # loaded rows never rebuilt: just forgotten
        seen, victims = set(), []
        for o in [*self.opens.values(), *self.durable.by_pid.values()]:
            if id(o) in seen or o.closed:
                continue
            seen.add(id(o))
            if o.lif == lif or (o.dh is not None and id(o.dh.store) in stores):
                victims.append(o)
        ids = {id(o) for o in victims}
        for k, o in enumerate(victims):
            if k and k % chunk == 0:
                yield None
            if o.closed:
                continue
            if o.dh is not None and o.dh.store is not None:
                o.dh.store = None           # close_open must not delete the row: the next owner loads it
                handed += 1
            o.delete_on_close = False       # nor delete the file on behalf of a handed-over open
            state = self.files.get(o.file_key) if o.file_key is not None else None
            if state is not None and state.delete_pending and all(id(x) in ids for x in state.opens):
                state.delete_pending = False
            try:
                close_open(self, o)
            except Exception:
                log.exception("dropping open %s of LIF %s", o.name, lif)
        self.durable.stores.close_lif(lif)
        log.warning("LIF %s released: %d persistent/resilient opens handed over, %d opens dropped in all",
                    lif, handed, len(victims))
        return handed

    # ------------------------------------------------------------------ cluster: status
    def open_counts(self) -> dict:
        n = {"persistent": 0, "durable": 0, "plain": 0}
        seen = set()
        for o in [*self.opens.values(), *self.durable.by_pid.values()]:
            if o.closed or o.is_pipe or id(o) in seen:
                continue
            seen.add(id(o))
            n["persistent" if o.persistent else "durable" if (o.durable or o.resilient) else "plain"] += 1
        p, r = self.durable.pending.counts()     # loaded from a store, not rebuilt yet: disconnected
        n["persistent"] += p
        n["durable"] += r
        return n

    def disconnected(self, limit: int = 1000) -> list[dict]:
        now = time.monotonic()
        out = []
        for o in self.durable.by_pid.values():
            if o.closed or o.dh is None or not o.dh.disconnected:
                continue
            out.append({"share": o.tree.share.name, "path": o.name, "lif": o.lif,
                        "persistent_id": o.persistent_id,
                        "remaining_s": round(max(0.0, o.dh.deadline - now), 1) if o.dh.deadline else None})
            if len(out) >= limit:
                break
        return out + self.durable.pending.listing(limit - len(out), now)
