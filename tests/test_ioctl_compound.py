"""FSCTLs (server-side copy, sparse files, network interfaces, validate negotiate) and compound
chains against a real smbnd, with a raw SMB2 client (exact headers and bodies) and smbprotocol."""
import os
import struct
import uuid

import pytest
from smbprotocol.connection import Connection, Dialects
from smbprotocol.exceptions import SMBException
from smbprotocol.ioctl import SMB2IOCTLRequest, SMB2ValidateNegotiateInfoRequest
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from smbnd import status as st
from smbnd_server import PASSWORD, USER
from test_malformed import (CLOSE, CREATE, ECHO, FLAGS_RELATED, IOCTL, LOCK, QUERY_INFO, READ, WRITE, Raw,
                            close_body, create_body, empty_body, ioctl_body, lock_body, query_info_body, read_body,
                            write_body)

FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = 0x001440F2
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2
FSCTL_SET_SPARSE = 0x000900C4
FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_QUERY_ALLOCATED_RANGES = 0x000940CF
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_DFS_GET_REFERRALS = 0x00060194
FILE_ATTRIBUTE_SPARSE_FILE = 0x200
FF16 = b"\xff" * 16
READ_DATA, WRITE_DATA, APPEND_DATA, EXECUTE, READ_ATTRS = 0x1, 0x2, 0x4, 0x20, 0x80
ALL_ACCESS = 0x001F01FF


def ioctl_out(m: bytes) -> bytes:
    """Output buffer of an IOCTL response (MS-SMB2 2.2.32)."""
    ooff, olen = struct.unpack_from("<II", m, 64 + 32)
    return m[ooff:ooff + olen]


@pytest.fixture
def raw(server):
    c = Raw(server)
    c.negotiate((0x0210,))
    c.login()
    c.tree_connect()
    yield c
    c.close()


def _open(c: Raw, name, access=ALL_ACCESS, disp=3, data=None) -> bytes:
    status, m = c.call(CREATE, create_body(name, disp=disp, access=access))
    assert status == 0, hex(status)
    fid = m[128:144]
    for off in range(0, len(data or b""), 65536):      # credit charge 1: 64 KiB per WRITE
        assert c.call(WRITE, write_body(fid, data[off:off + 65536], offset=off))[0] == 0
    return fid


def _fsctl(c: Raw, fid, code, inp=b"", maxout=4096):
    status, m = c.call(IOCTL, ioctl_body(fid=fid, code=code, inp=inp, maxout=maxout))
    return status, (ioctl_out(m) if len(m) > 64 + 48 else b"")


def _resume_key(c: Raw, fid) -> bytes:
    status, out = _fsctl(c, fid, FSCTL_SRV_REQUEST_RESUME_KEY, maxout=32)
    assert status == 0 and len(out) == 32
    return out[:24]


def _copy(c: Raw, dst, key, chunks, code=FSCTL_SRV_COPYCHUNK, maxout=12):
    inp = key + struct.pack("<II", len(chunks), 0) + b"".join(struct.pack("<QQII", s, t, n, 0) for s, t, n in chunks)
    status, out = _fsctl(c, dst, code, inp, maxout)
    return status, (struct.unpack("<III", out) if len(out) == 12 else None)


def _read(c: Raw, fid, n, off=0) -> bytes:
    status, m = c.call(READ, read_body(fid, n, offset=off))
    assert status == 0, hex(status)
    return m[80:80 + struct.unpack_from("<I", m, 68)[0]]


PATTERN = bytes(range(256)) * 32      # 8 KiB


# ---- server-side copy (MS-SMB2 3.3.5.15.6) ---------------------------------------------------
def test_copychunk_basic_and_response(raw):
    src = _open(raw, "cc_src", disp=5, data=PATTERN)
    dst = _open(raw, "cc_dst", disp=5)
    key = _resume_key(raw, src)
    status, rsp = _copy(raw, dst, key, [(0, 0, 4096), (4096, 4096, 4096)])
    # 2.2.32.1: ChunkBytesWritten is 0 on success
    assert (status, rsp) == (0, (2, 0, 8192))
    assert _read(raw, dst, 8192) == PATTERN


def test_copychunk_same_file_overlap(raw):
    f = _open(raw, "cc_self", disp=5, data=PATTERN[:4096])
    status, rsp = _copy(raw, f, _resume_key(raw, f), [(0, 2040, 2048)])
    assert (status, rsp) == (0, (1, 0, 2048))
    assert _read(raw, f, 4088) == PATTERN[:2040] + PATTERN[:2048]   # read whole chunk before writing


def test_copychunk_limits_and_errors(raw):
    src = _open(raw, "cc_src2", disp=5, data=PATTERN[:4096])
    dst = _open(raw, "cc_dst2", disp=5)
    key = _resume_key(raw, src)
    limits = (256, 1024 * 1024, 16 * 1024 * 1024)
    assert _copy(raw, dst, key, [(0, 0, 0)]) == (st.STATUS_INVALID_PARAMETER, limits)          # zero length
    assert _copy(raw, dst, key, [(0, 0, 0xFFFFFFFF)]) == (st.STATUS_INVALID_PARAMETER, limits)
    assert _copy(raw, dst, key, [(0, 0, 1)] * 257) == (st.STATUS_INVALID_PARAMETER, limits)
    assert _copy(raw, dst, key, [(0, 0, 4096)], maxout=11)[0] == st.STATUS_INVALID_PARAMETER
    assert _copy(raw, dst, b"deadbeef" * 3, [(0, 0, 4096)])[0] == st.STATUS_OBJECT_NAME_NOT_FOUND
    # past the source's EOF: earlier chunks stay written and are reported
    assert _copy(raw, dst, key, [(0, 0, 1024), (1024, 1024, 8192)]) == (st.STATUS_INVALID_VIEW_SIZE, (1, 0, 1024))
    raw.call(CLOSE, close_body(src))
    assert _copy(raw, dst, key, [(0, 0, 10)])[0] == st.STATUS_OBJECT_NAME_NOT_FOUND   # source closed


@pytest.mark.parametrize("src_access,dst_access,code,status", [
    (EXECUTE | READ_ATTRS, ALL_ACCESS, FSCTL_SRV_COPYCHUNK, 0),
    (READ_ATTRS, ALL_ACCESS, FSCTL_SRV_COPYCHUNK, st.STATUS_ACCESS_DENIED),
    (READ_DATA, ALL_ACCESS & ~(WRITE_DATA | APPEND_DATA), FSCTL_SRV_COPYCHUNK, st.STATUS_ACCESS_DENIED),
    (READ_DATA, ALL_ACCESS & ~READ_DATA, FSCTL_SRV_COPYCHUNK, st.STATUS_ACCESS_DENIED),
    (READ_DATA, ALL_ACCESS & ~READ_DATA, FSCTL_SRV_COPYCHUNK_WRITE, 0),
])
def test_copychunk_access(raw, src_access, dst_access, code, status):
    _open(raw, "cc_acc_src", disp=5, data=PATTERN[:4096])
    _open(raw, "cc_acc_dst", disp=5)
    src = _open(raw, "cc_acc_src", access=src_access, disp=1)
    dst = _open(raw, "cc_acc_dst", access=dst_access, disp=1)
    assert _copy(raw, dst, _resume_key(raw, src), [(0, 0, 4096)], code=code)[0] == status


def test_copychunk_respects_byte_range_locks(raw, server):
    src = _open(raw, "cc_lck_src", disp=5, data=PATTERN[:4096])
    dst = _open(raw, "cc_lck_dst", disp=5)
    other = _open(raw, "cc_lck_src", disp=1)
    assert raw.call(LOCK, lock_body(other, ((0, 4096, 0x12),)))[0] == 0     # exclusive, fail-immediately
    key = _resume_key(raw, src)
    assert _copy(raw, dst, key, [(0, 0, 4096)]) == (st.STATUS_FILE_LOCK_CONFLICT, (0, 0, 0))
    assert raw.call(LOCK, lock_body(other, ((0, 4096, 0x4),)))[0] == 0      # unlock
    assert _copy(raw, dst, key, [(0, 0, 4096)]) == (0, (1, 0, 4096))


# ---- sparse files (MS-FSCC 2.3.64 / 2.3.85 / 2.3.51) -----------------------------------------
def _attrs(c: Raw, fid) -> int:
    status, m = c.call(QUERY_INFO, query_info_body(fid, cls=4))     # FileBasicInformation
    assert status == 0
    return struct.unpack_from("<I", m, 72 + 32)[0]


def _qar(c: Raw, fid, off, length, maxout=1024):
    status, out = _fsctl(c, fid, FSCTL_QUERY_ALLOCATED_RANGES, struct.pack("<QQ", off, length), maxout)
    return status, [struct.unpack_from("<QQ", out, i) for i in range(0, len(out), 16)]


def test_sparse_flag_punch_and_allocated_ranges(raw, server):
    f = _open(raw, "sp.bin", disp=5, data=os.urandom(128 * 1024))
    assert not _attrs(raw, f) & FILE_ATTRIBUTE_SPARSE_FILE
    # a non-sparse file reports the whole requested range (clipped at EOF) allocated
    assert _qar(raw, f, 1, 1 << 20) == (0, [(1, 128 * 1024 - 1)])
    assert _fsctl(raw, f, FSCTL_SET_SPARSE)[0] == 0                  # no buffer: SetSparse = TRUE
    assert _attrs(raw, f) & FILE_ATTRIBUTE_SPARSE_FILE
    zero = struct.pack("<QQ", 64 * 1024, 128 * 1024)
    assert _fsctl(raw, f, FSCTL_SET_ZERO_DATA, zero)[0] == 0
    assert _read(raw, f, 65536, 65536) == bytes(65536)
    assert _qar(raw, f, 0, 128 * 1024) == (0, [(0, 64 * 1024)])
    path = os.path.join(server.paths["data"], "sp.bin")
    assert os.stat(path).st_size == 128 * 1024                      # zeroing never changes EOF
    # buffer too small for one range / room for one of two
    assert _qar(raw, f, 0, 128 * 1024, maxout=0)[0] == st.STATUS_BUFFER_TOO_SMALL
    assert _fsctl(raw, f, FSCTL_SET_ZERO_DATA, struct.pack("<QQ", 16384, 32768))[0] == 0
    assert _qar(raw, f, 0, 128 * 1024) == (0, [(0, 16384), (32768, 32768)])
    assert _qar(raw, f, 0, 128 * 1024, maxout=31) == (st.STATUS_BUFFER_OVERFLOW, [(0, 16384)])
    assert _fsctl(raw, f, FSCTL_SET_SPARSE, b"\0")[0] == 0
    assert not _attrs(raw, f) & FILE_ATTRIBUTE_SPARSE_FILE
    assert _qar(raw, f, 0, 128 * 1024) == (0, [(0, 128 * 1024)])


def test_sparse_invalid_requests(raw):
    f = _open(raw, "sp2.bin", disp=5, data=b"x" * 1024)
    assert _qar(raw, f, 512, 0xFFFFFFFFFFFFFFFF)[0] == st.STATUS_INVALID_PARAMETER     # off + len wraps
    assert _fsctl(raw, f, FSCTL_QUERY_ALLOCATED_RANGES, b"")[0] == st.STATUS_INVALID_PARAMETER
    assert _fsctl(raw, f, FSCTL_SET_ZERO_DATA, struct.pack("<QQ", 10, 9))[0] == st.STATUS_INVALID_PARAMETER
    ro = _open(raw, "sp2.bin", access=READ_DATA | READ_ATTRS, disp=1)
    assert _fsctl(raw, ro, FSCTL_SET_SPARSE)[0] == st.STATUS_ACCESS_DENIED
    assert _fsctl(raw, ro, FSCTL_SET_ZERO_DATA, struct.pack("<QQ", 0, 8))[0] == st.STATUS_ACCESS_DENIED
    status, m = raw.call(CREATE, create_body("spdir", disp=3, opts=0x1))
    assert status == 0
    assert _fsctl(raw, m[128:144], FSCTL_SET_SPARSE)[0] == st.STATUS_INVALID_PARAMETER


def test_zero_data_lock_conflict(raw):
    f = _open(raw, "sp3.bin", disp=5, data=b"y" * 8192)
    other = _open(raw, "sp3.bin", disp=1)
    assert raw.call(LOCK, lock_body(other, ((0, 4096, 0x12),)))[0] == 0
    assert _fsctl(raw, f, FSCTL_SET_ZERO_DATA, struct.pack("<QQ", 0, 100))[0] == st.STATUS_FILE_LOCK_CONFLICT
    assert _fsctl(raw, f, FSCTL_SET_ZERO_DATA, struct.pack("<QQ", 4096, 8192))[0] == 0
    assert _read(raw, f, 4096, 4096) == bytes(4096)


# ---- handle-less FSCTLs (MS-SMB2 3.3.5.15) ---------------------------------------------------
def test_network_interface_info(server):
    c = Raw(server)
    c.negotiate((0x0300,))
    c.login()
    c.tree_connect()
    try:
        status, out = _fsctl(c, FF16, FSCTL_QUERY_NETWORK_INTERFACE_INFO, maxout=65536)
        assert status == 0 and len(out) == 152
        nxt, index, _cap, _r, speed, family = struct.unpack_from("<IIIIQH", out)
        assert nxt == 0 and index != 0 and speed > 0 and family == 2
        assert out[28:32] == bytes([127, 0, 0, 1])                      # the address we listen on
        assert _fsctl(c, FF16, FSCTL_QUERY_NETWORK_INTERFACE_INFO, maxout=1)[0] == st.STATUS_BUFFER_TOO_SMALL
        # not addressed to an open: any other FileId is STATUS_INVALID_PARAMETER (not FILE_CLOSED)
        fid = b"\xff" * 8 + b"\x7f" * 8
        assert _fsctl(c, fid, FSCTL_QUERY_NETWORK_INTERFACE_INFO)[0] == st.STATUS_INVALID_PARAMETER
        assert _fsctl(c, FF16, FSCTL_DFS_GET_REFERRALS, b"\0\0" * 4)[0] == st.STATUS_FS_DRIVER_REQUIRED
    finally:
        c.close()


def test_network_interface_info_not_on_smb2(raw):
    assert _fsctl(raw, FF16, FSCTL_QUERY_NETWORK_INTERFACE_INFO)[0] == st.STATUS_NOT_SUPPORTED


def test_unknown_fsctl_on_file(raw):
    f = _open(raw, "unk.bin", disp=5)
    assert _fsctl(raw, f, 0x00090000 | (0x7FF << 2))[0] == st.STATUS_INVALID_DEVICE_REQUEST


def _smbprotocol_session(server, dialect):
    conn = Connection(uuid.uuid4(), server.host, server.port, require_signing=True)
    conn.connect(dialect, timeout=15)
    sess = Session(conn, USER, PASSWORD)
    sess.connect()
    tree = TreeConnect(sess, rf"\\{server.host}\data")
    tree.connect()          # smbprotocol validates the negotiate on 3.0/3.0.2 (signed response)
    return conn, sess, tree


def _vni(conn, sess, tree):
    v = SMB2ValidateNegotiateInfoRequest()
    v["capabilities"] = conn.client_capabilities
    v["guid"] = conn.client_guid
    v["security_mode"] = conn.client_security_mode
    v["dialects"] = [conn.dialect]
    req = SMB2IOCTLRequest()
    req["ctl_code"] = FSCTL_VALIDATE_NEGOTIATE_INFO
    req["file_id"] = FF16
    req["max_output_response"] = 24
    req["flags"] = 1
    req["buffer"] = v
    return conn.send(req, sid=sess.session_id, tid=tree.tree_connect_id)


@pytest.mark.parametrize("dialect", [Dialects.SMB_3_0_0, Dialects.SMB_3_0_2])
def test_validate_negotiate_30(server, dialect):
    conn, _sess, _tree = _smbprotocol_session(server, dialect)
    conn.disconnect(True)


def test_validate_negotiate_311_disconnects(server):
    """MS-SMB2 3.3.5.15.12: VALIDATE_NEGOTIATE_INFO on a 3.1.1 connection: transport dropped."""
    conn, sess, tree = _smbprotocol_session(server, Dialects.SMB_3_1_1)
    req = _vni(conn, sess, tree)
    with pytest.raises((SMBException, OSError, ConnectionError)):
        conn.receive(req, timeout=10)
    conn.disconnect(False)


# ---- compound chains (MS-SMB2 3.3.5.2.7, 3.3.4.1.3) ------------------------------------------
def _chain(c: Raw, parts):
    """Send [(cmd, body, header kwargs)] as one compound; return the response messages in order."""
    msgs = []
    for i, (cmd, body, kw) in enumerate(parts):
        m = c.header(cmd, **kw) + body
        if i != len(parts) - 1:
            m += b"\0" * ((8 - len(m) % 8) % 8)
            m = m[:20] + struct.pack("<I", len(m)) + m[24:]
        msgs.append(m)
    c.send_frame(b"".join(msgs))
    frame = c.recv_frame()
    out, off = [], 0
    while True:
        nxt = struct.unpack_from("<I", frame, off + 20)[0]
        out.append(frame[off:off + nxt] if nxt else frame[off:])
        if not nxt:
            return out
        off += nxt


def test_compound_last_response_padded(raw):
    f = _open(raw, "pad.bin", disp=5, data=b"123")
    raw.call(CLOSE, close_body(f))
    rs = _chain(raw, [(CREATE, create_body("pad.bin", disp=1), {}),
                      (READ, read_body(FF16, 3), {"flags": FLAGS_RELATED})])
    assert [struct.unpack_from("<I", m, 8)[0] for m in rs] == [0, 0]
    assert len(rs[1]) == 64 + 24                 # 16-byte READ body + 3 bytes, padded to 8
    assert rs[1][80:83] == b"123"
    # a single (non-compound) response is not padded
    status, m = raw.call(READ, read_body(rs[0][128:144], 3))
    assert status == 0 and len(m) == 64 + 19


def test_compound_related_without_session(raw):
    """3.3.5.2.7.2: a related operation whose predecessor had no valid session fails with
    STATUS_INVALID_PARAMETER (smb2.compound.invalid2)."""
    bad = 0xFFFFFFFFFFFFFFFF
    rs = _chain(raw, [(CREATE, create_body("inv2.bin", disp=3), {}),
                      (CLOSE, close_body(FF16), {"flags": FLAGS_RELATED, "sid": bad, "tid": 0xFFFFFFFF}),
                      (CLOSE, close_body(FF16), {"sid": bad}),
                      (CLOSE, close_body(FF16), {"flags": FLAGS_RELATED, "sid": bad})])
    assert [struct.unpack_from("<I", m, 8)[0] for m in rs] == [
        0, 0, st.STATUS_USER_SESSION_DELETED, st.STATUS_INVALID_PARAMETER]


def test_compound_related_first_consumes_message_id(raw):
    mid = raw.mid
    assert raw.call(ECHO, empty_body(), flags=FLAGS_RELATED)[0] == st.STATUS_INVALID_PARAMETER
    raw.send(ECHO, empty_body(), mid=mid)        # MessageId reuse: disconnect (3.3.5.2.3)
    assert raw.is_closed()
