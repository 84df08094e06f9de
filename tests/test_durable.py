"""Durable (v1, v2), persistent and resilient handles with real clients (smbprotocol), and the
smbtorture durable suites against a plain and a continuously available share (torture marker).

MS-SMB2 3.3.5.9.6 / 3.3.5.9.7 / 3.3.5.9.10 / 3.3.5.9.12 (grant and reconnect), 3.3.7.1 (the open
outlives its connection), 3.3.5.9 (STATUS_FILE_NOT_AVAILABLE), 3.3.5.15.9 (resiliency).
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from durable_client import (BATCH, DH2Q, DHNQ, FILE_OPENED, H, LEASE, LEVEL_II,
                            LOCK_EXCLUSIVE, LOCK_FAIL_IMMEDIATELY, LOCK_UNLOCK, PERSISTENT, R, W, Cli,
                            dh2c, dh2q, dhnc, dhnq, lease_v1, lease_v2)
from smbnd import status as st
from smbnd.handlestore import HandleStore
from smbnd_server import PASSWORD2, USER2, SmbndServer

FSCTL_LMR_REQUEST_RESILIENCY = 0x001401D4
CAP_PERSISTENT_HANDLES = 0x10


@pytest.fixture(scope="module")
def server():
    with SmbndServer() as s:
        yield s
        assert "Traceback" not in s.log(), s.log()[-4000:]


def cli(server, share="data", **kw) -> Cli:
    return Cli(server.host, server.port, share, **kw)


def name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}.bin"


def test_capabilities(server):
    c = cli(server, "ca")
    try:
        assert c.server_caps & CAP_PERSISTENT_HANDLES   # a CA share exists (3.3.5.4)
        assert c.is_ca
    finally:
        c.close()
    d = cli(server, "data")
    try:
        assert not d.is_ca
    finally:
        d.close()


def test_v1_needs_batch_or_handle_lease(server):
    c = cli(server)
    try:
        r = c.create(name("v1"), [dhnq()], oplock=LEVEL_II)
        assert r.ok and DHNQ not in r.contexts
        r = c.create(name("v1"), [dhnq()], oplock=BATCH)
        assert r.ok and r.oplock == BATCH and DHNQ in r.contexts
        r = c.create(name("v1"), [dhnq(), lease_v2(os.urandom(16), R | W)], oplock=LEASE)
        assert r.ok and DHNQ not in r.contexts            # no H: not durable
        r = c.create(name("v1"), [dhnq(), lease_v2(os.urandom(16), R | H)], oplock=LEASE)
        assert r.ok and DHNQ in r.contexts
        r = c.create(name("v1"), [dhnq(), lease_v1(os.urandom(16), R | W | H)], oplock=LEASE)
        assert r.ok and DHNQ in r.contexts and r.lease()[1] == R | W | H
    finally:
        c.close()


def test_v2_timeout_negotiation(server):
    c = cli(server)
    try:
        for asked, got in ((0, 60_000), (5_000, 5_000), (999_999_999, 300_000)):
            r = c.create(name("t"), [dh2q(os.urandom(16), asked)], oplock=BATCH)
            assert r.ok and r.dh2q() == (got, 0), (asked, r.dh2q())
    finally:
        c.close()


def test_persistent_only_on_ca_share(server):
    d, c = cli(server, "data"), cli(server, "ca")
    try:
        r = d.create(name("p"), [dh2q(os.urandom(16), 0, persistent=True)], oplock=BATCH)
        assert r.ok and r.dh2q() == (60_000, 0)           # durable, never persistent
        r = d.create(name("p"), [dh2q(os.urandom(16), 0, persistent=True)])
        assert r.ok and r.dh2q() is None                  # no batch / H: nothing
        r = c.create(name("p"), [dh2q(os.urandom(16), 0, persistent=True)])
        assert r.ok and r.dh2q() == (60_000, PERSISTENT)  # CA: no caching needed
    finally:
        d.close()
        c.close()


def test_v1_reconnect_after_connection_loss(server):
    a = cli(server)
    fn = name("v1r")
    r = a.create(fn, [dhnq()], oplock=BATCH)
    assert DHNQ in r.contexts
    r.open.write(b"hello durable", 0)
    a.drop()
    b = cli(server, guid=a.guid)
    try:
        # the path name is ignored for an oplock reconnect (as Windows / Samba)
        r2 = b.create("does-not-matter", [dhnc(r.file_id)])
        assert r2.ok and r2.action == FILE_OPENED and r2.oplock == BATCH and r2.eof == 13
        assert r2.file_id[:8] == r.file_id[:8]
        assert r2.open.read(0, 13) == b"hello durable"
        assert DHNQ not in r2.contexts and DH2Q not in r2.contexts
        # while connected, a second reconnect finds Open.Session set
        assert b.create(fn, [dhnc(r2.file_id)]).status == st.STATUS_OBJECT_NAME_NOT_FOUND
    finally:
        b.close()


def test_logoff_keeps_durable_tree_disconnect_closes(server):
    a = cli(server)
    fn = name("lo")
    r = a.create(fn, [dhnq()], oplock=BATCH)
    assert DHNQ in r.contexts
    a.close()                                   # TREE_DISCONNECT + LOGOFF (smbprotocol)
    b = cli(server, guid=a.guid)
    try:
        # smbprotocol's disconnect disconnects the tree first: the open is gone (3.3.5.8)
        assert b.create(fn, [dhnc(r.file_id)]).status == st.STATUS_OBJECT_NAME_NOT_FOUND
    finally:
        b.close()


def test_reconnect_validation_statuses(server):
    a = cli(server, "ca")
    fn, guid, key = name("val"), os.urandom(16), os.urandom(16)
    r = a.create(fn, [dh2q(guid, 0, persistent=True), lease_v2(key, R | W | H)], oplock=LEASE)
    assert r.ok and r.dh2q() == (60_000, PERSISTENT)
    # same CreateGuid, no replay flag: STATUS_DUPLICATE_OBJECTID (3.3.5.9.10)
    assert a.create(name("dup"), [dh2q(guid)], oplock=BATCH).status == st.STATUS_DUPLICATE_OBJECTID
    # mixed durable contexts: STATUS_INVALID_PARAMETER
    assert a.create(fn, [dhnq(), dh2q(os.urandom(16))], oplock=BATCH).status == st.STATUS_INVALID_PARAMETER
    assert a.create(fn, [dhnc(r.file_id), dh2q(os.urandom(16))]).status == st.STATUS_INVALID_PARAMETER
    assert a.create(fn, [dh2c(r.file_id, guid, True), dhnq()]).status == st.STATUS_INVALID_PARAMETER
    a.drop()
    other = cli(server, "ca")                  # another ClientGuid
    b = cli(server, "ca", guid=a.guid)
    u2 = cli(server, "ca", guid=a.guid, user=USER2, password=PASSWORD2)
    onnf = st.STATUS_OBJECT_NAME_NOT_FOUND
    try:
        assert b.create(fn, [dh2c(os.urandom(16), os.urandom(16), True), lease_v2(key, 0)]).status == onnf
        assert b.create(fn, [dh2c(os.urandom(16), guid, False), lease_v2(key, 0)]).status == onnf  # FileId
        assert b.create(fn, [dh2c(r.file_id, os.urandom(16), True), lease_v2(key, 0)]).status == onnf  # CreateGuid
        assert b.create(fn, [dh2c(r.file_id, guid, False), lease_v2(key, 0)]).status == onnf  # no PERSISTENT flag
        assert b.create(fn, [dh2c(r.file_id, guid, True)]).status == onnf                   # lease missing
        assert b.create(fn, [dh2c(r.file_id, guid, True), lease_v2(os.urandom(16), 0)]).status == onnf
        assert other.create(fn, [dh2c(r.file_id, guid, True), lease_v2(key, 0)]).status == onnf  # ClientGuid
        assert b.create("other-name", [dh2c(r.file_id, guid, True), lease_v2(key, 0)]).status \
            == st.STATUS_INVALID_PARAMETER                                                # lease file name
        assert u2.create(fn, [dh2c(r.file_id, guid, True), lease_v2(key, 0)]).status == st.STATUS_ACCESS_DENIED
        # other openers: the persistent open is disconnected (3.3.5.9)
        assert other.create(fn).status == st.STATUS_FILE_NOT_AVAILABLE
        ok = b.create(fn, [dh2c(r.file_id, guid, True), lease_v2(key, 0)])
        assert ok.ok and ok.oplock == LEASE and ok.lease()[1] == R | W | H
        # reclaimed: the file is available again (a break goes to the reconnected holder)
        o2 = other.create(fn, access=0x80, share=7)      # FILE_READ_ATTRIBUTES: a stat open
        assert o2.ok
    finally:
        for c in (other, b, u2):
            c.close()


def test_durable_closed_when_a_new_open_needs_its_break(server):
    a = cli(server)
    fn = name("brk")
    r = a.create(fn, [dhnq()], oplock=BATCH)
    assert DHNQ in r.contexts
    a.drop()
    b = cli(server)
    try:
        r2 = b.create(fn, [dhnq()], oplock=BATCH)
        assert r2.ok and r2.oplock == BATCH and DHNQ in r2.contexts   # the old one was closed
        c = cli(server, guid=a.guid)
        try:
            assert c.create(fn, [dhnc(r.file_id)]).status == st.STATUS_OBJECT_NAME_NOT_FOUND
        finally:
            c.close()
    finally:
        b.close()


def test_blocked_lock_waiter_granted_when_disconnected_open_goes(server):
    """A blocking LOCK that waits on a lock of a disconnected durable open: the LOCK breaks the
    open's lease (R), which closes it (3.3.4.7), and the waiter gets the range."""
    a = cli(server)
    fn = name("wait")
    r = a.create(fn, [dh2q(os.urandom(16), 30_000), lease_v2(os.urandom(16), R | H)], oplock=LEASE, share=7)
    assert r.dh2q() == (30_000, 0)
    r.open.write(b"w" * 32, 0)
    assert a.lock(r.file_id, 0, 16, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    a.drop()
    b = cli(server)
    try:
        o = b.create(fn, share=7)
        assert o.ok                                   # RH and a shared open coexist: no break
        t0 = time.monotonic()
        assert b.lock(o.file_id, 0, 16, LOCK_EXCLUSIVE) == 0      # blocking: waits, then granted
        assert time.monotonic() - t0 < 10
    finally:
        b.close()


def test_expiry_closes_and_releases_locks(server):
    a = cli(server, "ca")
    fn, guid = name("exp"), os.urandom(16)
    r = a.create(fn, [dh2q(guid, 1000, persistent=True)], share=7)
    assert r.dh2q() == (1000, PERSISTENT)
    r.open.write(b"x" * 100, 0)
    assert a.lock(r.file_id, 0, 10, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    a.drop()
    b = cli(server, "ca")
    try:
        assert b.create(fn).status == st.STATUS_FILE_NOT_AVAILABLE
        time.sleep(1.5)
        r2 = b.create(fn)
        assert r2.ok
        assert b.lock(r2.file_id, 0, 10, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0   # released
        c = cli(server, "ca", guid=a.guid)
        try:
            assert c.create(fn, [dh2c(r.file_id, guid, True)]).status == st.STATUS_OBJECT_NAME_NOT_FOUND
        finally:
            c.close()
    finally:
        b.close()


def test_locks_kept_across_reconnect_and_in_store(server):
    a = cli(server, "ca")
    fn, guid = name("lk"), os.urandom(16)
    r = a.create(fn, [dh2q(guid, 0, persistent=True)], share=7)
    r.open.write(b"y" * 64, 0)
    assert a.lock(r.file_id, 8, 8, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    store = HandleStore(os.path.join(server.state_dir, "ca.handles.sqlite"))
    row = store.get(int.from_bytes(r.file_id[:8], "little"))
    assert row is not None and row.is_persistent and row.locks == [(8, 8, True)] and row.path == fn
    a.drop()
    b = cli(server, "ca", guid=a.guid)
    other = None
    try:
        r2 = b.create(fn, [dh2c(r.file_id, guid, True)])
        assert r2.ok
        other = cli(server, "ca")
        o = other.create(fn, share=7)
        assert o.ok
        assert other.lock(o.file_id, 8, 1, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == st.STATUS_LOCK_NOT_GRANTED
        assert b.lock(r2.file_id, 8, 8, LOCK_UNLOCK) == 0
        assert store.get(row.persistent_id).locks == []
        assert other.lock(o.file_id, 8, 1, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
        r2.open.close()
        assert store.get(row.persistent_id) is None          # closed: the row is gone
    finally:
        b.close()
        if other is not None:
            other.close()
        store.close()


def test_rename_of_persistent_open_follows_in_store(server):
    a = cli(server, "ca")
    fn, guid = name("ren"), os.urandom(16)
    r = a.create(fn, [dh2q(guid, 0, persistent=True)], share=7, access=0x12019F | 0x10000)   # + DELETE
    assert r.dh2q()[1] == PERSISTENT
    assert a.rename(r.file_id, "renamed-" + fn) == 0
    store = HandleStore(os.path.join(server.state_dir, "ca.handles.sqlite"))
    try:
        assert store.get(int.from_bytes(r.file_id[:8], "little")).path == "renamed-" + fn
    finally:
        store.close()
    a.drop()
    b = cli(server, "ca")
    c = cli(server, "ca", guid=a.guid)
    try:
        assert b.create("renamed-" + fn).status == st.STATUS_FILE_NOT_AVAILABLE
        assert c.create("renamed-" + fn, [dh2c(r.file_id, guid, True)]).ok
    finally:
        b.close()
        c.close()


def test_resiliency_fsctl(server):
    a = cli(server)
    fn = name("res")
    r = a.create(fn, share=7)
    req = (300_001).to_bytes(4, "little") + bytes(4)
    assert a.ioctl(FSCTL_LMR_REQUEST_RESILIENCY, r.file_id, req) == st.STATUS_INVALID_PARAMETER
    assert a.ioctl(FSCTL_LMR_REQUEST_RESILIENCY, r.file_id, b"\0\0") == st.STATUS_INVALID_PARAMETER
    assert a.ioctl(FSCTL_LMR_REQUEST_RESILIENCY, r.file_id, (5000).to_bytes(4, "little") + bytes(4)) == 0
    assert a.lock(r.file_id, 0, 4, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    a.drop()
    b = cli(server, guid=a.guid)
    try:
        # a resilient open comes back with DHnC (3.3.5.9.7), its lock with it
        r2 = b.create(fn, [dhnc(r.file_id)])
        assert r2.ok and r2.action == FILE_OPENED
        assert b.lock(r2.file_id, 0, 4, LOCK_UNLOCK) == 0
        # not with DH2C (3.3.5.9.12: neither durable nor persistent)
    finally:
        b.close()


def test_resiliency_not_on_smb202(server):
    from smbprotocol.connection import Dialects
    a = Cli(server.host, server.port, "data", dialect=Dialects.SMB_2_0_2)
    try:
        r = a.create(name("r202"))
        assert a.ioctl(FSCTL_LMR_REQUEST_RESILIENCY, r.file_id, bytes(8)) == st.STATUS_INVALID_DEVICE_REQUEST
    finally:
        a.close()


# --------------------------------------------------------------------------- smbtorture
REPO = Path(__file__).resolve().parents[1]
TORTURE_SUITES = ["smb2.durable-open", "smb2.durable-v2-open", "smb2.durable-v2-delay"]
# everything passes (Samba 4.17 itself: durable-open 22/23, durable-v2-open 14/15, delay 2/2)
TORTURE_EXPECTED = {"smb2.durable-open": 23, "smb2.durable-v2-open": 15, "smb2.durable-v2-delay": 2}


def _torture_available() -> bool:
    from interop.smbtorture.run_torture import SMBTORTURE
    return bool(shutil.which("smbtorture")) or Path(SMBTORTURE).exists()


@pytest.mark.torture
@pytest.mark.timeout(900)
@pytest.mark.parametrize("flags", ["", ":ca"], ids=["plain-share", "ca-share"])
def test_smbtorture_durable_suites(flags, tmp_path):
    """persistent-open-oplock / -lease expect persistence exactly when the share is CA."""
    if not _torture_available():
        pytest.skip("smbtorture not installed")
    from interop.smbtorture.run_torture import run_suite
    from interop.smbtorture.servers import SmbndServer as TortureServer
    srv = TortureServer(workdir=tmp_path, share_flags=flags)
    srv.start()
    try:
        report = []
        for suite in TORTURE_SUITES:
            run = run_suite(suite, srv.host, srv.port, srv.share, *srv.user, *srv.user2, timeout=300)
            passed = sorted(t for t, (res, _) in run.results.items() if res in ("success", "uxsuccess"))
            failed = {t: why for t, (res, why) in run.results.items() if res not in ("success", "uxsuccess",
                                                                                     "skip")}
            report.append(f"{suite}: {run.summary()}")
            assert len(passed) >= TORTURE_EXPECTED[suite], (suite, failed)
        print("\n".join(report))
    finally:
        srv.stop()


@pytest.mark.torture
@pytest.mark.timeout(300)
def test_smbtorture_replay_of_disconnected_persistent_open(tmp_path):
    """smb2.replay.replay5 (CA share): a DH2Q create of a disconnected persistent open without the
    replay flag -> STATUS_DUPLICATE_OBJECTID; replayed -> the original open, persistent."""
    if not _torture_available():
        pytest.skip("smbtorture not installed")
    from interop.smbtorture.run_torture import run_suite
    from interop.smbtorture.servers import SmbndServer as TortureServer
    srv = TortureServer(workdir=tmp_path, share_flags=":ca")
    srv.start()
    try:
        run = run_suite("smb2.replay.replay5", srv.host, srv.port, srv.share, *srv.user, *srv.user2, timeout=120)
        bad = {k: v for k, v in run.results.items() if v[0] not in ("success", "uxsuccess")}
        assert run.results and not bad, bad
    finally:
        srv.stop()


@pytest.mark.torture
@pytest.mark.timeout(600)
def test_smbtorture_session_reconnect(tmp_path):
    if not _torture_available():
        pytest.skip("smbtorture not installed")
    from interop.smbtorture.run_torture import run_suite
    from interop.smbtorture.servers import SmbndServer as TortureServer
    srv = TortureServer(workdir=tmp_path)
    srv.start()
    try:
        for t in ("smb2.session.reconnect1", "smb2.session.reconnect2"):
            run = run_suite(t, srv.host, srv.port, srv.share, *srv.user, *srv.user2, timeout=120)
            bad = {k: v for k, v in run.results.items() if v[0] not in ("success", "uxsuccess")}
            assert run.results and not bad, bad
    finally:
        srv.stop()
