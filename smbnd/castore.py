"""Handle stores of the continuously available shares (smbnd.handlestore, one per CA share).

File: ``<config.state_dir>/<share name>.handles.sqlite`` -- never inside the share. Rows are the
persistent opens (MS-SMB2 3.3.1.10 Open.IsPersistent) and the resilient opens of the share, with
their byte-range locks and oplock/lease state:

* a persistent grant (and a resiliency request on a CA share) is committed before the CREATE
  (IOCTL) response goes out (``persist_new``);
* every change of such an open's locks (``persist_locks``, from LockManager) and of its caching
  after a break acknowledgment, a break timeout or a break that needs no acknowledgment
  (``persist_caching``) is committed before the response (or right away);
* a close deletes the row (``forget``).

On start (``load_all``) every row is marked disconnected (``mark_all_disconnected``) and gets a
fresh reconnect window (durable_timeout_ms of the row). Rows are indexed, not rebuilt
(smbnd.pending): a row becomes a disconnected Open -- in the FileState of its file (share modes,
STATUS_FILE_NOT_AVAILABLE for other openers), with its locks and its lease -- when its owner
reconnects or anybody looks at its file, lease, CreateGuid or AppInstanceId (``restore_pending``).
The file's identity (st_dev, st_ino) must still match then or the row is dropped. The backing fd
is opened only when the owner reclaims the open (``reopen_fd``, identity checked again).
"""
from __future__ import annotations

import itertools
import logging
import os
import time

from . import status as st
from .handlestore import HandleStore, OpenRecord, StoreError
from .lease import Lease
from .state import ByteRangeLock, Open, Session, TreeConnect
from .wire import create as cr

log = logging.getLogger("smbnd.castore")
ZERO_GUID = b"\0" * 16


def store_path(config, share_name: str, lif: str = "", share_config=None) -> str:
    """The handle store of a share, per (volume, LIF) in a cluster (docs/cluster-design.md, "Where a
    share's persistent-handle state lives"): ``<dir>/<share>@<lif>.handles.sqlite``, where ``<dir>`` is
    the share's own state_dir (a cluster node: its aggregate's ``.smbnd-state``) or config.state_dir;
    standalone (no LIF) ``<dir>/<share>.handles.sqlite``."""
    base = (getattr(share_config, "state_dir", "") if share_config is not None else "") or config.state_dir
    name = f"{share_name}@{lif}" if lif else share_name
    return os.path.join(os.path.abspath(base), f"{name}.handles.sqlite")


class CaStores:
    def __init__(self, server, mgr):
        self.server = server
        self.mgr = mgr
        self.by_share: dict[tuple[str, str], HandleStore] = {}    # (share lower, LIF or "") -> store

    def store(self, share, lif: str = "") -> HandleStore:
        """The store of `share` for opens that came in through `lif` ("" = standalone)."""
        k = (share.name.lower(), lif or "")
        s = self.by_share.get(k)
        if s is None:
            s = HandleStore(store_path(self.server.config, share.name, lif, share.config), volume=share.config.path)
            self.by_share[k] = s
        return s

    def close_lif(self, lif: str) -> int:
        """Close (not delete) every store of `lif`; the caller dropped its opens first. Returns how many."""
        n = 0
        for k in [k for k in self.by_share if k[1] == lif]:
            try:
                self.by_share.pop(k).close()
            except Exception:
                log.exception("closing handle store %s@%s", *k)
            n += 1
        return n

    # ------------------------------------------------------------------ records
    @staticmethod
    def record(o: Open) -> OpenRecord:
        lease = o.lease
        dev, ino = (o.file_key or (0, 0))[:2]
        return OpenRecord(
            persistent_id=o.persistent_id, share=o.tree.share.name, path=o.name, is_directory=o.is_directory,
            create_guid=o.create_guid or ZERO_GUID, client_guid=o.client_guid or ZERO_GUID,
            user=o.dh.owner[0], domain=o.dh.owner[1], desired_access=o.access, share_access=o.share_access,
            create_options=o.create_options, is_persistent=bool(o.persistent), is_resilient=bool(o.resilient),
            durable_timeout_ms=max(o.durable_timeout if o.persistent else 0, o.dh.resiliency_ms),
            oplock_level=o.oplock_level,
            lease_key=lease.key if lease is not None else None,
            lease_state=lease.state if lease is not None else 0,
            lease_epoch=lease.epoch if lease is not None else 0,
            lease_version=lease.version if lease is not None else 0,
            parent_lease_key=lease.parent_key if lease is not None else None,
            app_instance_id=o.app_instance_id or None, channel_sequence=o.channel_sequence,
            app_instance_version_high=(getattr(o, "app_instance_version", None) or (0, 0))[0],
            app_instance_version_low=(getattr(o, "app_instance_version", None) or (0, 0))[1],
            file_dev=dev, file_ino=ino,
            locks=[(lk.offset, lk.length, lk.exclusive) for lk in o.locks])

    def persist_new(self, o: Open, share) -> bool:
        """Commit the open (a persistent grant, a resiliency request) before the response."""
        try:
            s = self.store(share, getattr(o, "lif", ""))    # per (volume, LIF): cluster-design.md
            s.put(self.record(o))
        except (StoreError, OSError, Exception) as e:   # sqlite3.Error included
            log.error("handle store of share %s: %s; not granting persistence", share.name, e)
            return False
        o.dh.store = s
        return True

    def persist_locks(self, o: Open) -> None:
        """Byte-range locks of a stored open changed (LOCK, a granted blocking lock, an unlock)."""
        dh = o.dh
        if dh is None or dh.store is None or o.closed:
            return
        try:
            dh.store.put(self.record(o))
        except Exception:
            log.exception("handle store: saving the locks of %s", o.name)

    def persist_caching(self, opens) -> None:
        """The oplock level / lease state of stored opens changed (a break was acknowledged, timed
        out, or needed no acknowledgment: smbnd.handlers.oplock_break, OplockManager._persist)."""
        for o in opens:
            dh = o.dh
            if dh is None or dh.store is None or o.closed:
                continue
            lease = o.lease
            cur = (o.oplock_level, lease.state if lease is not None else 0, lease.epoch if lease is not None else 0)
            if dh.saved_caching == cur:
                continue
            try:
                dh.store.update(o.persistent_id, oplock_level=cur[0], lease_state=cur[1], lease_epoch=cur[2])
                dh.saved_caching = cur
            except Exception:
                log.exception("handle store: saving the caching state of %s", o.name)

    def forget(self, o: Open) -> None:
        dh = o.dh
        try:
            dh.store.delete(o.persistent_id)
        except Exception:
            log.exception("handle store: deleting %s", o.name)
        dh.store = None

    # ------------------------------------------------------------------ start-up
    def load_all(self) -> None:
        """Server start. Standalone: every CA share's store. Cluster node (config.lifs): only the
        stores of the LIFs it listens on (cluster-design.md; the rest are hosted by other nodes)."""
        cfg = self.server.config
        if cfg.lifs:
            for lif in sorted({cfg.lifs[h] for h, _p in cfg.listen if h in cfg.lifs}):
                self.load_lif(lif)
        else:
            self.load_lif("")

    def load_lif(self, lif: str) -> int:
        """Open the stores of `lif` ("" = standalone) of every CA share and rebuild their rows as
        disconnected opens with a fresh reconnect window. Returns the number of opens restored."""
        steps = self.load_lif_steps(lif)
        result = None
        while True:
            try:
                step = steps.send(result)
            except StopIteration as done:
                return done.value
            result = step() if callable(step) else None

    def load_lif_steps(self, lif: str):
        """load_lif as a generator, so that a node's event loop keeps answering heartbeats and pings
        while it takes over a big store: it yields None between steps (a pause) and the store
        reads as callables (the driver runs them, in a thread if it likes, and sends the result
        back). The rows are indexed, not rebuilt (smbnd.pending). Returns the count."""
        server = self.server
        pending = self.mgr.pending
        total, top = 0, 0
        for share in list(server.shares.values()):
            if share.config is None or not share.config.ca:
                continue
            if not os.path.exists(store_path(server.config, share.name, lif, share.config)):
                continue        # nothing recorded yet (the store is created by the first grant)
            try:
                s = self.store(share, lif)
            except Exception as e:
                log.error("handle store of CA share %s unusable: %s", share.name, e)
                continue
            row = s.db.execute("SELECT value FROM meta WHERE key = 'volume'").fetchone()
            if row is not None and row[0] and row[0] != share.config.path:
                log.error("%s belongs to %s, not %s: not loading it", s.path, row[0], share.config.path)
                continue
            t0 = time.monotonic()
            yield s.mark_all_disconnected
            rows = yield s.load_index
            n = yield from pending.add_batch(rows, share, s, lif)
            if rows:
                top = max(top, rows[-1][0])     # persistent-id order
                log.warning("share %s%s: %d persistent/resilient opens loaded disconnected in %.2f s",
                            share.name, f"@{lif}" if lif else "", n, time.monotonic() - t0)
            total += n
        if top:
            # FileId.Persistent values of this run must not collide with the loaded ones
            nxt = next(server._persistent_ids)
            server._persistent_ids = itertools.count(max(nxt, top + 1))
        return total

    def restore_pending(self, pid: int, share, s, lif: str, deadline: float) -> Open | None:
        """Rebuild one pending row (smbnd.pending) as a disconnected Open whose window ends at
        `deadline`; None when the row is gone or its file is (the caller deletes the row)."""
        try:
            rec = s.get(pid)
        except Exception:
            log.exception("handle store %s: reading open %#x", s.path, pid)
            return None
        if rec is None:
            return None
        o = self._restore(rec, share, s, deadline)
        if o is not None:
            o.lif = lif
            if log.isEnabledFor(logging.INFO):
                log.info("restored %s open %s (persistent id %#x, %d locks, lease %s)",
                         "persistent" if o.persistent else "resilient", o.name, o.persistent_id,
                         len(o.locks), o.lease.key.hex() if o.lease is not None else "-")
        return o

    def _restore(self, rec, share, s, deadline: float | None = None) -> Open | None:
        server = self.server
        fs = share.fs
        lk = fs.lookup(rec.path)
        if lk.status != st.STATUS_SUCCESS or not lk.exists:
            log.warning("stored open %s of share %s: the file is gone; dropped", rec.path, share.name)
            return None
        try:
            stt = os.stat(lk.host_path)
        except OSError:
            return None
        if (stt.st_dev, stt.st_ino) != (rec.file_dev, rec.file_ino):
            log.warning("stored open %s of share %s: another file has that name now; dropped",
                        rec.path, share.name)
            return None
        from .durable import DurableInfo
        from .handlers.create_ext import state_key
        stream = lk.stream_name
        key = state_key(stt, stream)
        session, tree = self._placeholders(share)
        o = Open(persistent_id=rec.persistent_id, volatile_id=0, tree=tree, session=session, name=rec.path,
                 host_path=lk.host_path, is_directory=bool(rec.is_directory), access=rec.desired_access,
                 share_access=rec.share_access, create_options=rec.create_options, fd=None,
                 write_through=bool(rec.create_options & cr.FILE_WRITE_THROUGH))
        o.file_key = key
        o.stream = stream
        o.durable = bool(rec.is_persistent)
        o.persistent = bool(rec.is_persistent)
        o.resilient = bool(rec.is_resilient)
        o.create_guid = rec.create_guid if rec.create_guid != ZERO_GUID else b""
        o.client_guid = rec.client_guid
        o.durable_timeout = rec.durable_timeout_ms
        o.oplock_level = rec.oplock_level
        o.channel_sequence = rec.channel_sequence
        if rec.app_instance_id:
            o.app_instance_id = rec.app_instance_id
            if rec.app_instance_version_high or rec.app_instance_version_low:
                o.app_instance_version = (rec.app_instance_version_high, rec.app_instance_version_low)
        o.dh = DurableInfo((rec.user, rec.domain), v2=bool(o.create_guid), store=s,
                           resiliency_ms=rec.durable_timeout_ms if rec.is_resilient else 0)
        data = lk.host_path
        if stream:
            data = fs.streams.data_path(lk.host_path, stream) or lk.host_path
        state = server.file_state(key, create=True, path=data)
        state.opens.append(o)
        for off, ln, excl in rec.locks:
            lock = ByteRangeLock(off, ln, bool(excl), o)
            state.locks.append(lock)
            o.locks.append(lock)
        if rec.lease_key:
            leases = server.oplocks.leases
            lease = leases.get(rec.client_guid, rec.lease_key)
            if lease is None:
                lease = Lease(rec.client_guid, rec.lease_key, key, version=rec.lease_version or 1,
                              state=rec.lease_state, epoch=rec.lease_epoch, parent_key=rec.parent_lease_key)
                leases.add(lease)
            elif ((rec.lease_epoch - lease.epoch) & 0xFFFF) < 0x8000:   # the newer row wins
                lease.state, lease.epoch = rec.lease_state, rec.lease_epoch
            lease.opens.append(o)
            o.lease = lease
            o.oplock_level = cr.OPLOCK_LEVEL_LEASE
        self.mgr.by_pid[o.persistent_id] = o
        try:    # the replay (CreateGuid) and app instance indexes, when those modules are there
            from . import appinstance, replay
            replay.register(server, rec.client_guid, o)
            appinstance.register(server, o)
        except (ImportError, AttributeError):
            pass
        self.mgr._start_window(o, deadline)
        return o

    def _placeholders(self, share):
        """Session and TreeConnect stand-ins of restored opens (their real ones died with the old
        process; Open.Session/TreeConnect are NULL while disconnected, 3.3.7.1)."""
        ph = getattr(self, "_ph", None)
        if ph is None:
            ph = self._ph = {}
        t = ph.get(share.name)
        if t is None:
            sess = Session(session_id=0, connection=None, dialect=0)
            t = ph[share.name] = (sess, TreeConnect(tree_id=0, session=sess, share=share, maximal_access=0))
        return t

    def reopen_fd(self, o: Open) -> bool:
        """The owner reclaims a restored open: open the backing file again; it must still be the
        file the open was made on."""
        fs = o.tree.share.fs
        data = o.host_path
        if o.stream:
            data = fs.streams.data_path(o.host_path, o.stream) or o.host_path
        from .handlers.access import WRITE_LIKE
        ro = bool(o.tree.share.config and o.tree.share.config.read_only)
        flags = os.O_RDWR if (o.access & WRITE_LIKE and not ro) else os.O_RDONLY
        try:
            fd = os.open(data, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            log.warning("reclaiming %s: %s", o.name, e.strerror)
            return False
        try:
            stt = os.stat(o.host_path) if o.stream else os.fstat(fd)
        except OSError:
            os.close(fd)
            return False
        if (stt.st_dev, stt.st_ino) != tuple(o.file_key[:2]):
            os.close(fd)
            log.warning("reclaiming %s: the file was replaced", o.name)
            return False
        o.fd = fd
        return True
