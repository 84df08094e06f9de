"""Replay (MS-SMB2 3.3.5.2.10 ChannelSequence, 3.3.5.9.10 replayed CREATE by CreateGuid, 3.3.5.14
LockSequence across a reconnect) and app instances (3.3.5.9.13 SMB2_CREATE_APP_INSTANCE_ID /
_VERSION), with real smbprotocol clients. The ChannelSequence and the REPLAY_OPERATION flag are
written into the (unsigned) request headers on their way out."""
import contextlib
import os
import struct
import time
import uuid

import pytest
from smbprotocol.connection import Dialects
from smbprotocol.exceptions import Cancelled
from smbprotocol.header import NtStatus

from durable_client import BATCH, LEASE, NONE, RW, SHARE_ALL, RawRequest, dh2c, dh2q, lease_v2
from durable_client import Cli as _Cli
from test_oplock_lease import NOTIFY_MID, BreakSink
from smbnd import status as st
from smbnd.wire import create as cr

REPLAY = 0x20000000                          # SMB2_FLAGS_REPLAY_OPERATION (2.2.1.2)
WRITE, LOCK, IOCTL, CHANGE_NOTIFY, QUERY_INFO, SET_INFO = 0x09, 0x0A, 0x0B, 0x0F, 0x10, 0x11
READ = 0x08
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
FILE_CREATED = 2
DIR_ACCESS = 0x00100081                      # LIST_DIRECTORY | READ_ATTRIBUTES | SYNCHRONIZE
FILE_DIRECTORY_FILE = 0x1


def Cli(*a, **kw) -> _Cli:
    """A durable_client.Cli that swallows oplock/lease break notifications (MessageId -1)."""
    c = _Cli(*a, **kw)
    c.sink = BreakSink()
    c.conn.outstanding_requests[NOTIFY_MID] = c.sink
    return c


@pytest.fixture
def cli(server):
    c = Cli(server.host, server.port, "data", dialect=Dialects.SMB_3_0_2)
    yield c
    c.close()


@contextlib.contextmanager
def header(c: Cli, csn: int = 0, replay: bool = False):
    """Send c's requests with ChannelSequence `csn` (the first 2 bytes of Status, 2.2.1.2) and
    optionally SMB2_FLAGS_REPLAY_OPERATION."""
    send = c.conn.transport.send

    def patched(data):
        b = bytearray(data)
        if b[:4] == b"\xfeSMB":
            struct.pack_into("<H", b, 8, csn)
            if replay:
                struct.pack_into("<I", b, 16, struct.unpack_from("<I", b, 16)[0] | REPLAY)
        send(bytes(b))
    c.conn.transport.send = patched
    try:
        yield
    finally:
        c.conn.transport.send = send


def write(c, fid, data=b"x" * 16, offset=0) -> int:
    return c.raw(WRITE, struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), offset, fid, 0, 0, 0, 0, 0) + data)[0]


def read(c, fid, length=16) -> int:
    return c.raw(READ, struct.pack("<HBBIQ16sIIIHH", 49, 0x50, 0, length, 0, fid, 0, 0, 0, 0, 0) + b"\0")[0]


def set_position(c, fid, pos=0x1000) -> int:
    """SET_INFO FilePositionInformation (class 14)."""
    return c.raw(SET_INFO, struct.pack("<HBBIHHI16s", 33, 1, 14, 8, 96, 0, 0, fid) + struct.pack("<Q", pos))[0]


def set_basic(c, fid) -> int:
    """SET_INFO FileBasicInformation (class 4), all zero: nothing changes."""
    return c.raw(SET_INFO, struct.pack("<HBBIHHI16s", 33, 1, 4, 40, 96, 0, 0, fid) + bytes(40))[0]


def query_position(c, fid) -> int:
    return c.raw(QUERY_INFO, struct.pack("<HBBIHHIII16s", 41, 1, 14, 64, 0, 0, 0, 0, 0, fid) + b"\0")[0]


def object_id(c, fid) -> int:
    return c.ioctl(FSCTL_CREATE_OR_GET_OBJECT_ID, fid, max_out=64)


def lock(c, fid, seq, flags=0x12) -> int:
    """One element, exclusive + fail-immediately by default, with LockSequenceNumber/Index `seq`."""
    return c.raw(LOCK, struct.pack("<HHI16sQQII", 48, 1, seq, fid, 0, 10, flags, 0))[0]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}.dat"


# ---------------------------------------------------------------- 3.3.5.2.10 ChannelSequence
def test_stale_channel_sequence_fails_modifying_commands(cli):
    f = cli.create(unique("csn"))
    assert f.ok
    fid = f.file_id
    steps = [   # (csn, status of a WRITE): the smbtorture smb2.replay.channel-sequence table
        (0, 0), (0x8000, st.STATUS_FILE_NOT_AVAILABLE), (0x8001, st.STATUS_FILE_NOT_AVAILABLE),
        (0xFFFF, st.STATUS_FILE_NOT_AVAILABLE), (0x7FFF, 0), (0x7FFE, st.STATUS_FILE_NOT_AVAILABLE),
        (0, st.STATUS_FILE_NOT_AVAILABLE), (0x8000, 0), (0xFFFF, 0), (0, 0), (1, 0),
        (0, st.STATUS_FILE_NOT_AVAILABLE), (1, 0), (0xFFFF, st.STATUS_FILE_NOT_AVAILABLE),
    ]
    for csn, want in steps:
        with header(cli, csn):
            assert write(cli, fid) == want, hex(csn)
            assert query_position(cli, fid) == 0          # reading never fails for it
    with header(cli, 0xFFFF):                              # stale against 1: SET_INFO and IOCTL too
        assert set_position(cli, fid) == st.STATUS_FILE_NOT_AVAILABLE
        assert object_id(cli, fid) == st.STATUS_FILE_NOT_AVAILABLE
        assert read(cli, fid) == 0
    with header(cli, 1, replay=True):                      # equal, nothing older outstanding
        assert write(cli, fid) == 0
        assert set_position(cli, fid) == 0
        assert object_id(cli, fid) == 0


def _wait_pending(req, timeout=10):
    deadline = time.monotonic() + timeout
    while req.response is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert req.response is not None and req.response["status"].get_value() == NtStatus.STATUS_PENDING


def test_replay_fails_while_older_requests_are_outstanding(cli):
    """A replay with the current ChannelSequence fails a modifying command while a request of an
    older sequence is still outstanding (Open.OutstandingPreRequestCount, 3.3.5.2.10)."""
    name = unique("csndir")
    d = cli.create(name, access=DIR_ACCESS | 0x100, options=FILE_DIRECTORY_FILE)  # + WRITE_ATTRIBUTES
    assert d.ok
    with header(cli, 0):
        req = cli.conn.send(RawRequest(CHANGE_NOTIFY, struct.pack("<HHI16sII", 32, 0, 4096, d.file_id, 0x1, 0)),
                            cli.sess.session_id, cli.tree.tree_connect_id)
    _wait_pending(req)
    with header(cli, 1):
        assert set_basic(cli, d.file_id) == 0             # advances: the notify is now "older"
    with header(cli, 1, replay=True):
        assert set_basic(cli, d.file_id) == st.STATUS_FILE_NOT_AVAILABLE
        assert query_position(cli, d.file_id) in (0, st.STATUS_INVALID_PARAMETER)   # not modifying
    req.cancel()
    with pytest.raises(Cancelled):
        cli.conn.receive(req)
    with header(cli, 1, replay=True):
        assert set_basic(cli, d.file_id) == 0


def test_channel_sequence_not_checked_on_smb21(server):
    c = Cli(server.host, server.port, "data", dialect=Dialects.SMB_2_1_0)
    try:
        f = c.create(unique("csn21"))
        with header(c, 0x8000):
            assert write(c, f.file_id) == 0
        with header(c, 0):
            assert write(c, f.file_id) == 0
    finally:
        c.close()


# ---------------------------------------------------------------- 3.3.5.9.10 replayed CREATE
def test_replayed_create_returns_the_original_open(cli):
    name, guid = unique("dh2q"), uuid.uuid4().bytes
    first = cli.create(name, [dh2q(guid)], oplock=BATCH, share=SHARE_ALL)
    assert first.ok and first.action == FILE_CREATED and first.oplock == BATCH
    assert first.dh2q() is not None
    with header(cli, replay=True):
        again = cli.create(name, [dh2q(guid)], oplock=BATCH, share=SHARE_ALL)
    assert again.ok and again.file_id == first.file_id
    assert again.action == FILE_CREATED and again.oplock == BATCH and again.dh2q() == first.dh2q()
    with header(cli, replay=True):                         # the requested level, no durability then
        plain = cli.create(name, [dh2q(guid)], oplock=NONE, share=SHARE_ALL)
    assert plain.ok and plain.file_id == first.file_id and plain.oplock == NONE and plain.dh2q() is None
    # the same CreateGuid without the replay flag
    assert cli.create(name, [dh2q(guid)], oplock=BATCH).status == st.STATUS_DUPLICATE_OBJECTID


def test_using_the_handle_ends_replay_eligibility(cli):
    """3.3.5.12 ff.: a command on a non-persistent Open clears Open.IsReplayEligible; a replay is
    then a new open (smbtorture smb2.replay.replay6). An RWH lease of the same key on both opens
    keeps them from breaking each other."""
    name, guid, key = unique("dh2qe"), uuid.uuid4().bytes, uuid.uuid4().bytes
    first = cli.create(name, [lease_v2(key, 7), dh2q(guid)], oplock=LEASE)
    assert first.ok and first.dh2q() is not None
    with header(cli, replay=True):
        assert cli.create(name, [lease_v2(key, 7), dh2q(guid)], oplock=LEASE).file_id == first.file_id
    assert read(cli, first.file_id) in (0, st.STATUS_END_OF_FILE)
    with header(cli, replay=True):
        new = cli.create(name, [lease_v2(key, 7), dh2q(guid)], oplock=LEASE)
    assert new.ok and new.file_id != first.file_id and new.action == 1
    with header(cli, replay=True):     # the new open has taken over the CreateGuid
        assert cli.create(name, [lease_v2(key, 7), dh2q(guid)], oplock=LEASE).file_id == new.file_id


def test_replayed_create_with_another_lease_key_is_denied(cli):
    name, guid = unique("dh2ql"), uuid.uuid4().bytes
    key = uuid.uuid4().bytes
    first = cli.create(name, [lease_v2(key, 3), dh2q(guid)], oplock=LEASE)
    assert first.ok and first.lease()[1] == 3
    with header(cli, replay=True):
        assert cli.create(name, [lease_v2(uuid.uuid4().bytes, 3), dh2q(guid)], oplock=LEASE).status \
            == st.STATUS_ACCESS_DENIED
        assert cli.create(name, [dh2q(guid)], oplock=BATCH).ok     # an oplock request is answered
        same = cli.create(name, [lease_v2(key, 1), dh2q(guid)], oplock=LEASE)
    assert same.ok and same.file_id == first.file_id and same.lease()[1] == 3   # the lease as it is


def test_replay_while_the_original_waits_for_a_break(server):
    """Windows: a replay of a CREATE that waits for an oplock break (no sharing violation) fails
    with STATUS_ACCESS_DENIED; once the original completed, a replay returns its Open."""
    name, guid = unique("pending"), uuid.uuid4().bytes
    c1 = Cli(server.host, server.port, "data", dialect=Dialects.SMB_3_0_2)
    c2 = Cli(server.host, server.port, "data", dialect=Dialects.SMB_3_0_2)
    try:
        h1 = c1.create(name, oplock=BATCH)
        assert h1.ok and h1.oplock == BATCH
        from smbprotocol.create_contexts import SMB2CreateContextRequest
        from smbprotocol.open import CreateDisposition, ImpersonationLevel, Open
        o = Open(c2.tree, name)
        ctx = SMB2CreateContextRequest()
        ctx["buffer_name"], ctx["buffer_data"] = dh2q(guid)
        msg, recv = o.create(ImpersonationLevel.Impersonation, RW, 0, SHARE_ALL, CreateDisposition.FILE_OPEN_IF,
                             0, create_contexts=[ctx], oplock_level=NONE, send=False)
        req = c2.conn.send(msg, c2.sess.session_id, c2.tree.tree_connect_id)
        _wait_pending(req)
        with header(c2, replay=True):
            assert c2.create(name, [dh2q(guid)]).status == st.STATUS_ACCESS_DENIED
        assert c1.raw(0x06, struct.pack("<HHI16s", 24, 0, 0, h1.file_id))[0] == 0   # CLOSE: the wait ends
        resp = c2.conn.receive(req)
        fid = bytes(resp["data"].get_value())[64:80]
        with header(c2, replay=True):
            again = c2.create(name, [dh2q(guid)])
        assert again.ok and again.file_id == fid
    finally:
        c1.close()
        c2.close()


# ---------------------------------------------------------------- 3.3.5.14 LockSequence
def test_lock_sequence_survives_a_durable_reconnect(server):
    name, guid, cguid = unique("lockseq"), uuid.uuid4().bytes, uuid.uuid4()
    c = Cli(server.host, server.port, "data", guid=cguid, dialect=Dialects.SMB_3_0_2)
    f = c.create(name, [dh2q(guid)], oplock=BATCH)
    assert f.ok and f.dh2q() is not None
    seq = (1 << 4) | 5                                      # index 1, number 5
    assert lock(c, f.file_id, seq) == 0
    c.drop()
    c = Cli(server.host, server.port, "data", guid=cguid, dialect=Dialects.SMB_3_0_2)
    try:
        r = c.create(name, [dh2c(f.file_id, guid)], oplock=BATCH)
        assert r.ok, hex(r.status)
        assert lock(c, r.file_id, seq) == 0                # the replay is recognized: no conflict
        assert lock(c, r.file_id, (2 << 4) | 5) == st.STATUS_LOCK_NOT_GRANTED   # a new request is not
    finally:
        c.close()


# ---------------------------------------------------------------- 3.3.5.9.13 app instances
APP = cr.CTX_APP_INSTANCE_ID
VER = cr.CTX_APP_INSTANCE_VERSION


def app_id(aid: bytes) -> tuple[bytes, bytes]:
    return APP, struct.pack("<HH16s", 20, 0, aid)


def app_version(high: int, low: int) -> tuple[bytes, bytes]:
    return VER, struct.pack("<HHIQQ", 24, 0, 0, high, low)


@pytest.fixture
def two(server):
    made = []

    def make(dialect=Dialects.SMB_3_1_1, guid=None):
        c = Cli(server.host, server.port, "data", guid=guid, dialect=dialect)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def test_app_instance_closes_the_other_clients_open(two):
    a, b = two(), two()
    name, aid = unique("app"), uuid.uuid4().bytes
    h1 = a.create(name, [app_id(aid)], share=0, oplock=BATCH)
    assert h1.ok
    h2 = b.create(name, [app_id(aid)], share=0, oplock=BATCH)
    assert h2.ok and h2.oplock == BATCH                      # no sharing violation, no break
    assert write(a, h1.file_id) == st.STATUS_FILE_CLOSED      # the old instance's handle is gone
    assert write(b, h2.file_id) == 0


def test_app_instance_leaves_other_opens_alone(two):
    name, aid = unique("app"), uuid.uuid4().bytes
    guid = uuid.uuid4()
    a, same_client, other = two(guid=guid), two(guid=guid), two()
    h1 = a.create(name, [app_id(aid)], share=0)
    assert h1.ok
    # the same ClientGuid, another AppInstanceId, another file: nothing is closed
    assert same_client.create(name, [app_id(aid)], share=0).status == st.STATUS_SHARING_VIOLATION
    assert other.create(name, [app_id(uuid.uuid4().bytes)], share=0).status == st.STATUS_SHARING_VIOLATION
    assert other.create(unique("app"), [app_id(aid)], share=0).ok
    assert write(a, h1.file_id) == 0


def test_app_instance_version(two):
    a, b = two(), two()
    name, aid = unique("appv"), uuid.uuid4().bytes
    h1 = a.create(name, [app_id(aid), app_version(2, 5)], share=0)
    assert h1.ok
    for ctxs in ([app_version(2, 5)], [app_version(1, 9)], [app_version(2, 4)], []):
        r = b.create(name, [app_id(aid), *ctxs], share=0)
        assert r.status == st.STATUS_FILE_FORCED_CLOSED, ctxs
    assert write(a, h1.file_id) == 0
    h2 = b.create(name, [app_id(aid), app_version(2, 6)], share=0)
    assert h2.ok
    assert write(a, h1.file_id) == st.STATUS_FILE_CLOSED


def test_app_instance_version_needs_smb311(two):
    a, b = two(Dialects.SMB_3_0_2), two(Dialects.SMB_3_0_2)
    name, aid = unique("appv30"), uuid.uuid4().bytes
    h1 = a.create(name, [app_id(aid), app_version(9, 9)], share=0)
    assert h1.ok
    assert b.create(name, [app_id(aid), app_version(1, 0)], share=0).ok   # the versions are ignored
    assert write(a, h1.file_id) == st.STATUS_FILE_CLOSED


def test_app_instance_closes_a_disconnected_durable_open(two, server):
    guid = uuid.uuid4()
    a = two(guid=guid)
    name, aid, cg = unique("appdh"), uuid.uuid4().bytes, uuid.uuid4().bytes
    h1 = a.create(name, [app_id(aid), dh2q(cg)], share=0, oplock=BATCH)
    assert h1.ok and h1.dh2q() is not None
    a.drop()                                                  # kept for reconnect
    b = two()
    assert b.create(name, [app_id(aid)], share=0).ok
    back = two(guid=guid)
    assert back.create(name, [dh2c(h1.file_id, cg)], oplock=BATCH).status == st.STATUS_OBJECT_NAME_NOT_FOUND


def test_app_instance_context_size_is_validated(two):
    a = two()
    assert a.create(unique("appbad"), [(APP, struct.pack("<HH16s", 24, 0, b"x" * 16))]).status \
        == st.STATUS_INVALID_PARAMETER


# --------------------------------------------------------------------------- smbtorture
PENDING_ON_A_LOST_CHANNEL = ["dhv2-pending2n-vs-lease-windows", "dhv2-pending2l-vs-lease-windows",
                             "dhv2-pending2o-vs-oplock-windows"]


@pytest.mark.torture
@pytest.mark.timeout(300)
def test_smbtorture_replay_of_a_create_pending_on_a_lost_channel(tmp_path):
    """A CREATE waits for a break on channel 1 of a multichannel session; channel 1's connection
    goes away; replays on channels 2 and 3 get STATUS_ACCESS_DENIED while it still waits (as
    Windows), and once the holder closes, the replay on channel 4 gets the open the original
    request made (MS-SMB2 3.3.5.9.10, 3.3.7.1: the session and its pending create outlive a channel)."""
    import shutil
    from interop.smbtorture.run_torture import SMBTORTURE, run_suite
    from interop.smbtorture.servers import SmbndServer as TortureServer
    if not shutil.which("smbtorture") and not os.path.exists(SMBTORTURE):
        pytest.skip("smbtorture not installed")
    srv = TortureServer(workdir=tmp_path, share_flags=":ca")
    srv.start()
    try:
        for t in PENDING_ON_A_LOST_CHANNEL:
            run = run_suite(f"smb2.replay.{t}", srv.host, srv.port, srv.share, *srv.user, *srv.user2,
                            timeout=90)
            bad = {k: v for k, v in run.results.items() if v[0] not in ("success", "uxsuccess")}
            assert run.results and not bad, bad
        assert "Traceback" not in srv.log_tail(400)
    finally:
        srv.stop()
