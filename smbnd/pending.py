"""Disconnected opens of a loaded handle store that are not rebuilt yet ("pending" rows).

A server that starts (or takes a LIF over) with 100,000 stored persistent opens must not spend
~80 us per open building Opens, FileStates, leases, locks and timers that nobody may ever ask
for. Loading reads only the columns opens are found by (HandleStore.load_index) and keeps them in
a few dicts; an open is rebuilt as a real disconnected Open (castore.CaStores.restore: identity
check, FileState, share modes, locks, lease, timer) only when something could observe it:

* its owner reconnects: DHnC / DH2C by FileId.Persistent (MS-SMB2 3.3.5.9.7 / 3.3.5.9.12), or a
  DH2C found by CreateGuid, or a replayed CREATE (3.3.5.9.10, ``create_guid``);
* anybody looks at its file's FileState (FileTable.miss, ``file_miss``): every CREATE of the file
  (3.3.5.9 STATUS_FILE_NOT_AVAILABLE, share modes, oplock/lease breaks), a rename onto it, ...;
* anybody looks its lease up (LeaseTable.miss, ``lease_miss``; 3.3.5.9.8 / 3.3.5.9.11);
* a CREATE with its AppInstanceId (3.3.5.9.13, ``app_instance``);
* a directory rename checks for opens below it (``under``; MS-FSA 2.1.5.15.12).

Rebuilding is transitive: a row comes back together with every pending row of the same file
(dev, ino) and of the same lease (ClientGuid, LeaseKey), so whatever sees one of them sees the
state the eager load would have built. The window of a pending row is the one it got at load
(load time + its durable_timeout_ms): one timer per (store, timeout), not one per open; when it
fires, the rows still pending are deleted from the store in one transaction (3.3.2.2 / 3.3.2.4:
the open is closed -- it has no lease, locks or FileState in memory to release). A rebuilt row
keeps that deadline. Rows whose file is gone or replaced are dropped when rebuilt (as the eager
load dropped them at start).
"""
from __future__ import annotations

import gc
import logging
import time
from contextlib import contextmanager
from collections import defaultdict

from .parking import cancel, later
from .vfs_path import upcase

log = logging.getLogger("smbnd.pending")

# HandleStore.INDEX_COLUMNS
PID, DEV, INO, CLIENT, GUID, LKEY, APP, TIMEOUT, PERSISTENT, PATH = range(10)
ZERO_GUID = b"\0" * 16


@contextmanager
def gc_paused():
    """No cyclic garbage collection while building 100,000s of tuples that all live on (the
    collector would walk them again and again: a third of the load time). Nesting-safe."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Batch:
    """The rows of one store loaded at one time: share, store, LIF, load time, the window timers."""
    __slots__ = ("share", "store", "lif", "t0", "timers")

    def __init__(self, share, store, lif: str, t0: float):
        self.share, self.store, self.lif, self.t0 = share, store, lif, t0
        self.timers: dict[int, object] = {}     # durable_timeout_ms -> the timer of that window

    def deadline(self, row) -> float:
        return self.t0 + row[TIMEOUT] / 1000.0


# The indexes map a key to one persistent id (an int, nearly always) or a list of them: built with
# comprehensions, 100,000 rows index in well under 0.1 s.
def _ids(index: dict, key) -> tuple | list:
    v = index.get(key)
    return () if v is None else (v,) if type(v) is int else v


def _merge(index: dict, keys, pids) -> dict:
    """`index` with keys -> pids added (the dict to keep: a new one when `index` was empty)."""
    new = dict(zip(keys, pids))
    if len(new) == len(pids) and not index:
        return new
    for k, p in zip(keys, pids):     # duplicate keys, or keys of an earlier batch
        v = index.get(k)
        if v is None:
            index[k] = p
        elif type(v) is list:
            v.append(p)
        else:
            index[k] = [v, p]
    return index


def _remove(index: dict, key, pid: int) -> None:
    v = index.get(key)
    if v is None:
        return
    if type(v) is int:
        if v == pid:
            del index[key]
        return
    if pid in v:
        v.remove(pid)
        if not v:
            del index[key]


class PendingOpens:
    def __init__(self, server, stores):
        self.server = server
        self.stores = stores                    # castore.CaStores (restore, delete)
        self.rows: dict[int, tuple] = {}        # FileId.Persistent -> index row
        self.batch: dict[int, Batch] = {}       # FileId.Persistent -> its Batch
        # plain keys hash fastest: st_ino for (st_dev, st_ino), LeaseKey for (ClientGuid, LeaseKey)
        self.by_file: dict[int, object] = {}    # st_ino -> persistent id(s)
        self.by_lease: dict[bytes, object] = {}  # LeaseKey -> persistent id(s)
        self.by_guid: dict[bytes, object] = {}  # CreateGuid -> persistent id(s)
        self.by_app: dict[bytes, object] = {}   # AppInstanceId -> persistent id(s)
        server.files.miss = self.file_miss
        server.oplocks.leases.miss = self.lease_miss

    def __len__(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------------ loading
    def add_batch(self, rows, share, store, lif: str):
        """Index `rows` (HandleStore.load_index) of `store`: a generator (as castore.load_lif_steps)
        that yields None between its steps, each a few comprehensions over the rows (100,000 rows:
        ~50 ms a step), so that a node's event loop keeps answering. Returns the count."""
        b = Batch(share, store, lif, time.monotonic())
        live = self.server.durable.by_pid
        if self.rows or live:
            taken = [r for r in rows if r[PID] in self.rows or r[PID] in live]
            for r in taken:
                log.warning("%s: persistent id %#x is already in use; row ignored", store.path, r[PID])
            if taken:
                skip = {r[PID] for r in taken}
                rows = [r for r in rows if r[PID] not in skip]
        pids = [r[PID] for r in rows]
        with gc_paused():
            self.rows.update(zip(pids, rows))
            self.batch.update(dict.fromkeys(pids, b))
        yield None
        with gc_paused():
            self.by_file = _merge(self.by_file, [r[INO] for r in rows], pids)
        yield None
        with gc_paused():
            leased = [r for r in rows if r[LKEY]]
            self.by_lease = _merge(self.by_lease, [r[LKEY] for r in leased], [r[PID] for r in leased])
            guided = [r for r in rows if r[GUID] and r[GUID] != ZERO_GUID]
            self.by_guid = _merge(self.by_guid, [r[GUID] for r in guided], [r[PID] for r in guided])
            apps = [r for r in rows if r[APP]]
            self.by_app = _merge(self.by_app, [r[APP] for r in apps], [r[PID] for r in apps])
        for ms in {r[TIMEOUT] for r in rows}:     # one timer per window length, not per open
            b.timers[ms] = later(ms / 1000.0, self._expire_group, b, ms)
        return len(pids)

    # ------------------------------------------------------------------ rebuilding
    def materialize(self, pids) -> list:
        """Rebuild the pending rows `pids` (and every pending row of the same files and leases)
        as disconnected Opens. Returns the Opens rebuilt."""
        rows = self.rows
        todo = [p for p in pids if p in rows]
        if not todo:
            return []
        seen: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in rows:
                continue
            seen.add(pid)
            row = rows[pid]
            todo.extend(self._file(row[DEV], row[INO]))
            if row[LKEY]:
                todo.extend(self._lease(row[CLIENT], row[LKEY]))
        picked = [(pid, *self._take(pid)) for pid in sorted(seen)]   # out of every index first
        now = time.monotonic()
        out, gone = [], defaultdict(list)
        for pid, row, b in picked:
            deadline = b.deadline(row)
            if now >= deadline:       # the window ended; the group timer has not run yet (3.3.2.2)
                gone[b].append(pid)
                continue
            o = self.stores.restore_pending(pid, b.share, b.store, b.lif, deadline)
            if o is None:
                gone[b].append(pid)
            else:
                out.append(o)
        for b, lst in gone.items():
            self._delete(b, lst)
        return out

    def _take(self, pid: int):
        row, b = self.rows.pop(pid), self.batch.pop(pid)
        _remove(self.by_file, row[INO], pid)
        if row[LKEY]:
            _remove(self.by_lease, row[LKEY], pid)
        if row[GUID] and row[GUID] != ZERO_GUID:
            _remove(self.by_guid, row[GUID], pid)
        if row[APP]:
            _remove(self.by_app, row[APP], pid)
        return row, b

    @staticmethod
    def _delete(b: Batch, pids: list) -> None:
        try:
            b.store.delete_many(pids)
        except Exception:
            log.exception("handle store %s: deleting %d opens", b.store.path, len(pids))

    # ------------------------------------------------------------------ lookups (hooks)
    def _file(self, dev: int, ino: int) -> list:
        rows = self.rows
        return [p for p in _ids(self.by_file, ino) if rows[p][DEV] == dev]

    def _lease(self, client_guid: bytes, key: bytes) -> list:
        rows = self.rows
        return [p for p in _ids(self.by_lease, key) if rows[p][CLIENT] == client_guid]

    def file_miss(self, key) -> None:
        """FileTable.miss: the file (dev, ino[, stream]) has no FileState; its pending opens first."""
        if self.by_file:
            pids = self._file(key[0], key[1])
            if pids:
                self.materialize(pids)

    def lease_miss(self, client_guid: bytes, key: bytes) -> None:
        """LeaseTable.miss: the lease's pending holders first."""
        if self.by_lease:
            pids = self._lease(client_guid, key)
            if pids:
                self.materialize(pids)

    def lookup_pid(self, pid: int):
        """A reconnect by FileId.Persistent (3.3.5.9.7 / 3.3.5.9.12): the Open, rebuilt, or None."""
        if pid in self.rows:
            self.materialize([pid])
        return self.server.durable.by_pid.get(pid)

    def create_guid(self, create_guid: bytes, client_guid: bytes | None = None) -> None:
        """Rebuild the pending opens with this CreateGuid (of this ClientGuid, when given)."""
        pids = _ids(self.by_guid, create_guid)
        if pids:
            rows = self.rows
            self.materialize([p for p in pids if client_guid is None or rows[p][CLIENT] == client_guid])

    def app_instance(self, app_id: bytes) -> None:
        """3.3.5.9.13: the opens with this AppInstanceId."""
        pids = _ids(self.by_app, app_id)
        if pids:
            self.materialize(list(pids))

    def under(self, prefix: str) -> None:
        """Rebuild the pending opens whose file could be below directory `prefix` (a host path
        ending in '/'): share-relative paths compared case-insensitively, the rebuilt Open's host
        path decides (durable.any_under)."""
        if not self.rows:
            return
        rel_by_batch: dict[int, str | None] = {}
        cand = []
        batch = self.batch
        for pid, row in self.rows.items():
            b = batch[pid]
            rel = rel_by_batch.get(id(b), 0)
            if rel == 0:
                root = b.share.fs.root.rstrip("/") + "/"
                rel = rel_by_batch[id(b)] = upcase(prefix[len(root):]) if prefix.startswith(root) else None
            if rel is not None and upcase(row[PATH].replace("\\", "/")).startswith(rel):
                cand.append(pid)
        self.materialize(cand)

    # ------------------------------------------------------------------ the end of a window
    def _expire_group(self, b: Batch, ms: int) -> None:
        """3.3.2.2 / 3.3.2.4: the reconnect window of a group of pending rows ended."""
        b.timers.pop(ms, None)
        batch = self.batch
        pids = [p for p, row in self.rows.items() if batch[p] is b and row[TIMEOUT] == ms]
        if not pids:
            return
        for p in pids:
            self._take(p)
        log.warning("reconnect window of %d restored opens of %s ended: closing them", len(pids), b.store.path)
        self._delete(b, pids)

    def drop_stores(self, store_ids: set) -> int:
        """release_lif: forget the pending rows of these stores (the rows stay for the next owner)."""
        pids = [p for p, b in self.batch.items() if id(b.store) in store_ids]
        batches = {}
        for p in pids:
            b = self.batch[p]
            batches[id(b)] = b
            self._take(p)
        for b in batches.values():
            for t in b.timers.values():
                cancel(t)
            b.timers.clear()
        return len(pids)

    # ------------------------------------------------------------------ status
    def counts(self) -> tuple[int, int]:
        """(persistent, resilient-only) pending opens."""
        p = sum(1 for row in self.rows.values() if row[PERSISTENT])
        return p, len(self.rows) - p

    def listing(self, limit: int, now: float) -> list[dict]:
        out = []
        for pid, row in self.rows.items():
            b = self.batch[pid]
            if len(out) >= limit:
                break
            out.append({"share": b.share.name, "path": row[PATH], "lif": b.lif, "persistent_id": row[PID],
                        "remaining_s": round(max(0.0, b.deadline(row) - now), 1)})
        return out
