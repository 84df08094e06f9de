"""The persistent-handle store: durable, reopenable by another process, versioned."""
import os
import sqlite3
import subprocess
import sys

import pytest

from smbnd.handlestore import SCHEMA_VERSION, HandleStore, OpenRecord, StoreError


def rec(pid, **kw):
    base = dict(persistent_id=pid, share="vol1", path=f"dir\\f{pid}.vhdx", is_directory=False,
                create_guid=os.urandom(16), client_guid=b"c" * 16, user="demo", domain="SMBND",
                desired_access=0x12019F, share_access=7, create_options=0x40)
    base.update(kw)
    return OpenRecord(**base)


def test_roundtrip_with_locks_and_lease(tmp_path):
    s = HandleStore(str(tmp_path / "h.sqlite"), "vol1")
    r = rec(5, lease_key=b"k" * 16, lease_state=7, lease_epoch=3, lease_version=2, locks=[(0, 10, True), (100, 1, False)])
    s.put(r)
    s.add_lock(5, 200, 5, False)
    s.remove_lock(5, 0, 10)
    s.update(5, lease_state=3, lease_epoch=4)
    got = s.get(5)
    assert got.lease_state == 3 and got.lease_epoch == 4 and got.lease_key == b"k" * 16
    assert sorted(got.locks) == [(100, 1, False), (200, 5, False)]
    (row,) = s.load_all()
    assert sorted(row.locks) == sorted(got.locks) and row.lease_key == b"k" * 16
    assert got.create_guid == r.create_guid and got.is_persistent is True or got.is_persistent == 1


def test_another_process_sees_committed_grants(tmp_path):
    s = HandleStore(str(tmp_path / "h.sqlite"), "vol1")
    for i in range(1, 4):
        s.put(rec(i))
    s.delete(2)
    code = ("import sys; sys.path.insert(0, %r); from smbnd.handlestore import HandleStore; "
            "s = HandleStore(%r + '/h.sqlite'); print(sorted(r.persistent_id for r in s.load_all()))") % (os.getcwd(), str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[1, 3]"


def test_wal_and_full_sync(tmp_path):
    s = HandleStore(str(tmp_path / "h.sqlite"))
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL


def test_mark_all_disconnected_and_foreign_schema(tmp_path):
    s = HandleStore(str(tmp_path / "h.sqlite"))
    s.put(rec(1))
    s.put(rec(2))
    assert s.mark_all_disconnected(123.0) == 2
    assert {r.disconnected_at for r in s.load_all()} == {123.0}
    s.close()
    db = sqlite3.connect(str(tmp_path / "h.sqlite"))
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError):
        HandleStore(str(tmp_path / "h.sqlite"))


def test_unknown_column_rejected(tmp_path):
    s = HandleStore(str(tmp_path / "h.sqlite"))
    s.put(rec(1))
    with pytest.raises(StoreError):
        s.update(1, **{"path = 'x'; --": 1})
