"""Hostile input: raw-socket attacks on the framing, header and each command's fixed part, and
hypothesis properties of the pure codecs in smbnd.wire.

Every attack runs on its own connection. Afterwards the attacked connection has either been answered
with the NTSTATUS the spec asks for or been closed, and a healthy client (connected before the
attack) still works, the server process is alive, and its log has no traceback."""
import os
import socket
import struct
import uuid

import pytest
import spnego
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.kbkdf import CounterLocation, KBKDFHMAC, Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from smbnd import status as st
from smbnd.wire import create as wcreate
from smbnd.wire import fscc
from smbnd.wire import header as whdr
from smbnd.wire import messages as wmsg
from smbnd.wire import negotiate as wneg
from smbnd.wire import query as wquery
from smbnd_server import PASSWORD, USER

# commands (MS-SMB2 2.2.1.2)
(NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT, TREE_DISCONNECT, CREATE, CLOSE, FLUSH, READ, WRITE, LOCK, IOCTL,
 CANCEL, ECHO, QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO, SET_INFO, OPLOCK_BREAK) = range(0x13)
FLAGS_ASYNC, FLAGS_RELATED = 0x2, 0x4
STATUS_PENDING = 0x103
SENTINEL = b"healthy-data-" * 100
INVALID = st.STATUS_INVALID_PARAMETER


# ---- a minimal raw SMB2 client ---------------------------------------------------------------
class Closed(Exception):
    pass


class Raw:
    def __init__(self, server, timeout=5.0):
        self.server = server
        self.s = socket.create_connection((server.host, server.port), timeout=timeout)
        self.mid = 0
        self.sid = 0
        self.tid = 0
        self.fid = b""
        self.session_key = b""

    def close(self):
        self.s.close()

    # framing
    def send_frame(self, payload: bytes, nb_len: int | None = None, nb_type: int = 0) -> None:
        n = len(payload) if nb_len is None else nb_len
        self.s.sendall(bytes([nb_type]) + n.to_bytes(3, "big") + payload)

    def _recvn(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.s.recv(n - len(buf))
            except (ConnectionResetError, BrokenPipeError):
                raise Closed() from None
            if not chunk:
                raise Closed()
            buf += chunk
        return buf

    def recv_frame(self) -> bytes:
        h = self._recvn(4)
        return self._recvn(int.from_bytes(h[1:], "big"))

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (any frames before that are discarded)."""
        self.s.settimeout(timeout)
        try:
            while True:
                self.recv_frame()
        except Closed:
            return True
        except socket.timeout:
            return False

    # messages
    def header(self, cmd, *, mid=None, charge=1, credits=64, flags=0, next_cmd=0, sid=None, tid=None,
               proto=b"\xfeSMB", size=64, async_id=None) -> bytes:
        if mid is None:
            mid = self.mid
            self.mid += max(charge, 1)
        sid = self.sid if sid is None else sid
        tid = self.tid if tid is None else tid
        tail = struct.pack("<Q", async_id) if async_id is not None else struct.pack("<II", 0, tid)
        if async_id is not None:
            flags |= FLAGS_ASYNC
        return struct.pack("<4sHHIHHIIQ", proto, size, charge, 0, cmd, credits, flags, next_cmd, mid) + tail + \
            struct.pack("<Q16s", sid, b"\0" * 16)

    def send(self, cmd, body: bytes, **kw) -> int:
        h = self.header(cmd, **kw)
        self.send_frame(h + body)
        return struct.unpack_from("<Q", h, 24)[0]

    def recv(self) -> tuple[int, bytes]:
        """Next final response: (status, whole message); interim STATUS_PENDING is skipped."""
        while True:
            m = self.recv_frame()
            assert m[:4] == b"\xfeSMB", m[:4]
            status = struct.unpack_from("<I", m, 8)[0]
            if status == STATUS_PENDING and struct.unpack_from("<I", m, 16)[0] & FLAGS_ASYNC:
                continue
            return status, m

    def call(self, cmd, body: bytes, **kw) -> tuple[int, bytes]:
        self.send(cmd, body, **kw)
        return self.recv()

    # setup
    def negotiate(self, dialects=(0x0210,), caps=0) -> bytes:
        status, m = self.call(NEGOTIATE, negotiate_body(dialects, caps))
        assert status == 0, hex(status)
        return m

    def login(self) -> None:
        ctx = spnego.client(USER, PASSWORD, hostname="smbnd", service="cifs", protocol="ntlm")
        tok = ctx.step()
        while True:
            status, m = self.call(SESSION_SETUP, session_setup_body(tok))
            self.sid = struct.unpack_from("<Q", m, 40)[0]
            off, ln = struct.unpack_from("<HH", m, 64 + 4)
            if status == 0:
                break
            assert status == st.STATUS_MORE_PROCESSING_REQUIRED, hex(status)
            tok = ctx.step(m[off:off + ln])
        self.session_key = ctx.session_key

    def tree_connect(self, share="data") -> None:
        status, m = self.call(TREE_CONNECT, tree_connect_body(self.server.host, share))
        assert status == 0, hex(status)
        self.tid = struct.unpack_from("<I", m, 36)[0]

    def create(self, name, disp=3) -> bytes:
        status, m = self.call(CREATE, create_body(name, disp=disp))
        assert status == 0, hex(status)
        return m[64 + 64: 64 + 80]

    def ready(self, name="victim.bin", dialects=(0x0210,)) -> "Raw":
        self.negotiate(dialects)
        self.login()
        self.tree_connect()
        self.fid = self.create(name, disp=5)   # FILE_OVERWRITE_IF: start from an empty file
        status, _ = self.call(WRITE, write_body(self.fid, SENTINEL))
        assert status == 0
        return self


# ---- request bodies (MS-SMB2 2.2.x), valid unless a caller tampers with them -----------------
def negotiate_body(dialects, caps=0, secmode=1, size=36):
    return struct.pack("<HHHHI16s8s", size, len(dialects), secmode, 0, caps, uuid.uuid4().bytes, b"\0" * 8) + \
        struct.pack(f"<{len(dialects)}H", *dialects)


def session_setup_body(token, size=25, off=88, length=None):
    return struct.pack("<HBBIIHHQ", size, 0, 1, 0, 0, off, len(token) if length is None else length, 0) + token


def tree_connect_body(host, share, size=9):
    p = f"\\\\{host}\\{share}".encode("utf-16-le")
    return struct.pack("<HHHH", size, 0, 72, len(p)) + p


def create_body(name, disp=3, size=57, access=0x0012019F, opts=0x40):
    n = name.encode("utf-16-le")
    return struct.pack("<HBBIQQIIIIIHHII", size, 0, 0, 2, 0, 0, access, 0x80, 7, disp, opts, 120, len(n), 0, 0) \
        + (n or b"\0")


def close_body(fid, size=24):
    return struct.pack("<HHI16s", size, 0, 0, fid)


def read_body(fid, length=100, offset=0, size=49):
    return struct.pack("<HBBIQ16sIIIHH", size, 0x50, 0, length, offset, fid, 0, 0, 0, 0, 0) + b"\0"


def write_body(fid, data, offset=0, size=49, doff=112, length=None):
    return struct.pack("<HHIQ16sIIHHI", size, doff, len(data) if length is None else length, offset, fid,
                       0, 0, 0, 0, 0) + data


def lock_body(fid, elements=((0, 10, 0x12),), size=48, count=None):
    els = b"".join(struct.pack("<QQII", o, ln, f, 0) for o, ln, f in elements)
    return struct.pack("<HHI16s", size, len(elements) if count is None else count, 0, fid) + els


FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC


def ioctl_body(fid=b"\xff" * 16, code=FSCTL_QUERY_NETWORK_INTERFACE_INFO, inp=b"", size=57, ioff=120,
               ilen=None, maxout=4096, flags=1):
    return struct.pack("<HHI16sIIIIIIII", size, 0, code, fid, ioff, len(inp) if ilen is None else ilen, 0, 120, 0,
                       maxout, flags, 0) + (inp or b"")


def query_directory_body(fid, pattern="*", outlen=65536, size=33, nlen=None):
    p = pattern.encode("utf-16-le")
    return struct.pack("<HBBI16sHHI", size, 37, 0, 0, fid, 96, len(p) if nlen is None else nlen, outlen) + p


def change_notify_body(fid, outlen=4096, size=32):
    return struct.pack("<HHI16sII", size, 0, outlen, fid, 1, 0)


def query_info_body(fid, outlen=4096, size=41, itype=1, cls=5, ilen=0, ioff=0):
    return struct.pack("<HBBIHHIII16s", size, itype, cls, outlen, ioff, 0, ilen, 0, 0, fid) + b"\0"


def set_info_body(fid, buf=b"\0" * 40, size=33, blen=None, boff=96):
    return struct.pack("<HBBIHHI16s", size, 1, 4, len(buf) if blen is None else blen, boff, 0, 0, fid) + buf


def empty_body(size=4):
    return struct.pack("<HH", size, 0)


def oplock_break_body(fid, size=24):
    return struct.pack("<HBBI16s", size, 0, 0, 0, fid)


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def healthy(server):
    c = Raw(server).ready("healthy.bin", dialects=(0x0300,))
    yield c
    c.close()


@pytest.fixture(autouse=True)
def still_healthy(server, healthy):
    log_start = len(server.log())
    yield
    # the healthy connection (opened before the attack) keeps working
    healthy.s.settimeout(10)
    status, _ = healthy.call(ECHO, empty_body())
    assert status == 0
    status, m = healthy.call(READ, read_body(healthy.fid, len(SENTINEL)))
    assert status == 0 and m[80:80 + len(SENTINEL)] == SENTINEL
    assert server.proc.poll() is None, "server process died"
    log = server.log()[log_start:]
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def fresh(server):
    c = Raw(server)
    yield c
    c.close()


@pytest.fixture
def victim(server):
    c = Raw(server).ready()
    yield c
    c.close()


# ---- framing ---------------------------------------------------------------------------------
def test_truncated_header(fresh):
    """MS-SMB2 3.3.5.2: a message shorter than the SMB2 header cannot be processed: disconnect."""
    fresh.send_frame(b"\xfeSMB" + b"\0" * 20)
    assert fresh.is_closed()


def test_truncated_header_after_negotiate(fresh):
    fresh.negotiate()
    fresh.send_frame(fresh.header(ECHO)[:63])
    assert fresh.is_closed()


def test_truncated_body_is_invalid_parameter(victim):
    """MS-SMB2 3.3.5.2.6: a request not conforming to section 2 -> STATUS_INVALID_PARAMETER."""
    for cmd in (CREATE, READ, WRITE, LOCK, IOCTL, QUERY_INFO, SET_INFO, QUERY_DIRECTORY, CLOSE, ECHO):
        status, _ = victim.call(cmd, b"")
        assert status == INVALID, (cmd, hex(status))
        status, _ = victim.call(cmd, b"\x31\x00")
        assert status == INVALID, (cmd, hex(status))
    assert victim.call(ECHO, empty_body())[0] == 0


def test_empty_frame(fresh):
    fresh.send_frame(b"")
    assert fresh.is_closed()


def test_netbios_length_longer_than_data(server, fresh):
    """A frame that never completes only stalls its own connection."""
    fresh.negotiate()
    fresh.send_frame(fresh.header(ECHO) + empty_body(), nb_len=10_000)
    assert not fresh.is_closed(timeout=0.3)      # server keeps waiting for the rest
    other = Raw(server)
    other.negotiate()                            # ... while serving everybody else
    assert other.call(ECHO, empty_body())[0] == 0
    other.close()


def test_netbios_max_length_then_close(fresh):
    fresh.send_frame(b"\xfeSMB" + b"\0" * 100, nb_len=0xFFFFFF)
    fresh.s.shutdown(socket.SHUT_WR)
    assert fresh.is_closed()


def test_netbios_length_shorter_than_data(fresh):
    fresh.negotiate()
    msg = fresh.header(ECHO) + empty_body()
    # the first 64 bytes form a bodiless ECHO; the rest is then read as a frame with a bad type byte
    fresh.s.sendall(b"\0" + (64).to_bytes(3, "big") + msg + b"\x81" * 8)
    status, _ = fresh.recv()
    assert status == INVALID
    assert fresh.is_closed()


@pytest.mark.parametrize("nb_type", [0x81, 0x85, 0xFF])
def test_netbios_session_message_type(fresh, nb_type):
    """MS-SMB2 2.1: over Direct TCP the first byte MUST be zero; anything else is dropped."""
    fresh.negotiate()
    fresh.send_frame(fresh.header(ECHO) + empty_body(), nb_type=nb_type)
    assert fresh.is_closed()


@pytest.mark.parametrize("proto", [b"\xfeSMX", b"\x00\x00\x00\x00", b"\xfcSMB", b"\xffSMB"])
def test_bad_protocol_id(fresh, proto):
    """After NEGOTIATE, only 0xFE/0xFD 'SMB' are valid (no compression negotiated): disconnect."""
    fresh.negotiate()
    fresh.send_frame(fresh.header(ECHO, proto=proto) + empty_body())
    assert fresh.is_closed()


def test_bad_protocol_id_first_message(fresh):
    fresh.send_frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 64)
    assert fresh.is_closed()


def test_header_structure_size(fresh):
    fresh.negotiate()
    fresh.send_frame(fresh.header(ECHO, size=65) + empty_body())
    assert fresh.is_closed()


# ---- compound chains -------------------------------------------------------------------------
def _echo_chain(c: Raw, next_cmd: int, tail: bytes = b"") -> bytes:
    first = c.header(ECHO, next_cmd=next_cmd) + empty_body()
    return first + b"\0" * 4 + tail


@pytest.mark.parametrize("next_cmd", [72 + 8000, 0xFFFFFFF8, 68, 73, 8, 64 + 4])
def test_next_command_outside_or_misaligned(victim, next_cmd):
    """MS-SMB2 3.3.5.2.7: NextCommand must stay in the message and be 8-aligned, else disconnect."""
    second = victim.header(ECHO) + empty_body()
    victim.send_frame(_echo_chain(victim, next_cmd, second))
    assert victim.is_closed()


def test_next_command_points_at_truncated_header(victim):
    victim.send_frame(_echo_chain(victim, 72, b"\xfeSMB" + b"\0" * 12))
    assert victim.is_closed()


def test_first_request_related_is_invalid(victim):
    """MS-SMB2 3.3.5.2.7.2: a related first request fails with STATUS_INVALID_PARAMETER."""
    status, _ = victim.call(ECHO, empty_body(), flags=FLAGS_RELATED)
    assert status == INVALID
    assert victim.call(ECHO, empty_body())[0] == 0


def test_async_flag_on_request(victim):
    status, _ = victim.call(ECHO, empty_body(), async_id=7)
    assert status == INVALID
    assert victim.call(ECHO, empty_body())[0] == 0


# ---- StructureSize of each command -----------------------------------------------------------
def _bodies(c: Raw, bad: bool) -> dict:
    d = 1 if bad else 0
    fid = c.fid
    return {
        SESSION_SETUP: (session_setup_body(b"\0" * 8, size=25 + d), {"sid": 0}),
        LOGOFF: (empty_body(4 + d), {}),
        TREE_CONNECT: (tree_connect_body(c.server.host, "data", size=9 + d), {}),
        TREE_DISCONNECT: (empty_body(4 + d), {}),
        CREATE: (create_body("x.txt", size=57 + d), {}),
        CLOSE: (close_body(fid, size=24 + d), {}),
        FLUSH: (close_body(fid, size=24 + d), {}),
        READ: (read_body(fid, size=49 + d), {}),
        WRITE: (write_body(fid, b"abc", size=49 + d), {}),
        LOCK: (lock_body(fid, size=48 + d), {}),
        IOCTL: (ioctl_body(size=57 + d), {}),
        ECHO: (empty_body(4 + d), {}),
        QUERY_DIRECTORY: (query_directory_body(fid, size=33 + d), {}),
        CHANGE_NOTIFY: (change_notify_body(fid, size=32 + d), {}),
        QUERY_INFO: (query_info_body(fid, size=41 + d), {}),
        SET_INFO: (set_info_body(fid, size=33 + d), {}),
        OPLOCK_BREAK: (oplock_break_body(fid, size=24 + d), {}),
    }


@pytest.mark.parametrize("cmd", [c for c in range(1, 0x13) if c != CANCEL])
def test_wrong_structure_size(victim, cmd):
    """MS-SMB2 3.3.5.2.6: wrong StructureSize -> STATUS_INVALID_PARAMETER; nothing is done."""
    body, kw = _bodies(victim, True)[cmd]
    status, _ = victim.call(cmd, body, **kw)
    assert status == INVALID, hex(status)
    # the session, tree and open are all still there
    status, m = victim.call(READ, read_body(victim.fid, len(SENTINEL)))
    assert status == 0 and m[80:80 + len(SENTINEL)] == SENTINEL


def test_wrong_structure_size_negotiate(fresh):
    status, _ = fresh.call(NEGOTIATE, negotiate_body([0x0210], size=37))
    assert status == INVALID
    status, _ = fresh.call(NEGOTIATE, negotiate_body([0x0210]))   # a good one is still accepted
    assert status == 0


def test_negotiate_without_dialects(fresh):
    """MS-SMB2 3.3.5.3.1: DialectCount 0 -> STATUS_INVALID_PARAMETER."""
    status, _ = fresh.call(NEGOTIATE, struct.pack("<HHHHI16s8s", 36, 0, 1, 0, 0, b"\0" * 16, b"\0" * 8))
    assert status == INVALID


def test_negotiate_dialect_count_lies(fresh):
    status, _ = fresh.call(NEGOTIATE, struct.pack("<HHHHI16s8s", 36, 500, 1, 0, 0, b"\0" * 16, b"\0" * 8) +
                           b"\x10\x02")
    assert status == INVALID


def test_negotiate_311_bad_contexts(fresh):
    body = struct.pack("<HHHHI16sIHH", 36, 1, 1, 0, 0, b"\0" * 16, 0xFFF0, 5, 0) + b"\x11\x03"
    status, _ = fresh.call(NEGOTIATE, body)
    assert status == INVALID


# ---- huge lengths ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", [
    "read_len", "read_len_charged", "read_offset", "write_len", "write_offset_field", "write_offset",
    "lock_count", "ioctl_in", "ioctl_in_offset", "ioctl_maxout", "qi_out", "qi_in", "qd_out", "qd_name",
    "si_len", "si_offset", "cn_out", "ss_len", "tc_len", "create_name"])
def test_huge_lengths(victim, case):
    """MS-SMB2 3.3.5.2.5 (credit charge for the payload), 3.3.5.12/13 (Length > MaxRead/WriteSize),
    3.3.5.2.6 (buffers outside the message): STATUS_INVALID_PARAMETER, the connection stays up."""
    fid = victim.fid
    big = 0xFFFFFFFF
    kw = {}
    body = {
        "read_len": lambda: read_body(fid, big),
        "read_offset": lambda: read_body(fid, 10, offset=0xFFFFFFFFFFFFFFFF),
        "write_len": lambda: write_body(fid, b"abc", length=big),
        "write_offset_field": lambda: write_body(fid, b"abc", doff=0xFFFF),
        "write_offset": lambda: write_body(fid, b"abc", offset=0xFFFFFFFFFFFFFFF0),
        "lock_count": lambda: lock_body(fid, count=0xFFFF),
        "ioctl_in": lambda: ioctl_body(inp=b"x" * 8, ilen=big),
        "ioctl_in_offset": lambda: ioctl_body(inp=b"x" * 8, ioff=big),
        "ioctl_maxout": lambda: ioctl_body(maxout=big),
        "qi_out": lambda: query_info_body(fid, outlen=big),
        "qi_in": lambda: query_info_body(fid, ilen=big, ioff=104),
        "qd_out": lambda: query_directory_body(fid, outlen=big),
        "qd_name": lambda: query_directory_body(fid, nlen=0xFFFF),
        "si_len": lambda: set_info_body(fid, blen=big),
        "si_offset": lambda: set_info_body(fid, boff=0xFFFF),
        "cn_out": lambda: change_notify_body(fid, outlen=big),
        "ss_len": lambda: session_setup_body(b"\0" * 8, length=0xFFFF),
        "tc_len": lambda: struct.pack("<HHHH", 9, 0, 72, 0xFFFF) + b"\\\0",
        "create_name": lambda: struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x80, 0, 7, 1, 0, 120, 0xFFFE,
                                           0, 0) + b"a\0",
    }
    if case == "read_len_charged":
        cmd, b, kw = READ, read_body(fid, big), {"charge": 64}   # charge 64 < 65536 needed
    else:
        name = case.split("_")[0]
        cmd = {"read": READ, "write": WRITE, "lock": LOCK, "ioctl": IOCTL, "qi": QUERY_INFO, "qd": QUERY_DIRECTORY,
               "si": SET_INFO, "cn": CHANGE_NOTIFY, "ss": SESSION_SETUP, "tc": TREE_CONNECT,
               "create": CREATE}[name]
        b = body[case]()
        if cmd == SESSION_SETUP:
            kw = {"sid": 0}
    status, _ = victim.call(cmd, b, **kw)
    assert status == INVALID, hex(status)
    status, m = victim.call(READ, read_body(fid, len(SENTINEL)))
    assert status == 0 and m[80:80 + len(SENTINEL)] == SENTINEL
    with open(os.path.join(victim.server.paths["data"], "victim.bin"), "rb") as f:
        assert f.read() == SENTINEL


FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_SET_SPARSE = 0x000900C4


@pytest.mark.parametrize("sparse_flag", [False, True])
def test_set_zero_data_over_huge_sparse_range(server, sparse_flag):
    """FSCTL_SET_ZERO_DATA (MS-FSCC 2.3.75) over a multi-TiB sparse range must not write TiB of zeros
    (a one-request disk-filling DoS); data inside the range is zeroed, data outside is kept."""
    c = Raw(server).ready("sparse.bin")
    path = os.path.join(server.paths["data"], "sparse.bin")
    try:
        assert c.call(WRITE, write_body(c.fid, b"TAIL", offset=1 << 40))[0] == 0   # host-level hole
        if sparse_flag:
            assert c.call(IOCTL, ioctl_body(fid=c.fid, code=FSCTL_SET_SPARSE))[0] == 0
        c.s.settimeout(5)
        status, _ = c.call(IOCTL, ioctl_body(fid=c.fid, code=FSCTL_SET_ZERO_DATA,
                                             inp=struct.pack("<QQ", 4, (1 << 40) + 2)))
        assert status == 0
        assert os.stat(path).st_blocks * 512 < 16 * 1024 * 1024
        status, m = c.call(READ, read_body(c.fid, len(SENTINEL)))
        assert status == 0 and m[80:80 + len(SENTINEL)] == SENTINEL[:4] + b"\0" * (len(SENTINEL) - 4)
        status, m = c.call(READ, read_body(c.fid, 4, offset=1 << 40))
        assert status == 0 and m[80:84] == b"\0\0IL"
    finally:
        c.close()
        os.unlink(path)


def test_read_length_on_202_without_multicredit(server):
    """2.0.2 has no multi-credit: MS-SMB2 3.3.5.12 Length > MaxReadSize -> STATUS_INVALID_PARAMETER."""
    c = Raw(server).ready(dialects=(0x0202,))
    try:
        status, _ = c.call(READ, read_body(c.fid, 0xFFFFFFFF))
        assert status == INVALID
        status, _ = c.call(WRITE, write_body(c.fid, b"x" * 70000))
        assert status == INVALID
    finally:
        c.close()


# ---- sequencing ------------------------------------------------------------------------------
def test_request_before_negotiate(fresh):
    """MS-SMB2 3.3.5.2: any request other than NEGOTIATE on an un-negotiated connection: disconnect."""
    fresh.send_frame(fresh.header(ECHO) + empty_body())
    assert fresh.is_closed()


def test_session_setup_before_negotiate(fresh):
    fresh.send_frame(fresh.header(SESSION_SETUP) + session_setup_body(b"NTLMSSP\0"))
    assert fresh.is_closed()


def test_second_negotiate(fresh):
    """MS-SMB2 3.3.5.3.1: NEGOTIATE on a negotiated connection: disconnect."""
    fresh.negotiate()
    fresh.send_frame(fresh.header(NEGOTIATE) + negotiate_body([0x0210]))
    assert fresh.is_closed()


def test_second_negotiate_after_login(victim):
    victim.send_frame(victim.header(NEGOTIATE) + negotiate_body([0x0210]))
    assert victim.is_closed()


@pytest.mark.parametrize("mid", [10_000, 0xFFFFFFFFFFFFFFFF, "reuse", "charge"])
def test_message_id_outside_window(victim, mid):
    """MS-SMB2 3.3.5.2.3: a MessageId outside the CommandSequenceWindow (or already used): disconnect."""
    kw = {}
    if mid == "reuse":
        kw["mid"] = victim.mid - 1
    elif mid == "charge":   # charge reaches past the granted credits
        kw = {"charge": 5000}
    else:
        kw["mid"] = mid
    victim.send_frame(victim.header(ECHO, **kw) + empty_body())
    assert victim.is_closed()


def test_request_for_other_session(server, victim, healthy):
    """A SessionId of another connection's session: STATUS_USER_SESSION_DELETED (3.3.5.2.9)."""
    status, _ = victim.call(READ, read_body(healthy.fid), sid=healthy.sid, tid=healthy.tid)
    assert status == st.STATUS_USER_SESSION_DELETED
    status, _ = victim.call(READ, read_body(victim.fid), tid=victim.tid + 77)
    assert status == st.STATUS_NETWORK_NAME_DELETED
    status, _ = victim.call(READ, read_body(healthy.fid))   # FileId of another session
    assert status == st.STATUS_FILE_CLOSED


# ---- SESSION_SETUP tokens --------------------------------------------------------------------
@pytest.mark.parametrize("token", [b"", b"\x00" * 50, os.urandom(300), b"NTLMSSP\0\x03\0\0\0" + b"\xff" * 80,
                                   b"\x60\x82\xff\xff\x06\x06\x2b\x06\x01\x05\x05\x02",
                                   b"\xa1\x84\x7f\xff\xff\xff\x30", b"NTLMSSP\0\x01\0\0\0"])
def test_garbage_session_setup_token(fresh, token):
    """MS-SMB2 3.3.5.5.3: the authentication error becomes the status (LOGON_FAILURE, or
    INVALID_PARAMETER for an unparseable buffer); the connection stays usable."""
    fresh.negotiate()
    status, _ = fresh.call(SESSION_SETUP, session_setup_body(token))
    if status == st.STATUS_MORE_PROCESSING_REQUIRED:   # b"" gets the mech list; a bare NTLM NEGOTIATE a challenge
        assert token in (b"", b"NTLMSSP\0\x01\0\0\0")
    else:
        assert status in (st.STATUS_LOGON_FAILURE, INVALID), hex(status)
    fresh.sid = 0
    fresh.login()                                       # a real login on the same connection works
    fresh.tree_connect()


def test_garbage_second_leg(fresh):
    fresh.negotiate()
    ctx = spnego.client(USER, PASSWORD, hostname="smbnd", service="cifs", protocol="ntlm")
    status, m = fresh.call(SESSION_SETUP, session_setup_body(ctx.step()))
    assert status == st.STATUS_MORE_PROCESSING_REQUIRED
    fresh.sid = struct.unpack_from("<Q", m, 40)[0]
    status, _ = fresh.call(SESSION_SETUP, session_setup_body(b"NTLMSSP\0\x03\0\0\0" + os.urandom(200)))
    assert status == st.STATUS_LOGON_FAILURE
    status, _ = fresh.call(ECHO, empty_body())
    assert status == 0
    status, _ = fresh.call(TREE_CONNECT, tree_connect_body(fresh.server.host, "data"))
    assert status == st.STATUS_USER_SESSION_DELETED         # the failed session is gone


# ---- TRANSFORM_HEADER ------------------------------------------------------------------------
def _kdf(key, label, context):
    return KBKDFHMAC(algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=16, rlen=4, llen=4,
                     location=CounterLocation.BeforeFixed, label=label, context=context, fixed=None).derive(key)


def _transform(c: Raw, plain: bytes, key: bytes | None, sid=None, flags=1, size=None, tamper=False) -> bytes:
    nonce = os.urandom(11)
    sid = c.sid if sid is None else sid
    aad = struct.pack("<16sIHHQ", nonce.ljust(16, b"\0"), len(plain) if size is None else size, 0, flags, sid)
    if key is not None:
        ct = AESCCM(key).encrypt(nonce, plain, aad)
        ct, tag = ct[:-16], ct[-16:]
    else:
        ct, tag = os.urandom(len(plain)), os.urandom(16)
    if tamper:
        ct = bytes([ct[0] ^ 1]) + ct[1:]
    return b"\xfdSMB" + tag + aad + ct


@pytest.fixture
def encrypted(server):
    c = Raw(server)
    c.negotiate((0x0300,), caps=0x40)   # CAP_ENCRYPTION -> AES-128-CCM
    c.login()
    c.tree_connect()
    c.key = _kdf(c.session_key[:16], b"SMB2AESCCM\0", b"ServerIn \0")   # client -> server
    yield c
    c.close()


def test_transform_valid_control(encrypted):
    """Positive control: a correctly encrypted ECHO is answered (encrypted)."""
    c = encrypted
    c.send_frame(_transform(c, c.header(ECHO) + empty_body(), c.key))
    m = c.recv_frame()
    assert m[:4] == b"\xfdSMB"


@pytest.mark.parametrize("case", ["random", "tampered", "unknown_session", "flags", "size_too_big",
                                  "size_too_small", "short", "header_only", "before_3x"])
def test_bogus_transform(server, encrypted, case):
    """MS-SMB2 3.3.5.2.1.1: a transform header that cannot be decrypted: disconnect."""
    c = encrypted
    plain = c.header(ECHO) + empty_body()
    frame = {
        "random": lambda: _transform(c, plain, None),
        "tampered": lambda: _transform(c, plain, c.key, tamper=True),
        "unknown_session": lambda: _transform(c, plain, c.key, sid=c.sid ^ 0xFFFF),
        "flags": lambda: _transform(c, plain, c.key, flags=0),
        "size_too_big": lambda: _transform(c, plain, c.key, size=len(plain) + 100),
        "size_too_small": lambda: _transform(c, plain, c.key, size=10),
        "short": lambda: b"\xfdSMB" + b"\0" * 30,
        "header_only": lambda: _transform(c, b"", c.key),
        "before_3x": lambda: _transform(c, plain, c.key),
    }[case]()
    if case == "before_3x":
        c2 = Raw(server)
        c2.negotiate((0x0210,))
        c2.send_frame(frame)
        assert c2.is_closed()
        c2.close()
        return
    c.send_frame(frame)
    assert c.is_closed()


# ---- hypothesis: pure codecs raise only their documented errors ------------------------------
ALLOWED = (whdr.HeaderError, wneg.NegotiateError, wmsg.MessageError, fscc.FsccError)
H = 64


def _hdr(cmd: int) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, cmd, 1, 0, 0, 1, 0, 1, 1, b"\0" * 16)


_CTX = wcreate.pack_create_contexts([(b"MxAc", b""), (b"RqLs", b"k" * 16 + b"\7\0\0\0" + b"\0" * 12),
                                     (b"QFid", b"x" * 8)])
VALID = {
    "negotiate": _hdr(NEGOTIATE) + struct.pack("<HHHHI16sIHH", 36, 2, 1, 0, 0, b"\0" * 16, 104, 2, 0) +
    struct.pack("<HH", 0x0210, 0x0311) +
    struct.pack("<HHI", 1, 38, 0) + struct.pack("<HHH", 1, 32, 1) + b"s" * 32 + b"\0" * 2 +
    struct.pack("<HHI", 2, 4, 0) + struct.pack("<HH", 1, 2),
    "session_setup": _hdr(SESSION_SETUP) + session_setup_body(b"NTLMSSP\0\x01\0\0\0"),
    "create": _hdr(CREATE) + struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x80, 0, 7, 1, 0, 120, 4, 128,
                                         len(_CTX)) + "ab".encode("utf-16-le") + b"\0" * 4 + _CTX,
    "lock": _hdr(LOCK) + lock_body(b"f" * 16, ((0, 10, 2), (20, 5, 1))),
    "ioctl": _hdr(IOCTL) + ioctl_body(inp=b"in" * 8),
    "query_directory": _hdr(QUERY_DIRECTORY) + query_directory_body(b"f" * 16, "*.txt"),
    "query_info": _hdr(QUERY_INFO) + struct.pack("<HBBIHHIII16s", 41, 1, 5, 100, 104, 0, 4, 0, 0, b"f" * 16) +
    b"abcd",
    "set_info": _hdr(SET_INFO) + set_info_body(b"f" * 16),
    "read": _hdr(READ) + read_body(b"f" * 16),
    "write": _hdr(WRITE) + write_body(b"f" * 16, b"data"),
    "close": _hdr(CLOSE) + close_body(b"f" * 16),
    "tree_connect": _hdr(TREE_CONNECT) + tree_connect_body("h", "s"),
    "change_notify": _hdr(CHANGE_NOTIFY) + change_notify_body(b"f" * 16),
    "break_ack": _hdr(OPLOCK_BREAK) + oplock_break_body(b"f" * 16),
    "create_contexts": _CTX,      # no SMB2 header: the CreateContexts buffer itself
}
SANITY = {"set_info": lambda b: wquery.parse_set_info(b), "close": lambda b: (wmsg.parse_close(b),
                                                                              wmsg.parse_flush(b))}

PARSERS = {
    "header": lambda b: whdr.parse_header(b),
    "transform": lambda b: whdr.parse_transform(b),
    "negotiate": lambda b: [wneg.parse_preauth(c.data) if c.type == 1 else wneg.parse_id_list(c.data, "x")
                            if c.type in (2, 8) else None for c in wneg.parse_negotiate_request(b).contexts],
    "session_setup": lambda b: wmsg.parse_session_setup(b),
    "create": lambda b: [wcreate.parse_lease(v) for k, v in wcreate.parse_create(b).contexts.items()
                         if k == wcreate.CTX_REQUEST_LEASE],
    "create_contexts": lambda b: wcreate.parse_create_contexts(b),
    "lock": lambda b: wmsg.parse_lock(b),
    "ioctl": lambda b: wquery.parse_ioctl(b),
    "query_directory": lambda b: wquery.parse_query_directory(b),
    "query_info": lambda b: wquery.parse_query_info(b),
    "set_info": lambda b: [fscc.decode_set_info(c, wquery.parse_set_info(b).buffer) for c in SET_INFO_CLASSES],
    "read": lambda b: wmsg.parse_read(b),
    "write": lambda b: wmsg.parse_write(b),
    "close": lambda b: wmsg.parse_close(b),
    "flush": lambda b: wmsg.parse_flush(b),
    "tree_connect": lambda b: wmsg.parse_tree_connect(b, 0x0311),
    "change_notify": lambda b: wquery.parse_change_notify(b),
    "break_ack": lambda b: wmsg.parse_break_ack(b),
}
SET_INFO_CLASSES = [4, 10, 13, 14, 19, 20, 6, 16, 39, 64, 65, 72, 11, 12, 66]


def _check(name: str, data: bytes) -> None:
    try:
        PARSERS[name](data)
    except ALLOWED:
        pass


CODEC_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(PARSERS))
@CODEC_SETTINGS
@given(data=hs.binary(max_size=512), with_header=hs.booleans())
def test_codec_random_bytes(name, data, with_header):
    _check(name, (_hdr(0) + data) if with_header else data)


@pytest.mark.parametrize("name", sorted(VALID))
@CODEC_SETTINGS
@given(draw=hs.data())
def test_codec_mutated_valid_message(name, draw):
    base = VALID[name]
    SANITY.get(name, PARSERS[name])(base)   # the unmutated message parses
    start = 0 if name == "create_contexts" else H
    msg = bytearray(base)
    for _ in range(draw.draw(hs.integers(1, 6))):
        kind = draw.draw(hs.sampled_from(["byte", "u16", "u32", "truncate", "extend"]))
        if kind == "truncate":
            del msg[draw.draw(hs.integers(0, len(msg))):]
        elif kind == "extend":
            msg += draw.draw(hs.binary(max_size=64))
        elif len(msg) > start:
            width = {"byte": 1, "u16": 2, "u32": 4}[kind]
            pos = draw.draw(hs.integers(start, max(start, len(msg) - width)))
            val = draw.draw(hs.sampled_from([0, 1, 7, 8, 0x40, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF,
                                             len(msg), len(msg) - H, len(msg) + 1]))
            msg[pos:pos + width] = (val & ((1 << 8 * width) - 1)).to_bytes(width, "little")
    for parser in [name] + {"close": ["flush"]}.get(name, []):
        _check(parser, bytes(msg))
        _check(parser, memoryview(bytes(msg)))   # the server hands handlers memoryview slices
