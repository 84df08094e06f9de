"""smbprotocol's low-level API against smbnd: every dialect, cipher and signing algorithm, big
multi-credit I/O, compounds, directory enumeration, share modes, byte-range locks (incl. async
blocking locks and cancel), CHANGE_NOTIFY, and raw path-escape attempts."""
import hashlib
import os
import struct
import time
import uuid

import pytest
from smbprotocol.change_notify import CompletionFilter, FileAction, FileSystemWatcher
from smbprotocol.connection import Ciphers, Connection, Dialects, SigningAlgorithms
from smbprotocol.exceptions import Cancelled, SMBResponseException
from smbprotocol.file_info import FileInformationClass, FileStandardInformation, InfoType
from smbprotocol.header import NtStatus, Smb2Flags
from smbprotocol.open import (CreateDisposition, CreateOptions, DirectoryAccessMask, FilePipePrinterAccessMask,
                              ImpersonationLevel, LockFlags, Open, ShareAccess, SMB2LockElement,
                              SMB2QueryInfoRequest, SMB2QueryInfoResponse)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from smbnd import status as st
from smbnd_server import PASSWORD, USER

RW = FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE
SHARE_ALL = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
MiB = 1024 * 1024


class Client:
    """One smbprotocol connection + session + tree on share 'data'."""

    def __init__(self, server, dialect=Dialects.SMB_3_1_1, sign=False, encrypt=False, ciphers=None,
                 sign_algos=None, share="data"):
        self.conn = Connection(uuid.uuid4(), server.host, server.port, require_signing=sign)
        self.conn.connect(dialect, timeout=15, preferred_encryption_algos=ciphers,
                          preferred_signing_algos=sign_algos)
        self.rx: list[bytes] = []   # first 64 bytes of every message received from the server
        recv = self.conn.transport.recv

        def _recording_recv(timeout):
            b = recv(timeout)
            if b:
                self.rx.append(bytes(b[:64]))
            return b
        self.conn.transport.recv = _recording_recv
        self.sess = Session(self.conn, USER, PASSWORD, require_encryption=encrypt)
        self.sess.connect()
        self.tree = TreeConnect(self.sess, rf"\\{server.host}\{share}")
        self.tree.connect()

    def open(self, name, access=RW, disposition=CreateDisposition.FILE_OPEN_IF, share=SHARE_ALL, options=0):
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, access, 0, share, disposition, options)
        return o

    def opendir(self, name):
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, DirectoryAccessMask.FILE_LIST_DIRECTORY |
                 DirectoryAccessMask.FILE_READ_ATTRIBUTES | DirectoryAccessMask.SYNCHRONIZE, 0, SHARE_ALL,
                 CreateDisposition.FILE_OPEN_IF, CreateOptions.FILE_DIRECTORY_FILE)
        return o

    def grow_credits(self, n=512):
        self.conn.echo(sid=self.sess.session_id, credit_request=n)

    def close(self):
        try:
            self.conn.disconnect(True, timeout=10)
        except Exception:
            self.conn.disconnect(False)


@pytest.fixture
def client(server):
    c = Client(server)
    yield c
    c.close()


@pytest.fixture(params=["plain", "signed", "encrypted"])
def mclient(server, request):
    """A 3.1.1 client protected as the param says (compound and async replies are protected too)."""
    c = Client(server, sign=request.param == "signed", encrypt=request.param == "encrypted")
    c.mode = request.param
    yield c
    c.close()


def status_of(excinfo) -> int:
    return excinfo.value.status


def _roundtrip(c: Client, name: str, size: int = 200_000, protection: str | None = None) -> None:
    """Write/read back `size` bytes; with `protection`, also check how every response was protected."""
    c.rx.clear()
    data = os.urandom(size)
    o = c.open(name, disposition=CreateDisposition.FILE_OVERWRITE_IF)
    chunk = min(c.conn.max_write_size, 65536)
    for off in range(0, size, chunk):
        assert o.write(data[off:off + chunk], off) == len(data[off:off + chunk])
    back = b"".join(o.read(off, min(chunk, size - off)) for off in range(0, size, chunk))
    o.close()
    assert back == data
    if protection is not None:
        _check_protection(c, protection)


def _check_protection(c: Client, protection: str) -> None:
    """Every message received since c.rx was cleared is protected as `protection` asks."""
    assert c.rx
    for m in c.rx:
        if protection == "encrypted":
            assert m[:4] == b"\xfdSMB"            # TRANSFORM_HEADER (signature verified by AEAD)
        else:
            assert m[:4] == b"\xfeSMB"
            flags = int.from_bytes(m[16:20], "little")
            interim = int.from_bytes(m[8:12], "little") == NtStatus.STATUS_PENDING
            # MS-SMB2 3.3.4.1.1: responses are signed iff the session requires signing;
            # 3.3.4.2: the server SHOULD NOT sign an interim (STATUS_PENDING) response
            assert bool(flags & Smb2Flags.SMB2_FLAGS_SIGNED) == (protection == "signed" and not interim)


# ---- dialects x protection -------------------------------------------------------------------
DIALECTS = [Dialects.SMB_2_0_2, Dialects.SMB_2_1_0, Dialects.SMB_3_0_0, Dialects.SMB_3_0_2, Dialects.SMB_3_1_1]


@pytest.mark.parametrize("dialect,mode", [(d, m) for d in DIALECTS for m in ("plain", "signed", "encrypted")
                                          if m != "encrypted" or d >= Dialects.SMB_3_0_0],
                         ids=lambda v: f"{v:#06x}" if isinstance(v, int) else v)
def test_dialect_and_protection(server, dialect, mode):
    c = Client(server, dialect, sign=mode == "signed", encrypt=mode == "encrypted")
    try:
        assert c.conn.dialect == dialect
        assert c.sess.signing_required == (mode == "signed")
        assert bool(c.sess.encrypt_data) == (mode == "encrypted")
        _roundtrip(c, f"d_{dialect:x}_{mode}.bin", protection=mode)
        with open(os.path.join(server.paths["data"], f"d_{dialect:x}_{mode}.bin"), "rb") as f:
            assert len(f.read()) == 200_000
    finally:
        c.close()


# ---- ciphers (3.1.1) -------------------------------------------------------------------------
@pytest.mark.parametrize("cipher", [Ciphers.AES_128_CCM, Ciphers.AES_128_GCM, Ciphers.AES_256_CCM,
                                    Ciphers.AES_256_GCM], ids=["AES-128-CCM", "AES-128-GCM", "AES-256-CCM",
                                                                 "AES-256-GCM"])
def test_cipher(server, cipher):
    c = Client(server, Dialects.SMB_3_1_1, encrypt=True, ciphers=[cipher])
    try:
        assert c.conn.cipher_id == cipher
        assert c.sess.encrypt_data
        _roundtrip(c, f"cipher_{cipher}.bin", 100_000, protection="encrypted")
    finally:
        c.close()


def test_cipher_30_is_aes128ccm(server):
    c = Client(server, Dialects.SMB_3_0_0, encrypt=True)
    try:
        assert c.conn.supports_encryption and c.sess.encrypt_data
        _roundtrip(c, "cipher_30.bin", 50_000, protection="encrypted")
    finally:
        c.close()


# ---- signing algorithms ----------------------------------------------------------------------
@pytest.mark.parametrize("dialect,algos,expect", [
    (Dialects.SMB_2_0_2, None, None),                                        # HMAC-SHA256
    (Dialects.SMB_2_1_0, None, None),                                        # HMAC-SHA256
    (Dialects.SMB_3_0_0, None, None),                                        # AES-CMAC
    (Dialects.SMB_3_0_2, None, None),                                        # AES-CMAC
    (Dialects.SMB_3_1_1, [SigningAlgorithms.AES_GMAC], SigningAlgorithms.AES_GMAC),
    (Dialects.SMB_3_1_1, [SigningAlgorithms.AES_CMAC], SigningAlgorithms.AES_CMAC),
    (Dialects.SMB_3_1_1, [SigningAlgorithms.HMAC_SHA256], SigningAlgorithms.HMAC_SHA256),
], ids=["2.0.2-HMAC", "2.1-HMAC", "3.0-CMAC", "3.0.2-CMAC", "3.1.1-GMAC", "3.1.1-CMAC", "3.1.1-HMAC"])
def test_signing_algorithm(server, dialect, algos, expect):
    # smbprotocol verifies every signed response (a wrong algorithm/key fails the session)
    c = Client(server, dialect, sign=True, sign_algos=algos)
    try:
        assert c.sess.signing_required and c.sess.signing_key
        if expect is not None:
            assert c.conn.signing_algorithm_id == expect
        _roundtrip(c, f"sign_{dialect:x}_{expect}.bin", 70_000, protection="signed")
    finally:
        c.close()


def test_server_cipher_and_signing_preference(tmp_path):
    """The server's `ciphers` / `signing_algorithms` options decide (MS-SMB2 3.3.5.4: the server's
    preference order among those the client offers)."""
    from smbnd_server import SmbndServer
    cfg = tmp_path / "smbnd.toml"
    cfg.write_text('[server]\nciphers = ["AES-256-CCM", "AES-128-GCM"]\nsigning_algorithms = ["AES-CMAC"]\n')
    with SmbndServer("--config", str(cfg)) as srv:
        c = Client(srv, encrypt=True)           # smbprotocol offers all four ciphers, GMAC first
        try:
            assert c.conn.cipher_id == Ciphers.AES_256_CCM
            assert c.conn.signing_algorithm_id == SigningAlgorithms.AES_CMAC
            _roundtrip(c, "pref.bin", 70_000, protection="encrypted")
        finally:
            c.close()
        c = Client(srv, sign=True, ciphers=[Ciphers.AES_128_GCM])
        try:
            assert c.conn.cipher_id == Ciphers.AES_128_GCM
            _roundtrip(c, "pref2.bin", 70_000, protection="signed")
        finally:
            c.close()
        # no common cipher: the server answers cipher 0 and the session cannot encrypt
        conn = Connection(uuid.uuid4(), srv.host, srv.port, require_signing=False)
        conn.connect(Dialects.SMB_3_1_1, timeout=15, preferred_encryption_algos=[Ciphers.AES_256_GCM])
        try:
            assert conn.cipher_id == 0 and not conn.supports_encryption
        finally:
            conn.disconnect(False)
        assert "Traceback" not in srv.log()


# ---- 64 MiB, 1 MiB multi-credit requests -----------------------------------------------------
@pytest.mark.parametrize("mode", ["plain", "signed", "encrypted"])
def test_64mib_multicredit(server, mode):
    size = 64 * MiB
    data = os.urandom(size)
    want = hashlib.sha256(data).hexdigest()
    c = Client(server, Dialects.SMB_3_1_1, sign=mode == "signed", encrypt=mode == "encrypted")
    name = f"big_{mode}.bin"
    try:
        assert c.conn.supports_multi_credit and c.conn.max_write_size >= MiB and c.conn.max_read_size >= MiB
        c.grow_credits(256)
        c.rx.clear()
        o = c.open(name, disposition=CreateDisposition.FILE_OVERWRITE_IF)
        depth = 8   # pipelined 1 MiB requests (16 credits each)
        offs = list(range(0, size, MiB))
        for i in range(0, len(offs), depth):
            batch = []
            for off in offs[i:i + depth]:
                msg, recv = o.write(data[off:off + MiB], off, send=False)
                req = c.conn.send(msg, c.sess.session_id, c.tree.tree_connect_id)
                assert req.message["credit_charge"].get_value() == 16
                batch.append((req, recv))
            for req, recv in batch:
                assert recv(req) == MiB
        h = hashlib.sha256()
        for i in range(0, len(offs), depth):
            batch = []
            for off in offs[i:i + depth]:
                msg, recv = o.read(off, MiB, send=False)
                batch.append((c.conn.send(msg, c.sess.session_id, c.tree.tree_connect_id), recv))
            for req, recv in batch:
                h.update(recv(req))
        o.close()
        assert h.hexdigest() == want
        _check_protection(c, mode)
        with open(os.path.join(server.paths["data"], name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == want
    finally:
        c.close()
        os.unlink(os.path.join(server.paths["data"], name))


def test_insufficient_credit_charge_rejected(client):
    """MS-SMB2 3.3.5.2.5: a 1 MiB READ with CreditCharge 1 fails with STATUS_INVALID_PARAMETER."""
    c = client
    c.grow_credits(64)
    o = c.open("cc.bin")
    o.write(b"x" * 10)
    msg, recv = o.read(0, MiB, send=False)
    saved = c.conn._calculate_credit_charge
    c.conn._calculate_credit_charge = lambda m: 1
    try:
        req = c.conn.send(msg, c.sess.session_id, c.tree.tree_connect_id)
    finally:
        c.conn._calculate_credit_charge = saved
    with pytest.raises(SMBResponseException) as e:
        recv(req)
    assert status_of(e) == NtStatus.STATUS_INVALID_PARAMETER
    assert o.read(0, 10) == b"x" * 10   # connection still fine
    o.close()


# ---- compound --------------------------------------------------------------------------------
def _query_standard(file_id=b"\xff" * 16) -> SMB2QueryInfoRequest:
    q = SMB2QueryInfoRequest()
    q["info_type"] = InfoType.SMB2_0_INFO_FILE
    q["file_info_class"] = FileInformationClass.FILE_STANDARD_INFORMATION
    q["output_buffer_length"] = 1024
    q["file_id"] = file_id
    return q


def test_compound_related_create_query_close(mclient, server):
    c = mclient
    with open(os.path.join(server.paths["data"], "cmp.txt"), "wb") as f:
        f.write(b"z" * 1234)
    c.rx.clear()
    o = Open(c.tree, "cmp.txt")
    create = o.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_READ, 0, SHARE_ALL,
                      CreateDisposition.FILE_OPEN, 0, send=False)
    close = o.close(False, send=False)
    reqs = c.conn.send_compound([create[0], _query_standard(), close[0]], c.sess.session_id,
                                c.tree.tree_connect_id, related=True)
    create[1](reqs[0])
    resp = c.conn.receive(reqs[1])
    qi = SMB2QueryInfoResponse()
    qi.unpack(resp["data"].get_value())
    info = qi.parse_buffer(FileStandardInformation)
    assert info["end_of_file"].get_value() == 1234
    assert info["directory"].get_value() == 0
    close[1](reqs[2])
    assert not o.connected
    _check_protection(c, c.mode)


def test_compound_related_failure_propagates(mclient):
    """MS-SMB2 3.3.5.2.7.2: a failed CREATE fails the related QUERY_INFO and CLOSE with its status."""
    c = mclient
    o = Open(c.tree, "does-not-exist.txt")
    create = o.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_READ, 0, SHARE_ALL,
                      CreateDisposition.FILE_OPEN, 0, send=False)
    close = o.close(False, send=False)
    reqs = c.conn.send_compound([create[0], _query_standard(), close[0]], c.sess.session_id,
                                c.tree.tree_connect_id, related=True)
    statuses = []
    for r in reqs:
        try:
            c.conn.receive(r)
            statuses.append(0)
        except SMBResponseException as e:
            statuses.append(e.status)
    assert statuses == [NtStatus.STATUS_OBJECT_NAME_NOT_FOUND] * 3


# ---- directory enumeration larger than one response ------------------------------------------
def test_query_directory_3000_entries(client, server):
    d = os.path.join(server.paths["data"], "many")
    os.mkdir(d)
    names = {f"entry_{i:05d}_{'x' * (i % 17)}.dat" for i in range(3000)}
    for n in names:
        open(os.path.join(d, n), "wb").close()
    o = client.opendir("many")
    seen, calls = [], 0
    while True:
        try:
            entries = o.query_directory("*", FileInformationClass.FILE_ID_FULL_DIRECTORY_INFORMATION,
                                        max_output=65536)
        except SMBResponseException as e:
            assert e.status == NtStatus.STATUS_NO_MORE_FILES
            break
        calls += 1
        seen += [e["file_name"].get_value().decode("utf-16-le") for e in entries]
    o.close()
    assert calls > 1, "3000 entries must not fit in one 64 KiB response"
    assert len(seen) == len(set(seen)) == 3002
    assert set(seen) == names | {".", ".."}


# ---- delete on close, share modes ------------------------------------------------------------
def test_delete_on_close(client, server):
    path = os.path.join(server.paths["data"], "doc.txt")
    o = client.open("doc.txt", access=RW | FilePipePrinterAccessMask.DELETE,
                    options=CreateOptions.FILE_DELETE_ON_CLOSE, disposition=CreateDisposition.FILE_CREATE)
    o.write(b"bye")
    assert os.path.exists(path)
    o.close()
    assert not os.path.exists(path)


def test_delete_on_close_needs_delete_access(client):
    with pytest.raises(SMBResponseException) as e:
        client.open("doc2.txt", access=RW, options=CreateOptions.FILE_DELETE_ON_CLOSE)
    assert status_of(e) == NtStatus.STATUS_ACCESS_DENIED


def test_sharing_violation(server, client):
    other = Client(server)
    try:
        a = client.open("shared.txt", share=0)
        with pytest.raises(SMBResponseException) as e:
            other.open("shared.txt", access=FilePipePrinterAccessMask.GENERIC_READ)
        assert status_of(e) == NtStatus.STATUS_SHARING_VIOLATION
        a.close()
        b = client.open("shared.txt", share=ShareAccess.FILE_SHARE_READ)
        with pytest.raises(SMBResponseException) as e:   # wants write, only read is shared
            other.open("shared.txt", access=RW)
        assert status_of(e) == NtStatus.STATUS_SHARING_VIOLATION
        other.open("shared.txt", access=FilePipePrinterAccessMask.GENERIC_READ, share=SHARE_ALL).close()
        b.close()
    finally:
        other.close()


# ---- byte-range locks ------------------------------------------------------------------------
def _lock(offset, length, flags):
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = flags
    return e


EXCL_NOW = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY


@pytest.fixture(params=["plain", "signed", "encrypted"])
def two_opens(server, request):
    """Two connections (3.1.1, protected as the param says) with an open each on the same file;
    the async (STATUS_PENDING) replies must be signed/encrypted like any other."""
    mode = request.param
    one, other = (Client(server, sign=mode == "signed", encrypt=mode == "encrypted") for _ in range(2))
    a = one.open("locked.bin")
    a.write(b"L" * 4096)
    b = other.open("locked.bin")
    yield one, a, other, b
    for o in (a, b):
        try:
            o.close()
        except Exception:
            pass
    one.close()
    other.close()


def test_lock_conflict(two_opens):
    _, a, _, b = two_opens
    a.lock([_lock(0, 100, EXCL_NOW)])
    with pytest.raises(SMBResponseException) as e:
        b.lock([_lock(50, 10, EXCL_NOW)])
    assert status_of(e) == st.STATUS_LOCK_NOT_GRANTED
    with pytest.raises(SMBResponseException) as e:
        b.read(10, 10)
    assert status_of(e) == st.STATUS_FILE_LOCK_CONFLICT
    with pytest.raises(SMBResponseException) as e:
        b.write(b"w", 99)
    assert status_of(e) == st.STATUS_FILE_LOCK_CONFLICT
    assert b.read(100, 10) == b"L" * 10          # outside the range
    assert a.read(0, 10) == b"L" * 10            # the owner is not blocked
    a.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    assert b.read(10, 10) == b"L" * 10
    with pytest.raises(SMBResponseException) as e:  # unlocking what is not locked
        a.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    assert status_of(e) == st.STATUS_RANGE_NOT_LOCKED


def _wait_pending(req, timeout=10):
    """Wait for the interim response (receive(wait=False) would drop the request from smbprotocol's table)."""
    deadline = time.monotonic() + timeout
    while req.response is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert req.response is not None, "no interim response"
    assert req.response["status"].get_value() == NtStatus.STATUS_PENDING
    assert req.async_id is not None


@pytest.mark.parametrize("release", ["unlock", "close"])
def test_blocking_lock_granted_on_unlock(two_opens, release):
    _, a, other, b = two_opens
    a.lock([_lock(0, 100, EXCL_NOW)])
    msg, recv = b.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)], send=False)
    req = other.conn.send(msg, other.sess.session_id, other.tree.tree_connect_id)
    _wait_pending(req)
    time.sleep(0.2)
    assert req.response["status"].get_value() == NtStatus.STATUS_PENDING   # still waiting
    if release == "unlock":
        a.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    else:
        a.close()                               # closing the holder releases its locks (MS-FSA 2.1.5.4)
    recv(req)                                   # final SUCCESS
    if release == "unlock":
        with pytest.raises(SMBResponseException) as e:   # now b owns it
            a.lock([_lock(0, 1, EXCL_NOW)])
        assert status_of(e) == st.STATUS_LOCK_NOT_GRANTED
    b.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])


def test_blocking_lock_waiter_disconnects(server, two_opens):
    one, a, other, b = two_opens
    a.lock([_lock(0, 100, EXCL_NOW)])
    msg, recv = b.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)], send=False)
    req = other.conn.send(msg, other.sess.session_id, other.tree.tree_connect_id)
    _wait_pending(req)
    other.conn.disconnect(False)                # drop the TCP connection with the lock pending
    time.sleep(0.1)
    a.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    a.lock([_lock(0, 100, EXCL_NOW)])           # nobody else got it
    a.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    assert "Traceback" not in server.log()


def test_blocking_lock_cancelled(two_opens):
    _, a, other, b = two_opens
    a.lock([_lock(0, 100, EXCL_NOW)])
    msg, recv = b.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)], send=False)
    req = other.conn.send(msg, other.sess.session_id, other.tree.tree_connect_id)
    _wait_pending(req)
    req.cancel()
    with pytest.raises(Cancelled):
        recv(req)
    a.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    with pytest.raises(SMBResponseException) as e:   # the cancelled lock was never granted
        b.lock([_lock(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    assert status_of(e) == st.STATUS_RANGE_NOT_LOCKED


# ---- CHANGE_NOTIFY ---------------------------------------------------------------------------
def test_change_notify_on_create_by_other_open(server, mclient):
    watched = f"watched_{mclient.mode}"
    os.mkdir(os.path.join(server.paths["data"], watched))
    d = mclient.opendir(watched)
    mclient.rx.clear()
    w = FileSystemWatcher(d)
    w.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
    _wait_pending(w._request)
    other = Client(server)
    try:
        other.open(f"{watched}\\new-file.txt", disposition=CreateDisposition.FILE_CREATE).close()
        assert w.response_event.wait(10), "CHANGE_NOTIFY did not complete"
        result = w.result
        assert [(r["action"].get_value(), r["file_name"].get_value()) for r in result][0] == \
            (FileAction.FILE_ACTION_ADDED, "new-file.txt")
        _check_protection(mclient, mclient.mode)
    finally:
        other.close()
        d.close()


def test_change_notify_cancel(client, server):
    os.makedirs(os.path.join(server.paths["data"], "watched2"), exist_ok=True)
    d = client.opendir("watched2")
    w = FileSystemWatcher(d)
    w.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
    _wait_pending(w._request)
    w.cancel()
    assert w.response_event.wait(10)
    assert w.cancelled and w.result is None
    d.close()


# ---- path escapes (raw names, no client-side normalisation) ----------------------------------
@pytest.fixture
def outside(server):
    """A secret next to the share root and a symlink in the share pointing at it."""
    secret = os.path.join(server.root, "secret.txt")
    with open(secret, "w") as f:
        f.write("TOP SECRET")
    link = os.path.join(server.paths["data"], "link_out")
    if not os.path.lexists(link):
        os.symlink(server.root, link)
    with open(os.path.join(server.paths["data"], "inside.txt"), "w") as f:
        f.write("inside")
    return secret


@pytest.mark.parametrize("name,status", [
    ("..\\..\\etc\\passwd", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("..\\secret.txt", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("a\\..\\..\\x", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("inside.txt\\..\\..\\secret.txt", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("..", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("../secret.txt", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("\\secret.txt", st.STATUS_INVALID_PARAMETER),
    ("\\..\\secret.txt", st.STATUS_INVALID_PARAMETER),
    ("/etc/passwd", st.STATUS_INVALID_PARAMETER),
    ("inside.txt:..\\..\\secret.txt", st.STATUS_OBJECT_NAME_INVALID),   # ':' before the last component
    ("inside.txt:evil:$BOGUS", st.STATUS_OBJECT_NAME_INVALID),           # only $DATA streams
    ("inside.txt:evil:", st.STATUS_OBJECT_NAME_INVALID),                  # empty stream type
    ("..:evil", st.STATUS_OBJECT_NAME_INVALID),
    (".smbnd:streams\\x", st.STATUS_OBJECT_NAME_INVALID),                 # the stream store is unreachable
    ("dir:x\\file", st.STATUS_OBJECT_NAME_INVALID),
    ("..:$DATA", st.STATUS_OBJECT_NAME_INVALID),
    ("a<b>.txt", st.STATUS_OBJECT_NAME_INVALID),
    ("*.txt", st.STATUS_OBJECT_NAME_INVALID),
    ("new\x01.txt", st.STATUS_OBJECT_NAME_INVALID),
    ("link_out\\secret.txt", st.STATUS_ACCESS_DENIED),
    ("link_out", st.STATUS_ACCESS_DENIED),
    ("nodir\\x.txt", st.STATUS_OBJECT_PATH_NOT_FOUND),
])
def test_path_escape(client, server, outside, name, status):
    before = set(os.listdir(server.root)), set(os.listdir(server.paths["data"]))
    for disp in (CreateDisposition.FILE_OPEN, CreateDisposition.FILE_OPEN_IF):
        o = Open(client.tree, name)
        with pytest.raises(SMBResponseException) as e:
            o.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_READ, 0, SHARE_ALL,
                     disp, 0)
        assert status_of(e) == status, f"{name!r} disposition {disp}: {status_of(e):#x}"
    assert (set(os.listdir(server.root)), set(os.listdir(server.paths["data"]))) == before
    with open(outside) as f:
        assert f.read() == "TOP SECRET"


@pytest.mark.parametrize("target,status", [
    ("..\\stolen.txt", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("\\..\\stolen.txt", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("a\\..\\..\\stolen.txt", st.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("link_out\\stolen.txt", st.STATUS_ACCESS_DENIED),
    ("stolen.txt:ev*l", st.STATUS_OBJECT_NAME_INVALID),
    ("st<o>len.txt", st.STATUS_OBJECT_NAME_INVALID),
])
def test_rename_escape(client, server, outside, target, status):
    """SET_INFO FileRenameInformation targets follow the CREATE path rules (a leading '\\' is allowed)."""
    from smbprotocol.open import SMB2SetInfoRequest
    with open(os.path.join(server.paths["data"], "victim.txt"), "w") as f:
        f.write("victim")
    before = set(os.listdir(server.root)), set(os.listdir(server.paths["data"]))
    o = client.open("victim.txt", access=RW | FilePipePrinterAccessMask.DELETE,
                    disposition=CreateDisposition.FILE_OPEN)
    name = target.encode("utf-16-le")
    req = SMB2SetInfoRequest()
    req["info_type"] = InfoType.SMB2_0_INFO_FILE
    req["file_info_class"] = FileInformationClass.FILE_RENAME_INFORMATION
    req["file_id"] = o.file_id
    req["buffer"] = struct.pack("<B7sQI", 1, b"\0" * 7, 0, len(name)) + name
    r = client.conn.send(req, client.sess.session_id, client.tree.tree_connect_id)
    with pytest.raises(SMBResponseException) as e:
        client.conn.receive(r)
    assert status_of(e) == status, f"{target!r}: {status_of(e):#x}"
    o.close()
    assert (set(os.listdir(server.root)), set(os.listdir(server.paths["data"]))) == before
    assert not os.path.lexists(os.path.join(server.root, "stolen.txt"))


def test_named_stream_stays_with_its_file(client, server, outside):
    """'file:stream' either names a data stream of that file or is refused (OBJECT_NAME_INVALID,
    no stream support): it never creates a host file named 'file:stream', never changes the base
    file's data and never writes outside the share."""
    share = server.paths["data"]
    before_root = set(os.listdir(server.root))
    try:
        o = client.open("inside.txt:evil", disposition=CreateDisposition.FILE_OPEN_IF)
    except SMBResponseException as e:
        assert e.status == st.STATUS_OBJECT_NAME_INVALID
    else:
        o.write(b"stream data")
        o.close()
        o = client.open("inside.txt:evil:$DATA", disposition=CreateDisposition.FILE_OPEN)
        assert o.read(0, 11) == b"stream data"
        o.close()
    with open(os.path.join(share, "inside.txt")) as f:
        assert f.read() == "inside"
    assert set(os.listdir(server.root)) == before_root
    assert not os.path.lexists(os.path.join(share, "inside.txt:evil"))
    d = client.opendir("")
    names = {e["file_name"].get_value().decode("utf-16-le")
             for e in d.query_directory("*", FileInformationClass.FILE_NAMES_INFORMATION)}
    d.close()
    assert not [n for n in names if ":" in n]


def test_default_data_stream_opens_file(client, outside):
    o = client.open("inside.txt::$DATA", access=FilePipePrinterAccessMask.GENERIC_READ,
                    disposition=CreateDisposition.FILE_OPEN)
    assert o.read(0, 6) == b"inside"
    o.close()
    d = client.opendir("")
    names = {e["file_name"].get_value().decode("utf-16-le")
             for e in d.query_directory("*", FileInformationClass.FILE_NAMES_INFORMATION)}
    d.close()
    assert "inside.txt" in names and "link_out" not in names and "secret.txt" not in names
