"""State of durable and persistent opens that changes without the client's word, with real clients
(smbprotocol) and a server killed with SIGKILL and started again on the same state directory.

* A lease break the holder never acknowledges ends at the break timeout (MS-SMB2 3.3.2.5), and a
  plain open with the same lease key upgrades the lease (3.3.5.9.8): the changed lease state is
  what a restarted server gives back on reclaim (3.3.5.9.12).
* A directory with a persistent open below it cannot be renamed (MS-FSA 2.1.5.15.12 /
  smbtorture smb2.rename.rename_dir_openfile: STATUS_ACCESS_DENIED), also while the open is
  disconnected and after a restart: the stored path stays the path of the file.
* Durable v1 opens (DHnQ) have their own reconnect window (3.3.5.9.6, <Windows: 16 minutes>),
  config durable_v1_timeout.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

from durable_client import (BATCH, LEASE, PERSISTENT, H, R, W, Cli, dh2c, dh2q, dhnc, dhnq, lease_v2)
from smbnd import status as st
from smbnd.config import ServerConfig, apply_doc
from smbnd_server import SmbndServer, free_port
from test_oplock_lease import NOTIFY_MID, BreakSink

DELETE, READ_ATTRIBUTES, SYNCHRONIZE = 0x10000, 0x80, 0x100000
FILE_DIRECTORY_FILE = 0x1


def _start(root, port, *args) -> SmbndServer:
    return SmbndServer(*args, root=str(root), port=port).start()


def _crash(srv: SmbndServer) -> None:
    os.kill(srv.proc.pid, signal.SIGKILL)      # our own child, by PID
    srv.proc.wait(10)
    srv._log.close()


def _config(tmp_path, text: str) -> str:
    p = tmp_path / "smbnd.toml"
    p.write_text("[server]\n" + text)
    return str(p)


def test_unacknowledged_lease_break_reaches_the_store(tmp_path):
    cfg = _config(tmp_path, "oplock_break_timeout = 1\n")
    port = free_port()
    srv = _start(tmp_path, port, "--config", cfg)
    fn, guid, key, cg = "leased.bin", os.urandom(16), os.urandom(16), uuid.uuid4()
    a = Cli(srv.host, port, "ca", guid=cg)
    a.conn.outstanding_requests[NOTIFY_MID] = sink = BreakSink()    # takes the break, never acks
    b = None
    try:
        r = a.create(fn, [dh2q(guid, 0, persistent=True), lease_v2(key, R | W | H)], oplock=LEASE, share=7)
        assert r.ok and r.dh2q()[1] == PERSISTENT and r.lease()[1] == R | W | H
        epoch = r.lease()[3]
        assert r.open.write(b"cached", 0, write_through=True) == 6
        b = Cli(srv.host, port, "ca")
        t0 = time.monotonic()
        assert b.create(fn, share=7).ok         # breaks RWH -> RH; nobody acknowledges
        assert 0.8 < time.monotonic() - t0 < 10
        assert sink.bodies.get(timeout=5)       # the break was sent
    finally:
        _crash(srv)
        a.drop()
        if b is not None:
            b.drop()
    srv2 = _start(tmp_path, port, "--config", cfg)
    a2 = Cli(srv2.host, port, "ca", guid=cg)
    try:
        r2 = a2.create(fn, [dh2c(r.file_id, guid, persistent=True), lease_v2(key, 0)])
        assert r2.ok, hex(r2.status)
        _key, state, _flags, epoch2 = r2.lease()
        assert state == 0, state                # 3.3.2.5: the break timed out to none, not RWH
        assert epoch2 == (epoch + 1) & 0xFFFF   # the break's epoch
        assert r2.open.read(0, 6) == b"cached"
        r2.open.close()
    finally:
        a2.close()
        srv2.stop()
    assert "Traceback" not in srv.log() + srv2.log()


def test_lease_upgrade_by_a_plain_open_reaches_the_store(tmp_path):
    """3.3.5.9.8: a second open of the client with the same lease key (no durable context) upgrades
    the lease the persistent open holds; the restarted server gives the upgraded state back."""
    port = free_port()
    srv = _start(tmp_path, port)
    fn, guid, key, cg = "upgraded.bin", os.urandom(16), os.urandom(16), uuid.uuid4()
    a = Cli(srv.host, port, "ca", guid=cg)
    try:
        r = a.create(fn, [dh2q(guid, 0, persistent=True), lease_v2(key, R | H)], oplock=LEASE, share=7)
        assert r.ok and r.dh2q()[1] == PERSISTENT and r.lease()[1] == R | H
        up = a.create(fn, [lease_v2(key, R | W | H)], oplock=LEASE, share=7)
        assert up.ok and up.lease()[1] == R | W | H
    finally:
        _crash(srv)
        a.drop()
    srv2 = _start(tmp_path, port)
    a2 = Cli(srv2.host, port, "ca", guid=cg)
    try:
        r2 = a2.create(fn, [dh2c(r.file_id, guid, persistent=True), lease_v2(key, 0)])
        assert r2.ok, hex(r2.status)
        assert r2.lease()[1] == R | W | H
        r2.open.close()
    finally:
        a2.close()
        srv2.stop()
    assert "Traceback" not in srv.log() + srv2.log()


def test_parent_of_persistent_open_not_renamed_across_restart(tmp_path):
    port = free_port()
    srv = _start(tmp_path, port)
    os.makedirs(os.path.join(srv.paths["ca"], "dir"))
    fn, guid, cg = "dir\\a.txt", os.urandom(16), uuid.uuid4()
    dir_access = DELETE | READ_ATTRIBUTES | SYNCHRONIZE
    a = Cli(srv.host, port, "ca", guid=cg)
    b = Cli(srv.host, port, "ca")
    try:
        r = a.create(fn, [dh2q(guid, 0, persistent=True)], share=7)
        assert r.ok and r.dh2q()[1] == PERSISTENT
        assert r.open.write(b"below", 0, write_through=True) == 5
        d = b.create("dir", access=dir_access, share=7, options=FILE_DIRECTORY_FILE)
        assert d.ok
        # MS-FSA 2.1.5.15.12: a directory with an open below cannot be renamed (Windows and
        # smbtorture smb2.rename.rename_dir_openfile), connected or disconnected
        assert b.rename(d.file_id, "dir2") == st.STATUS_ACCESS_DENIED
        a.drop()
        time.sleep(0.2)
        assert b.rename(d.file_id, "dir2") == st.STATUS_ACCESS_DENIED
    finally:
        _crash(srv)
        a.drop()
        b.drop()
    srv2 = _start(tmp_path, port)
    b2 = Cli(srv2.host, port, "ca")
    a2 = None
    try:
        d2 = b2.create("dir", access=dir_access, share=7, options=FILE_DIRECTORY_FILE)
        assert d2.ok
        assert b2.rename(d2.file_id, "dir2") == st.STATUS_ACCESS_DENIED    # the restored open counts
        a2 = Cli(srv2.host, port, "ca", guid=cg)
        r2 = a2.create(fn, [dh2c(r.file_id, guid, persistent=True)])
        assert r2.ok, hex(r2.status)
        assert r2.open.read(0, 5) == b"below"
        r2.open.close()
        assert b2.rename(d2.file_id, "dir2") == 0                        # nothing below any more
        assert os.path.exists(os.path.join(srv2.paths["ca"], "dir2", "a.txt"))
    finally:
        b2.close()
        if a2 is not None:
            a2.close()
        srv2.stop()
    assert "Traceback" not in srv2.log()


def test_durable_v1_window_is_its_own_setting(tmp_path):
    assert ServerConfig().durable_v1_timeout == 960
    assert apply_doc({"server": {"durable_v1_timeout": 5}}, ServerConfig()).durable_v1_timeout == 5
    cfg = _config(tmp_path, "durable_timeout = 60\ndurable_v1_timeout = 1\n")
    with SmbndServer("--config", cfg) as srv:
        a = Cli(srv.host, srv.port, "data")
        f1, f2, guid = "v1.bin", "v2.bin", os.urandom(16)
        r1 = a.create(f1, [dhnq()], oplock=BATCH)
        r2 = a.create(f2, [dh2q(guid)], oplock=BATCH)
        assert r1.ok and r1.oplock == BATCH and r2.dh2q() == (60_000, 0)
        a.drop()
        time.sleep(2)
        c = Cli(srv.host, srv.port, "data", guid=a.guid)
        try:
            assert c.create(f1, [dhnc(r1.file_id)]).status == st.STATUS_OBJECT_NAME_NOT_FOUND   # expired
            assert c.create(f2, [dh2c(r2.file_id, guid)]).ok       # the v2 window is still open
        finally:
            c.close()
        assert "Traceback" not in srv.log()
