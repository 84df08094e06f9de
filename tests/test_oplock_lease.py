"""Oplocks and leases against real smbprotocol clients (two connections): grant, break, ack, wait.

smbprotocol has no oplock-break support of its own: each client plants a sink for MessageId
0xFFFFFFFFFFFFFFFF in the connection's request table (where its receiver thread looks up every
incoming message) and sends acknowledgments as raw OPLOCK_BREAK requests.
"""
from __future__ import annotations

import queue
import struct
import threading
import time
import uuid

import pytest
from smbprotocol.connection import Connection, Dialects
from smbprotocol.create_contexts import (CreateContextName, SMB2CreateContextRequest, SMB2CreateRequestLease,
                                         SMB2CreateRequestLeaseV2)
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import CreateDisposition, FilePipePrinterAccessMask, ImpersonationLevel, Open, ShareAccess
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from smbnd import status as st
from durable_client import RawRequest
from smbnd_server import PASSWORD, SmbndServer, USER

RW = FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE
SHARE_ALL = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
NONE, LEVEL_II, EXCLUSIVE, BATCH, LEASE = 0x00, 0x01, 0x08, 0x09, 0xFF
R, H, W = 1, 2, 4
OPLOCK_BREAK = 0x12
NOTIFY_MID = 0xFFFFFFFFFFFFFFFF


class _Zero:
    @staticmethod
    def get_value():
        return 0


class BreakSink:
    """Stands in for smbprotocol's Request object under MessageId -1; collects break bodies."""

    def __init__(self):
        self.session_id = None
        self.async_id = None
        self.response_event_lock = threading.Lock()
        self.response_event = threading.Event()
        self.message = {"reserved": _Zero()}
        self.bodies: queue.Queue = queue.Queue()

    @property
    def response(self):
        return None

    @response.setter
    def response(self, header):
        self.bodies.put(bytes(header["data"].get_value()))


class Client:
    def __init__(self, server, dialect=Dialects.SMB_3_1_1, guid=None, encrypt=False):
        self.conn = Connection(guid or uuid.uuid4(), server.host, server.port, require_signing=False)
        self.conn.connect(dialect, timeout=15)
        self.sink = BreakSink()
        self.conn.outstanding_requests[NOTIFY_MID] = self.sink
        self.sess = Session(self.conn, USER, PASSWORD, require_encryption=encrypt)
        self.sess.connect()
        self.tree = TreeConnect(self.sess, rf"\\{server.host}\data")
        self.tree.connect()

    # ---- create, possibly left pending
    def create_send(self, name, oplock=NONE, lease=None, access=RW, share=SHARE_ALL,
                    disposition=CreateDisposition.FILE_OPEN_IF, options=0, parent=None):
        """lease: (key, state) for v1 or (key, state, epoch) for v2 (with ParentLeaseKey `parent`)."""
        o = Open(self.tree, name)
        ctxs = None
        if lease is not None:
            if len(lease) == 3:
                ls = SMB2CreateRequestLeaseV2()
                ls["epoch"] = struct.pack("<H", lease[2])
                ls["parent_lease_key"] = parent or bytes(16)
                ls["lease_flags"] = 0x04 if parent else 0     # SMB2_LEASE_FLAG_PARENT_LEASE_KEY_SET
            else:
                ls = SMB2CreateRequestLease()
            ls["lease_key"] = lease[0]
            ls["lease_state"] = lease[1]
            ctx = SMB2CreateContextRequest()
            ctx["buffer_name"] = CreateContextName.SMB2_CREATE_REQUEST_LEASE
            ctx["buffer_data"] = ls
            ctxs = [ctx]
            oplock = LEASE
        msg, recv = o.create(ImpersonationLevel.Impersonation, access, 0, share, disposition, options,
                             create_contexts=ctxs, oplock_level=oplock, send=False)
        req = self.conn.send(msg, self.sess.session_id, self.tree.tree_connect_id)
        return o, req, recv

    def create(self, name, **kw):
        o, req, recv = self.create_send(name, **kw)
        ctxs = recv(req)
        return o, _lease_of(ctxs)

    # ---- breaks and acks
    def next_break(self, timeout=5.0):
        b = self.sink.bodies.get(timeout=timeout)
        size = struct.unpack_from("<H", b)[0]
        if size == 24:
            return ("oplock", b[2], b[8:24])
        epoch, flags, key, cur, new = struct.unpack_from("<HI16sII", b, 2)
        return ("lease", epoch, flags, key, cur, new)

    def no_break(self, timeout=0.5) -> bool:
        try:
            self.sink.bodies.get(timeout=timeout)
        except queue.Empty:
            return True
        return False

    def _raw(self, body: bytes) -> bytes:
        req = self.conn.send(RawRequest(OPLOCK_BREAK, body), self.sess.session_id, self.tree.tree_connect_id)
        return bytes(self.conn.receive(req)["data"].get_value())

    def ack_oplock(self, o: Open, level: int) -> int:
        resp = self._raw(struct.pack("<HBBI", 24, level, 0, 0) + o.file_id)
        return resp[2]

    def ack_lease(self, key: bytes, state: int) -> int:
        resp = self._raw(struct.pack("<HHI16sIQ", 36, 0, 0, key, state, 0))
        return struct.unpack_from("<I", resp, 24)[0]

    def close(self):
        try:
            self.conn.disconnect(True, timeout=10)
        except Exception:
            self.conn.disconnect(False)


def _lease_of(ctxs):
    for c in ctxs or []:
        if hasattr(c, "fields") and "lease_state" in c.fields:
            v2 = "epoch" in c.fields
            return {"key": c["lease_key"].get_value(), "state": int(c["lease_state"].get_value()),
                    "flags": int(c["flags" if v2 else "lease_flags"].get_value()),
                    "epoch": c["epoch"].get_value() if v2 else None}
    return None


def status_of(excinfo) -> int:
    return excinfo.value.status


def pending(req, wait=0.3) -> bool:
    """The request got its interim STATUS_PENDING and no final answer yet."""
    time.sleep(wait)
    return req.response is not None and req.response["status"].get_value() == st.STATUS_PENDING


@pytest.fixture(scope="module")
def server():
    """This module's server opts in to directory leasing (off by default: impacket 0.13 breaks on it)."""
    from smbnd_server import SmbndServer
    with SmbndServer("--directory-leasing") as s:
        yield s
        assert "Traceback" not in s.log(), s.log()[-4000:]


@pytest.fixture(params=["plain", "encrypted"])
def two(server, request):
    a, b = Client(server, encrypt=request.param == "encrypted"), Client(server)
    yield a, b
    a.close()
    b.close()


K1 = bytes(range(16))
K2 = bytes(range(16, 32))


def test_leasing_advertised(two):
    a, _ = two
    assert a.conn.server_capabilities.has_flag(0x02)   # SMB2_GLOBAL_CAP_LEASING


def test_batch_breaks_to_level2_and_second_open_waits(two):
    a, b = two
    h1, _ = a.create("ob1.dat", oplock=BATCH)
    assert h1.oplock_level == BATCH
    h2, req, recv = b.create_send("ob1.dat", oplock=BATCH)
    kind, level, fid = a.next_break()
    assert (kind, level, fid) == ("oplock", LEVEL_II, h1.file_id)
    assert pending(req)                     # waits for the acknowledgment (MS-FSA 2.1.4.12)
    assert a.ack_oplock(h1, LEVEL_II) == LEVEL_II
    recv(req)
    assert h2.oplock_level == LEVEL_II
    # a write through the second open breaks every level II oplock to none, without acks
    h2.write(b"x", 0)
    assert a.next_break() == ("oplock", NONE, h1.file_id)
    assert b.next_break() == ("oplock", NONE, h2.file_id)
    with pytest.raises(SMBResponseException) as e:
        a.ack_oplock(h1, NONE)               # nothing outstanding
    assert status_of(e) == st.STATUS_INVALID_OPLOCK_PROTOCOL
    h1.close()
    h2.close()


def test_exclusive_sharing_violation_no_break(two):
    a, b = two
    h1, _ = a.create("ox1.dat", oplock=EXCLUSIVE, share=0)
    assert h1.oplock_level == EXCLUSIVE
    with pytest.raises(SMBResponseException) as e:
        b.create("ox1.dat", oplock=EXCLUSIVE)
    assert status_of(e) == st.STATUS_SHARING_VIOLATION
    assert a.no_break()                     # an exclusive oplock doesn't cache handles
    h1.close()


def test_batch_holder_closes_on_break(two):
    a, b = two
    h1, _ = a.create("ob3.dat", oplock=BATCH, share=0)
    h2, req, recv = b.create_send("ob3.dat", oplock=BATCH)
    assert a.next_break()[:2] == ("oplock", LEVEL_II)
    assert pending(req)
    h1.close()                              # instead of acknowledging: the waiting open proceeds
    recv(req)
    assert h2.oplock_level == BATCH
    h2.close()


def test_oplock_ack_errors(two):
    a, b = two
    h1, _ = a.create("oack.dat", oplock=BATCH)
    with pytest.raises(SMBResponseException) as e:
        a.ack_oplock(h1, LEVEL_II)            # no break outstanding on a batch oplock
    assert status_of(e) == st.STATUS_INVALID_DEVICE_STATE
    h2, req, recv = b.create_send("oack.dat")
    assert a.next_break()[:2] == ("oplock", LEVEL_II)
    with pytest.raises(SMBResponseException) as e:
        a.ack_oplock(h1, EXCLUSIVE)           # 3.3.5.22.1: only level II or none
    assert status_of(e) == st.STATUS_INVALID_OPLOCK_PROTOCOL
    recv(req)                                 # the failed ack dropped the oplock to none
    assert h2.oplock_level == NONE
    h1.close()
    h2.close()


def test_lease_v2_break_ack_and_epochs(two):
    a, b = two
    h1, ls = a.create("l1.dat", lease=(K1, R | W | H, 7))
    assert h1.oplock_level == LEASE
    assert ls == {"key": K1, "state": R | W | H, "flags": 0, "epoch": 8}
    h2, req, recv = b.create_send("l1.dat", lease=(K2, R | W | H, 0))
    kind, epoch, flags, key, cur, new = a.next_break()
    assert (kind, epoch, flags, key, cur, new) == ("lease", 9, 1, K1, R | W | H, R | H)
    assert pending(req)
    # an open with the same key sees the break in progress
    h3, ls3 = a.create("l1.dat", lease=(K1, R | W | H, 8))
    assert ls3["state"] == R | W | H and ls3["flags"] & 0x02
    h3.close()
    with pytest.raises(SMBResponseException) as e:
        a.ack_lease(K1, R | W | H)            # not a subset of what the break asked for
    assert status_of(e) == st.STATUS_REQUEST_NOT_ACCEPTED
    assert a.ack_lease(K1, R | H) == R | H
    ls2 = _lease_of(recv(req))
    assert ls2["state"] == R | H and ls2["epoch"] == 1
    with pytest.raises(SMBResponseException) as e:
        a.ack_lease(K1, R | H)                # no break in progress any more
    assert status_of(e) == st.STATUS_UNSUCCESSFUL
    with pytest.raises(SMBResponseException) as e:
        a.ack_lease(bytes(16), 0)             # unknown lease
    assert status_of(e) == st.STATUS_OBJECT_NAME_NOT_FOUND
    # contended: an upgrade attempt leaves the lease as it is
    h4, ls4 = a.create("l1.dat", lease=(K1, R | W | H, 9))
    assert ls4["state"] == R | H
    # a write through K2 breaks K1's read caching to none (H lost too: ack required)
    h2.write(b"y", 0)
    kind, epoch, flags, key, cur, new = a.next_break()
    assert (key, cur, new, flags, epoch) == (K1, R | H, 0, 1, 10)
    assert a.ack_lease(K1, 0) == 0
    for h in (h1, h2, h4):
        h.close()


def test_lease_same_key_other_connection_same_client(server):
    guid = uuid.uuid4()
    a, b = Client(server, guid=guid), Client(server, guid=guid)
    try:
        h1, ls = a.create("lshare.dat", lease=(K1, R | W | H, 0))
        h2, ls2 = b.create("lshare.dat", lease=(K1, R | W | H, 0))
        assert ls2["state"] == R | W | H      # one lease for the client, no break
        assert a.no_break() and b.no_break()
        with pytest.raises(SMBResponseException) as e:
            b.create("lshare-other.dat", lease=(K1, R, 0))    # key bound to another file
        assert status_of(e) == st.STATUS_INVALID_PARAMETER
        h1.close()
        h2.close()
    finally:
        a.close()
        b.close()


def test_lease_v1_on_smb21(server):
    a, b = Client(server, Dialects.SMB_2_1_0), Client(server, Dialects.SMB_2_1_0)
    try:
        h1, ls = a.create("l21.dat", lease=(K1, R | H))
        assert ls["state"] == R | H and ls["epoch"] is None    # v1 response
        h2, req, recv = b.create_send("l21.dat", share=ShareAccess.FILE_SHARE_READ, access=RW)
        kind, epoch, flags, key, cur, new = a.next_break()
        assert (key, cur, new, flags, epoch) == (K1, R | H, R, 1, 0)    # sharing violation: H goes
        a.ack_lease(K1, R)
        with pytest.raises(SMBResponseException) as e:
            recv(req)
        assert status_of(e) == st.STATUS_SHARING_VIOLATION
        h1.close()
    finally:
        a.close()
        b.close()


def test_pending_open_resolves_when_holder_disconnects(two, server):
    a, b = two
    c = Client(server)
    h1, _ = c.create("odisc.dat", oplock=BATCH, share=0)
    h2, req, recv = b.create_send("odisc.dat", oplock=BATCH)
    assert c.next_break()[:2] == ("oplock", LEVEL_II)
    assert pending(req)
    c.conn.disconnect(False)                # its opens close: the waiting open goes ahead
    recv(req)
    assert h2.oplock_level == BATCH
    h2.close()


def test_break_timeout(tmp_path):
    cfg = tmp_path / "smbnd.toml"
    cfg.write_text("[server]\noplock_break_timeout = 1.5\n")
    with SmbndServer("--config", str(cfg)) as srv:
        a, b = Client(srv), Client(srv)
        try:
            h1, _ = a.create("otime.dat", oplock=BATCH)
            t0 = time.monotonic()
            h2, _ = b.create("otime.dat", oplock=BATCH)      # nobody acknowledges
            assert 1.0 < time.monotonic() - t0 < 10
            assert a.next_break()[:2] == ("oplock", LEVEL_II)
            assert h2.oplock_level == LEVEL_II                  # the holder dropped to none
            with pytest.raises(SMBResponseException) as e:
                a.ack_oplock(h1, LEVEL_II)
            assert status_of(e) == st.STATUS_INVALID_OPLOCK_PROTOCOL
            l1, _ = a.create("ltime.dat", lease=(K1, R | W | H, 0))
            l2, ls2 = b.create("ltime.dat", lease=(K2, R | W | H, 0))
            assert ls2["state"] == R | H
            _, ls1 = a.create("ltime.dat", lease=(K1, 0, 0))
            assert ls1["state"] == 0                            # timed out to none
            for h in (h1, h2, l1, l2):
                h.close()
        finally:
            a.close()
            b.close()
        assert "Traceback" not in srv.log()


def test_breaks_encrypted_on_encrypted_share():
    """3.3.4.1.4: the notification is encrypted with the holder's session when its tree requires it."""
    with SmbndServer(shares={"data": ":encrypt"}) as srv:
        a, b = Client(srv, encrypt=True), Client(srv, encrypt=True)
        raw = []
        recv = a.conn.transport.recv

        def _rec(timeout):
            data = recv(timeout)
            if data:
                raw.append(bytes(data[:4]))
            return data
        a.conn.transport.recv = _rec
        try:
            h1, _ = a.create("oenc.dat", oplock=BATCH)
            h2, _ = a.create("lenc.dat", lease=(K1, R | W | H, 0))
            raw.clear()
            g1, req1, recv1 = b.create_send("oenc.dat")
            assert a.next_break()[:2] == ("oplock", LEVEL_II)
            a.ack_oplock(h1, LEVEL_II)
            recv1(req1)
            g2, req2, recv2 = b.create_send("lenc.dat")
            assert a.next_break()[0] == "lease"
            a.ack_lease(K1, R | H)
            recv2(req2)
            assert raw and all(p == b"\xfdSMB" for p in raw)
            for h in (h1, h2, g1, g2):
                h.close()
        finally:
            a.close()
            b.close()


def test_directory_lease(two):
    """MS-SMB2 3.3.5.9.11 (3.x): directories get R/H leases; a change inside breaks them to none
    unless the changing open names the directory's lease as its parent."""
    a, b = two
    assert a.conn.server_capabilities.has_flag(0x20)   # SMB2_GLOBAL_CAP_DIRECTORY_LEASING
    kd, kf = b"D" * 16, b"F" * 16
    dacc = FilePipePrinterAccessMask.GENERIC_READ
    dname = "ldir-" + uuid.uuid4().hex[:8]
    d, ls = a.create(dname, lease=(kd, R | W | H, 0), access=dacc, options=0x1)    # FILE_DIRECTORY_FILE
    assert ls["state"] == R | H and ls["epoch"] == 1
    f1, ls1 = a.create(dname + "\\mine.dat", lease=(kf, R | W | H, 0), parent=kd)
    assert ls1["state"] == R | W | H and ls1["flags"] & 0x04
    assert a.no_break()                     # the same client named the directory lease as parent
    f2, _ = b.create(dname + "\\other.dat")
    kind, epoch, flags, key, cur, new = a.next_break()
    assert (key, cur, new, flags, epoch) == (kd, R | H, 0, 1, 2)
    a.ack_lease(kd, 0)
    for h in (f1, f2, d):
        h.close()


def _set_info_send(c, o, cls, buf):
    from smbprotocol.file_info import InfoType
    from smbprotocol.open import SMB2SetInfoRequest
    req = SMB2SetInfoRequest()
    req["info_type"] = InfoType.SMB2_0_INFO_FILE
    req["file_info_class"] = cls
    req["file_id"] = o.file_id
    req["buffer"] = buf
    return c.conn.send(req, c.sess.session_id, c.tree.tree_connect_id)


def test_rename_waits_for_handle_caching(two):
    """MS-FSA 2.1.5.14.11: other leases give up H before a rename proceeds (smb2.lease.rename_wait)."""
    a, b = two
    src, dst = "ren-" + uuid.uuid4().hex[:8], "ren-" + uuid.uuid4().hex[:8]
    h1, ls1 = a.create(src, lease=(K1, R | H, 0))
    h2, ls2 = b.create(src, lease=(K2, R | H, 0), access=RW | 0x00010000)     # + DELETE
    assert ls1["state"] == ls2["state"] == R | H
    name = dst.encode("utf-16-le")
    req = _set_info_send(b, h2, 10, struct.pack("<B7sQI", 1, b"\0" * 7, 0, len(name)) + name)  # FileRename
    kind, epoch, flags, key, cur, new = a.next_break()
    assert (key, cur, new, flags) == (K1, R | H, R, 1)
    assert pending(req)
    a.ack_lease(K1, R)
    b.conn.receive(req)                       # the rename completes after the acknowledgment
    with pytest.raises(SMBResponseException) as e:
        a.create(src, disposition=CreateDisposition.FILE_OPEN)
    assert status_of(e) == st.STATUS_OBJECT_NAME_NOT_FOUND
    h1.close()
    h2.close()


def test_delete_on_close_open_breaks_handle_caching(two):
    """A delete-on-close open makes the other leases give up H (Windows; smb2.lease.unlink)."""
    a, b = two
    name = "doc-" + uuid.uuid4().hex[:8]
    h1, ls1 = a.create(name, lease=(K1, R | H, 0))
    o, req, recv = b.create_send(name, access=0x00010000, options=0)    # DELETE
    recv(req)
    assert a.no_break()                       # a plain DELETE open leaves RH alone
    o.close()
    o2 = Open(b.tree, name)
    msg, recv2 = o2.create(ImpersonationLevel.Impersonation, 0x00010000, 0, SHARE_ALL,
                           CreateDisposition.FILE_OPEN, 0x00001000, send=False)    # FILE_DELETE_ON_CLOSE
    req2 = b.conn.send(msg, b.sess.session_id, b.tree.tree_connect_id)
    kind, epoch, flags, key, cur, new = a.next_break()
    assert (key, cur, new, flags) == (K1, R | H, R, 1)
    a.ack_lease(K1, R)
    recv2(req2)
    o2.close()
    h1.close()
