"""Stored persistent opens come back lazily (smbnd.pending): a restarted server indexes the rows of
its handle stores and rebuilds an open only when something can see it. With real clients
(smbprotocol) and a server SIGKILLed and started again on a store that also holds thousands of
rows written directly (as bench/store_load.py), everything behaves as if every row had been
rebuilt at start:

* other clients' CREATEs of a file with a pending open get STATUS_FILE_NOT_AVAILABLE (MS-SMB2
  3.3.5.9), the owner reclaims with DH2C (3.3.5.9.12) and gets its lease and lock back;
* a new open of the owner with the same lease key shares the stored lease (3.3.5.9.8);
* a DH2Q with the CreateGuid of a pending open fails with STATUS_DUPLICATE_OBJECTID (3.3.5.9.10);
* an AppInstanceId closes a pending open of another client (3.3.5.9.13);
* the windows end in one batch (3.3.2.2): the rows leave the store and the files are free;
* status counts and listings include pending rows; release_lif keeps their rows.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

from durable_client import H, LEASE, LOCK_EXCLUSIVE, LOCK_FAIL_IMMEDIATELY, PERSISTENT, R, W, Cli, dh2c, dh2q, lease_v2
from smbnd import status as st
from smbnd.handlestore import HandleStore, OpenRecord
from smbnd_server import SmbndServer, free_port
from test_replay_appinstance import app_id

FILE_WRITE_THROUGH = 0x2


def _crash(srv: SmbndServer) -> None:
    os.kill(srv.proc.pid, signal.SIGKILL)      # our own child, by PID
    srv.proc.wait(10)
    srv._log.close()


def _store(srv: SmbndServer) -> str:
    return os.path.join(srv.state_dir, "ca.handles.sqlite")


def _fill(vol: str, store: str, n: int, timeout_ms: int, first_pid: int, sub: str = "bulk",
          client_guid: bytes | None = None, create_guid: bytes | None = None) -> list[str]:
    """n disconnected persistent opens of other clients, real files behind them, an RWH lease each,
    every tenth with a lock (as bench/takeover.py). Returns their share-relative names."""
    os.makedirs(os.path.join(vol, sub), exist_ok=True)
    recs, names = [], []
    for i in range(n):
        rel = f"{sub}\\f{i}.bin"
        host = os.path.join(vol, sub, f"f{i}.bin")
        with open(host, "wb") as f:
            f.write(b"x" * 16)
        stt = os.stat(host)
        recs.append(OpenRecord(persistent_id=first_pid + i, share="ca", path=rel, is_directory=False,
                               create_guid=create_guid if (create_guid and i == 0) else os.urandom(16),
                               client_guid=client_guid if (client_guid and i == 0) else os.urandom(16),
                               user="demo", domain="", desired_access=0x12019F, share_access=7,
                               create_options=0x40, durable_timeout_ms=timeout_ms, oplock_level=0xFF,
                               lease_key=os.urandom(16), lease_state=7, lease_epoch=1, lease_version=2,
                               file_dev=stt.st_dev, file_ino=stt.st_ino,
                               locks=[(0, 16, True)] if i % 10 == 0 else []))
        names.append(rel)
    s = HandleStore(store)
    s.put_many(recs)
    s.close()
    return names


def _persistent(c: Cli, fn: str, guid: bytes, key: bytes, timeout_ms: int = 0, extra=()):
    r = c.create(fn, [dh2q(guid, timeout_ms, persistent=True), lease_v2(key, R | W | H), *extra], oplock=LEASE,
                 share=7, options=FILE_WRITE_THROUGH)
    assert r.ok and r.dh2q()[1] == PERSISTENT, hex(r.status)
    return r


def test_thousands_of_pending_rows_behave_as_restored_opens(tmp_path):
    port = free_port()
    srv = SmbndServer(root=str(tmp_path), port=port).start()
    cg = uuid.uuid4()
    fn, g1, g2, key = "shared.vhdx", os.urandom(16), os.urandom(16), os.urandom(16)
    a = Cli(srv.host, port, "ca", guid=cg)
    r1 = _persistent(a, fn, g1, key)
    assert r1.open.write(b"payload", 0, write_through=True) == 7
    assert a.lock(r1.file_id, 0, 4096, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    r2 = _persistent(a, fn, g2, key)                   # a second open under the same lease
    stored_cg = HandleStore(_store(srv)).get(int.from_bytes(r1.file_id[:8], "little")).client_guid
    _crash(srv)
    a.drop()
    dup_guid = os.urandom(16)
    names = _fill(srv.paths["ca"], _store(srv), 5000, 300_000, 1 << 50, client_guid=stored_cg,
                  create_guid=dup_guid)
    srv2 = SmbndServer(root=str(tmp_path), port=port).start()
    b = a2 = None
    try:
        assert "5002 persistent/resilient opens loaded disconnected" in srv2.log()
        b = Cli(srv2.host, port, "ca")
        a2 = Cli(srv2.host, port, "ca", guid=cg)
        # the owner's lease key on another file: already in use (3.3.5.9.8), found through the lease
        other = a2.create("elsewhere.bin", [lease_v2(key, R | W | H)], oplock=LEASE, share=7)
        assert other.status == st.STATUS_INVALID_PARAMETER, hex(other.status)
        # a DH2Q reusing the CreateGuid of the owner's pending open (3.3.5.9.10)
        dup = a2.create("other.bin", [dh2q(dup_guid, 0, persistent=True)], share=7)
        assert dup.status == st.STATUS_DUPLICATE_OBJECTID, hex(dup.status)
        for name in (names[1], names[4321], fn):      # pending rows: rebuilt when their file is opened
            assert b.create(name, access=0x80, share=7).status == st.STATUS_FILE_NOT_AVAILABLE, name
        # the owner opens the file again with its lease key: let through, the stored lease shared
        r3 = a2.create(fn, [lease_v2(key, R | W | H)], oplock=LEASE, share=7)
        assert r3.ok and r3.lease()[:2] == (key, R | W | H), hex(r3.status)
        # and reclaims both stored opens, the lease and the lock with them
        back = []
        for r, g in ((r1, g1), (r2, g2)):
            rr = a2.create(fn, [dh2c(r.file_id, g, persistent=True), lease_v2(key, 0)])
            assert rr.ok and rr.lease()[:2] == (key, R | W | H), hex(rr.status)
            back.append(rr)
        assert a2.lock(r3.file_id, 0, 4096, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == st.STATUS_LOCK_NOT_GRANTED
        assert back[0].open.read(0, 7) == b"payload"     # through the lock's own handle
        # the rows never looked at are still in the store, untouched; one was never rebuilt at all
        s = HandleStore(_store(srv2))
        assert s.count() == 5002
        assert s.get((1 << 50) + 17).lease_state == 7
    finally:
        for c in (a2, b):
            if c is not None:
                c.close()
        srv2.stop()
    assert "Traceback" not in srv2.log(), srv2.log()[-3000:]


def test_pending_rows_expire_together_and_free_their_files(tmp_path):
    port = free_port()
    srv = SmbndServer(root=str(tmp_path), port=port).start()
    a = Cli(srv.host, port, "ca")
    _persistent(a, "long.bin", os.urandom(16), os.urandom(16), timeout_ms=300_000)
    _crash(srv)
    a.drop()
    short = _fill(srv.paths["ca"], _store(srv), 1000, 2000, 1 << 50, sub="short")
    t0 = time.monotonic()
    srv2 = SmbndServer(root=str(tmp_path), port=port).start()
    b = Cli(srv2.host, port, "ca")
    try:
        assert b.create(short[3], share=7).status == st.STATUS_FILE_NOT_AVAILABLE   # now rebuilt, own timer
        while time.monotonic() - t0 < 15 and HandleStore(_store(srv2)).count() > 1:
            time.sleep(0.2)
        assert time.monotonic() - t0 >= 1.5                     # not before the 2 s window ended
        assert HandleStore(_store(srv2)).count() == 1            # only the 300 s open is left
        for name in (short[3], short[500], short[999]):
            r = b.create(name, [lease_v2(os.urandom(16), R | W | H)], oplock=LEASE, share=7)
            assert r.ok and r.lease()[1] == R | W | H, name    # the old leases went with the opens
            assert b.lock(r.file_id, 0, 16, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0   # and the locks
        assert b.create("long.bin", share=7).status == st.STATUS_FILE_NOT_AVAILABLE
    finally:
        b.close()
        srv2.stop()
    assert "reconnect window of 999 restored opens" in srv2.log()


def test_app_instance_closes_a_pending_open(tmp_path):
    port = free_port()
    srv = SmbndServer(root=str(tmp_path), port=port).start()
    cg, aid, g = uuid.uuid4(), uuid.uuid4().bytes, os.urandom(16)
    a = Cli(srv.host, port, "ca", guid=cg)
    r = _persistent(a, "app.vhdx", g, os.urandom(16), extra=[app_id(aid)])
    _crash(srv)
    a.drop()
    _fill(srv.paths["ca"], _store(srv), 200, 300_000, 1 << 50)
    srv2 = SmbndServer(root=str(tmp_path), port=port).start()
    b = Cli(srv2.host, port, "ca")
    a2 = Cli(srv2.host, port, "ca", guid=cg)
    try:
        assert b.create("app.vhdx", [app_id(aid)], share=7).ok    # the new instance closes it
        assert a2.create("app.vhdx", [dh2c(r.file_id, g, persistent=True), lease_v2(os.urandom(16), 0)]) \
            .status == st.STATUS_OBJECT_NAME_NOT_FOUND
    finally:
        for c in (a2, b):
            c.close()
        srv2.stop()


def test_counts_listing_release_and_dropped_rows(tmp_path):
    """In-process: status counts and the disconnected listing see pending rows; a row whose file
    is gone is dropped when rebuilt; release_lif forgets pending rows but keeps them in the store,
    host_lif loads them again."""
    from smbnd.castore import store_path
    from smbnd.config import ServerConfig, ShareConfig
    from smbnd.server import Server

    vol = str(tmp_path / "vol")
    os.makedirs(vol)
    cfg = ServerConfig(shares=[ShareConfig(name="ca", path=vol, ca=True)], state_dir=str(tmp_path / "state"),
                       users={"demo": "x"})
    path = store_path(cfg, "ca", "lifx")
    HandleStore(path, volume=vol).close()
    names = _fill(vol, path, 300, 300_000, 1 << 50)
    os.unlink(os.path.join(vol, *names[7].split("\\")))      # its file is gone

    async def run():
        srv = Server(cfg)
        assert srv.open_counts()["persistent"] == 0
        assert srv.host_lif("lifx") == 300
        assert srv.open_counts() == {"persistent": 300, "durable": 0, "plain": 0}
        listing = srv.disconnected(limit=1000)
        assert len(listing) == 300 and listing[0]["lif"] == "lifx" and 299 < listing[0]["remaining_s"] <= 300
        assert not srv.durable.by_pid                          # nothing rebuilt yet
        assert srv.durable.pending.lookup_pid((1 << 50) + 7) is None    # file gone: dropped
        assert HandleStore(path).get((1 << 50) + 7) is None
        o = srv.durable.pending.lookup_pid((1 << 50) + 8)
        assert o is not None and o.dh.disconnected and o.lease is not None and o.lif == "lifx"
        assert 299 < o.dh.deadline - time.monotonic() <= 300     # the window of the load, not a new one
        assert srv.open_counts()["persistent"] == 299
        assert srv.release_lif("lifx") == 299
        assert srv.open_counts()["persistent"] == 0 and not srv.files.by_key and not srv.oplocks.leases.by_key
        assert HandleStore(path).count() == 299                 # kept for the next owner
        assert srv.host_lif("lifx") == 299
        assert srv.open_counts()["persistent"] == 299
    asyncio.run(run())
