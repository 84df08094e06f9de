"""The handle-state store: durable record of persistent opens, one SQLite file per backing volume.

Another process (the partner node after a takeover, or this server after a crash) opens the same
file and rebuilds the opens from it. Every grant is committed (WAL, synchronous=FULL) before the
response that grants it is sent. Schema (version 1) — see docs in README "State store":

  meta(key PRIMARY KEY, value)                 schema_version, volume, created
  opens(persistent_id PRIMARY KEY, ...)        one row per persistent (or durable) open
  locks(persistent_id, offset, length, exclusive, PRIMARY KEY(persistent_id, offset, length))
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections import namedtuple
from dataclasses import asdict, dataclass, field, fields

SCHEMA_VERSION = 1

_OPEN_COLUMNS = """
    persistent_id INTEGER PRIMARY KEY,
    share TEXT NOT NULL,
    path TEXT NOT NULL,
    is_directory INTEGER NOT NULL,
    create_guid BLOB NOT NULL,
    client_guid BLOB NOT NULL,
    user TEXT NOT NULL,
    domain TEXT NOT NULL,
    desired_access INTEGER NOT NULL,
    share_access INTEGER NOT NULL,
    create_options INTEGER NOT NULL,
    file_attributes INTEGER NOT NULL,
    is_persistent INTEGER NOT NULL,
    is_resilient INTEGER NOT NULL,
    durable_timeout_ms INTEGER NOT NULL,
    oplock_level INTEGER NOT NULL,
    lease_key BLOB,
    lease_state INTEGER NOT NULL,
    lease_epoch INTEGER NOT NULL,
    lease_version INTEGER NOT NULL,
    parent_lease_key BLOB,
    app_instance_id BLOB,
    app_instance_version_high INTEGER NOT NULL,
    app_instance_version_low INTEGER NOT NULL,
    channel_sequence INTEGER NOT NULL,
    file_dev INTEGER NOT NULL,
    file_ino INTEGER NOT NULL,
    created_at REAL NOT NULL,
    disconnected_at REAL
"""


@dataclass
class OpenRecord:
    persistent_id: int
    share: str
    path: str                      # share-relative, backslash separated, as the client named it
    is_directory: bool
    create_guid: bytes
    client_guid: bytes
    user: str
    domain: str
    desired_access: int
    share_access: int
    create_options: int
    file_attributes: int = 0
    is_persistent: bool = True
    is_resilient: bool = False
    durable_timeout_ms: int = 60_000
    oplock_level: int = 0
    lease_key: bytes | None = None
    lease_state: int = 0
    lease_epoch: int = 0
    lease_version: int = 0
    parent_lease_key: bytes | None = None
    app_instance_id: bytes | None = None
    app_instance_version_high: int = 0
    app_instance_version_low: int = 0
    channel_sequence: int = 0
    file_dev: int = 0
    file_ino: int = 0
    created_at: float = field(default_factory=time.time)
    disconnected_at: float | None = None
    locks: list[tuple[int, int, bool]] = field(default_factory=list)   # (offset, length, exclusive)


_FIELDS = [f.name for f in fields(OpenRecord) if f.name != "locks"]
_INSERT = f"INSERT OR REPLACE INTO opens ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})"


_COLS = ", ".join(_FIELDS)
_BOOLS = ("is_directory", "is_persistent", "is_resilient")

# load_all: an immutable full row per open (tools, tests, bench/store_load.py's SQLite-only number).
StoredOpen = namedtuple("StoredOpen", [*_FIELDS, "locks"])


# What start-up reads: the columns the server indexes disconnected opens by (smbnd.pending); the
# rest of a row is read when the open is rebuilt (get).
INDEX_COLUMNS = ("persistent_id", "file_dev", "file_ino", "client_guid", "create_guid", "lease_key",
                 "app_instance_id", "durable_timeout_ms", "is_persistent", "path")
_INDEX_SELECT = f"SELECT {', '.join(INDEX_COLUMNS)} FROM opens"


def _from_row(row, locks) -> OpenRecord:
    rec = object.__new__(OpenRecord)
    d = rec.__dict__
    d.update(zip(_FIELDS, row))
    for k in _BOOLS:
        d[k] = bool(d[k])
    d["locks"] = locks
    return rec


def to_record(row: StoredOpen) -> OpenRecord:
    return _from_row(row[:-1], list(row.locks))


class StoreError(RuntimeError):
    pass


class HandleStore:
    """Synchronous, small-transaction API: each mutating call is one committed transaction."""

    def __init__(self, path: str, volume: str = ""):
        """`path` is the database file: kept beside the volume (in its aggregate or the state
        directory), never inside a share where clients could see it."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate(volume)

    def _migrate(self, volume: str) -> None:
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            with self._tx():
                db.execute(f"CREATE TABLE opens ({_OPEN_COLUMNS})")
                db.execute("CREATE TABLE locks (persistent_id INTEGER NOT NULL REFERENCES opens ON DELETE CASCADE,"
                           " offset INTEGER NOT NULL, length INTEGER NOT NULL, exclusive INTEGER NOT NULL,"
                           " PRIMARY KEY (persistent_id, offset, length))")
                db.execute("CREATE INDEX opens_by_create_guid ON opens (client_guid, create_guid)")
                db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", str(SCHEMA_VERSION)),
                                                                 ("volume", volume),
                                                                 ("created", str(time.time()))])
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {row[0]}, this smbnd understands {SCHEMA_VERSION}")

    def _tx(self):
        db = self.db

        class _T:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, et, ev, tb):
                db.execute("ROLLBACK" if et else "COMMIT")
        return _T()

    # ---- mutations (each durable on return)
    def put(self, rec: OpenRecord) -> None:
        d = asdict(rec)
        with self._tx():
            self.db.execute(_INSERT, [d[k] for k in _FIELDS])
            self.db.execute("DELETE FROM locks WHERE persistent_id = ?", (rec.persistent_id,))
            self.db.executemany("INSERT INTO locks VALUES (?, ?, ?, ?)",
                                [(rec.persistent_id, o, n, int(x)) for o, n, x in rec.locks])

    def put_many(self, recs: list[OpenRecord]) -> None:
        """One transaction for many records (volume move, relocation, benchmarks)."""
        with self._tx():
            self.db.executemany(_INSERT, [[getattr(r, k) for k in _FIELDS] for r in recs])
            self.db.executemany("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)",
                                [(r.persistent_id, o, n, int(x)) for r in recs for o, n, x in r.locks])

    def update(self, persistent_id: int, **cols) -> None:
        bad = set(cols) - set(_FIELDS)
        if bad:
            raise StoreError(f"unknown columns {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self._tx():
            self.db.execute(f"UPDATE opens SET {sets} WHERE persistent_id = ?", [*cols.values(), persistent_id])

    def add_lock(self, persistent_id: int, offset: int, length: int, exclusive: bool) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)",
                            (persistent_id, offset, length, int(exclusive)))

    def remove_lock(self, persistent_id: int, offset: int, length: int) -> None:
        with self._tx():
            self.db.execute("DELETE FROM locks WHERE persistent_id = ? AND offset = ? AND length = ?",
                            (persistent_id, offset, length))

    def delete(self, persistent_id: int) -> None:
        with self._tx():
            self.db.execute("DELETE FROM opens WHERE persistent_id = ?", (persistent_id,))

    def delete_many(self, persistent_ids) -> None:
        """One transaction (opens whose reconnect window ended together)."""
        with self._tx():
            self.db.executemany("DELETE FROM opens WHERE persistent_id = ?", [(p,) for p in persistent_ids])

    def mark_all_disconnected(self, now: float | None = None) -> int:
        """On start/takeover: every open in the store is disconnected with a fresh window."""
        with self._tx():
            cur = self.db.execute("UPDATE opens SET disconnected_at = ?", (now or time.time(),))
        return cur.rowcount

    # ---- reads
    def load_all(self) -> list[StoredOpen]:
        db = self.db
        locks: dict[int, list] = {}
        for pid, off, ln, ex in db.execute("SELECT persistent_id, offset, length, exclusive FROM locks"):
            locks.setdefault(pid, []).append((off, ln, bool(ex)))
        make = StoredOpen._make
        none = ()
        return [make((*row, locks.get(row[0], none))) for row in db.execute(f"SELECT {_COLS} FROM opens")]

    def load_index(self) -> list[tuple]:
        """Start-up: one tuple per open with the INDEX_COLUMNS, in persistent-id order."""
        from .pending import gc_paused
        with gc_paused():
            return self.db.execute(_INDEX_SELECT + " ORDER BY persistent_id").fetchall()

    def get(self, persistent_id: int) -> OpenRecord | None:
        for rec in self._select("WHERE persistent_id = ?", (persistent_id,)):
            return rec
        return None

    def _select(self, where: str, args) -> list[OpenRecord]:
        out = []
        for row in self.db.execute(f"SELECT {_COLS} FROM opens {where}", args):
            out.append(_from_row(row, [(o, n, bool(x)) for o, n, x in self.db.execute(
                "SELECT offset, length, exclusive FROM locks WHERE persistent_id = ?", (row[0],))]))
        return out

    def max_persistent_id(self) -> int:
        row = self.db.execute("SELECT MAX(persistent_id) FROM opens").fetchone()
        return row[0] or 0

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM opens").fetchone()[0]

    def close(self) -> None:
        self.db.close()
