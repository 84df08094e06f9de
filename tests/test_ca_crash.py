"""Crash of the server process under a persistent handle (continuously available share).

A client opens a file on the CA share with a persistent handle (DH2Q PERSISTENT) and an RWH lease
(v2), writes with write-through and holds a byte-range lock; the server is SIGKILLed and started
again on the same address and state directory. Until the owner reclaims the open (new TCP
connection, session, tree connect, DH2C with the same FileId and CreateGuid), other clients get
STATUS_FILE_NOT_AVAILABLE (MS-SMB2 3.3.5.9); the owner gets its handle, lease and lock back and
every acknowledged byte reads back. If the owner never comes back, the open is closed when the
reconnect window ends (3.3.2.2) and the file is available again.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

from durable_client import (H, LEASE, LOCK_EXCLUSIVE, LOCK_FAIL_IMMEDIATELY, LOCK_UNLOCK, PERSISTENT, R, W, Cli,
                            FILE_OPENED, dh2c, dh2q, lease_v2)
from smbnd import status as st
from smbnd.handlestore import HandleStore
from smbnd_server import SmbndServer, free_port

CHUNK = 64 * 1024
FILE_WRITE_THROUGH = 0x2


def _start(root, port) -> SmbndServer:
    return SmbndServer(root=str(root), port=port).start()


def _crash(srv: SmbndServer) -> None:
    os.kill(srv.proc.pid, signal.SIGKILL)      # our own child, by PID
    srv.proc.wait(10)
    srv._log.close()


def _open_persistent(a: Cli, fn: str, guid: bytes, key: bytes, timeout_ms: int = 0):
    r = a.create(fn, [dh2q(guid, timeout_ms, persistent=True), lease_v2(key, R | W | H)], oplock=LEASE,
                 share=7, options=FILE_WRITE_THROUGH)
    assert r.ok, hex(r.status)
    assert r.dh2q()[1] == PERSISTENT and r.lease()[1] == R | W | H
    return r


def test_persistent_handle_survives_server_crash(tmp_path):
    port = free_port()
    srv = _start(tmp_path, port)
    fn, guid, key = "vm-disk.vhdx", os.urandom(16), os.urandom(16)
    client_guid = uuid.uuid4()
    a = Cli(srv.host, port, "ca", guid=client_guid)
    r = _open_persistent(a, fn, guid, key)
    blocks = [os.urandom(CHUNK) for _ in range(8)]
    for i, b in enumerate(blocks):
        assert r.open.write(b, i * CHUNK, write_through=True) == CHUNK   # acknowledged = on disk
    assert a.lock(r.file_id, 0, 4096, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    # the grant and the lock are in the store (outside the share) before the responses
    store = os.path.join(tmp_path, "state", "ca.handles.sqlite")
    assert os.path.exists(store) and not store.startswith(srv.paths["ca"] + os.sep)

    _crash(srv)
    a.drop()
    srv2 = _start(tmp_path, port)
    b = None
    a2 = None
    try:
        b = Cli(srv2.host, port, "ca")
        assert b.create(fn, share=7).status == st.STATUS_FILE_NOT_AVAILABLE
        assert b.create(fn, access=0x80, share=7).status == st.STATUS_FILE_NOT_AVAILABLE   # even stat opens

        a2 = Cli(srv2.host, port, "ca", guid=client_guid)
        # a plain open by the owner is no reclaim either
        assert a2.create(fn, share=7).status == st.STATUS_FILE_NOT_AVAILABLE
        r2 = a2.create(fn, [dh2c(r.file_id, guid, persistent=True), lease_v2(key, 0)])
        assert r2.ok, hex(r2.status)
        assert r2.action == FILE_OPENED and r2.file_id[:8] == r.file_id[:8]
        assert r2.oplock == LEASE and r2.lease()[:2] == (key, R | W | H)
        assert r2.eof == len(blocks) * CHUNK
        for i, blk in enumerate(blocks):
            assert r2.open.read(i * CHUNK, CHUNK) == blk
        # the lock came back with the open: held (a second exclusive lock of it conflicts)
        assert a2.lock(r2.file_id, 0, 4096, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == st.STATUS_LOCK_NOT_GRANTED
        assert a2.lock(r2.file_id, 0, 4096, LOCK_UNLOCK) == 0
        assert a2.lock(r2.file_id, 0, 4096, LOCK_UNLOCK) == st.STATUS_RANGE_NOT_LOCKED
        # the handle keeps working and the file is available to others again
        assert r2.open.write(b"after", len(blocks) * CHUNK, write_through=True) == 5
        assert b.create(fn, access=0x80, share=7).ok
        # a second crash: the reclaimed open is still persistent
        _crash(srv2)
        a2.drop()
        b.drop()
        srv3 = _start(tmp_path, port)
        try:
            a3 = Cli(srv3.host, port, "ca", guid=client_guid)
            r3 = a3.create(fn, [dh2c(r2.file_id, guid, persistent=True), lease_v2(key, 0)])
            assert r3.ok and r3.eof == len(blocks) * CHUNK + 5
            assert r3.open.read(len(blocks) * CHUNK, 5) == b"after"
            r3.open.close()
            a3.close()
            rows = HandleStore(store).load_all()
            assert rows == []           # closed: gone from the store
        finally:
            srv3.stop()
    finally:
        for c in (a2, b):
            if c is not None:
                c.close()
        srv2.stop()
        assert "Traceback" not in srv2.log(), srv2.log()[-3000:]


def test_owner_never_returns_window_expires(tmp_path):
    port = free_port()
    srv = _start(tmp_path, port)
    fn, guid, key = "abandoned.bin", os.urandom(16), os.urandom(16)
    a = Cli(srv.host, port, "ca")
    r = _open_persistent(a, fn, guid, key, timeout_ms=2000)
    assert r.dh2q() == (2000, PERSISTENT)
    assert r.open.write(b"z" * 100, 0, write_through=True) == 100
    assert a.lock(r.file_id, 0, 100, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    _crash(srv)
    a.drop()
    t0 = time.monotonic()
    srv2 = _start(tmp_path, port)
    b = Cli(srv2.host, port, "ca")
    try:
        assert b.create(fn, share=7).status == st.STATUS_FILE_NOT_AVAILABLE
        deadline = t0 + 15
        k2 = os.urandom(16)
        while True:
            r2 = b.create(fn, [lease_v2(k2, R | W | H)], oplock=LEASE, share=7)
            if r2.ok or time.monotonic() > deadline:
                break
            assert r2.status == st.STATUS_FILE_NOT_AVAILABLE
            time.sleep(0.25)
        assert r2.ok, hex(r2.status)
        assert time.monotonic() - t0 >= 1.5          # not before the (fresh) 2 s window ended
        assert r2.lease()[:2] == (k2, R | W | H)      # the old lease is gone with the open
        assert r2.open.read(0, 100) == b"z" * 100    # the data stayed
        assert b.lock(r2.file_id, 0, 100, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0   # lock released
        assert HandleStore(os.path.join(tmp_path, "state", "ca.handles.sqlite")).load_all() == []
    finally:
        b.close()
        srv2.stop()
