"""CREATE / QUERY_INFO / SET_INFO / QUERY_DIRECTORY behaviour with a real client (smbprotocol):
named streams, extended attributes, stored security descriptors, 8.3 names, allocation size,
enumeration after deletes, write offset limits (smbtorture smb2.create/getinfo/setinfo/dir/rw)."""
import os
import struct
import uuid

import pytest
from smbprotocol.connection import Connection, Dialects
from smbprotocol.create_contexts import SMB2CreateContextRequest, SMB2CreateQueryMaximalAccessResponse
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.file_info import InfoType
from smbprotocol.open import (CreateDisposition, CreateOptions, DirectoryAccessMask, FilePipePrinterAccessMask,
                              ImpersonationLevel, Open, ShareAccess, SMB2QueryDirectoryRequest,
                              SMB2QueryInfoRequest, SMB2QueryInfoResponse, SMB2SetInfoRequest, SMB2WriteRequest)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from smbnd import status as st
from smbnd.wire import security as sec
from smbnd.wire.fscc_ea import decode_full_ea_list, encode_full_ea_list, encode_get_ea_list
from smbnd_server import PASSWORD, USER

A = FilePipePrinterAccessMask
RW = A.GENERIC_READ | A.GENERIC_WRITE
ALL = A.GENERIC_ALL
SHARE_ALL = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
MAX_ALLOWED = 0x02000000
# info classes (MS-FSCC 2.4)
BOTH_DIR, STANDARD, EA_INFO, FULL_EA, ALT_NAME, STREAM, NORMALIZED = 3, 5, 7, 15, 21, 22, 48
ALLOCATION, DISPOSITION = 19, 13


class Client:
    def __init__(self, server, dialect=Dialects.SMB_3_1_1):
        self.conn = Connection(uuid.uuid4(), server.host, server.port)
        self.conn.connect(dialect, timeout=15)
        self.sess = Session(self.conn, USER, PASSWORD)
        self.sess.connect()
        self.tree = TreeConnect(self.sess, rf"\\{server.host}\data")
        self.tree.connect()

    def open(self, name, access=RW, disp=CreateDisposition.FILE_OPEN_IF, options=0, contexts=None,
             attrs=0):
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, access, attrs, SHARE_ALL, disp, options, contexts)
        return o

    def status_of_open(self, name, **kw) -> int:
        try:
            self.open(name, **kw).close()
        except SMBResponseException as e:
            return e.status
        return 0

    def _call(self, req):
        r = self.conn.send(req, self.sess.session_id, self.tree.tree_connect_id)
        try:
            resp = self.conn.receive(r)
        except SMBResponseException as e:
            return e.status, None
        return resp["status"].get_value(), resp

    def query(self, o, cls, info_type=InfoType.SMB2_0_INFO_FILE, out=65536, inp=b"", flags=0, addl=0):
        q = SMB2QueryInfoRequest()
        q["info_type"] = info_type
        q["file_info_class"] = cls
        q["output_buffer_length"] = out
        q["flags"] = flags
        q["additional_information"] = addl
        q["file_id"] = o.file_id
        if inp:
            q["buffer"] = inp
        status, resp = self._call(q)
        if resp is None:
            return status, b""
        qi = SMB2QueryInfoResponse()
        qi.unpack(resp["data"].get_value())
        return status, qi["buffer"].get_value()

    def set(self, o, cls, buf, info_type=InfoType.SMB2_0_INFO_FILE, addl=0) -> int:
        s = SMB2SetInfoRequest()
        s["info_type"] = info_type
        s["file_info_class"] = cls
        s["additional_information"] = addl
        s["file_id"] = o.file_id
        s["buffer"] = buf
        return self._call(s)[0]

    def listdir(self, o, cls=BOTH_DIR, single=False, restart=True):
        q = SMB2QueryDirectoryRequest()
        q["file_information_class"] = cls
        q["flags"] = (0x1 if restart else 0) | (0x2 if single else 0)
        q["file_id"] = o.file_id
        q["buffer"] = "*".encode("utf-16-le")
        q["output_buffer_length"] = 65536
        status, resp = self._call(q)
        if resp is None:
            return status, []
        data = resp["data"].get_value()
        off, ln = struct.unpack_from("<HI", data, 2)
        buf = data[off - 64: off - 64 + ln]
        out, pos = [], 0
        while buf:
            nxt = struct.unpack_from("<I", buf, pos)[0]
            nlen = struct.unpack_from("<I", buf, pos + 60)[0]
            short_len = buf[pos + 68] if cls == BOTH_DIR else 0
            short = buf[pos + 70: pos + 70 + short_len].decode("utf-16-le") if cls == BOTH_DIR else ""
            name = buf[pos + 94: pos + 94 + nlen].decode("utf-16-le")
            out.append((name, short))
            if not nxt:
                break
            pos += nxt
        return status, out


def ctx(name: bytes, data: bytes) -> SMB2CreateContextRequest:
    c = SMB2CreateContextRequest()
    c["buffer_name"] = name
    c["buffer_data"] = data
    return c


def dir_open(c, name=""):
    return c.open(name, access=DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.FILE_READ_ATTRIBUTES
                  | DirectoryAccessMask.SYNCHRONIZE, disp=CreateDisposition.FILE_OPEN,
                  options=CreateOptions.FILE_DIRECTORY_FILE)


def stream_names(buf: bytes) -> dict[str, int]:
    out, pos = {}, 0
    while buf:
        nxt, nlen, size = struct.unpack_from("<IIQ", buf, pos)
        out[buf[pos + 24: pos + 24 + nlen].decode("utf-16-le")] = size
        if not nxt:
            return out
        pos += nxt
    return out


@pytest.fixture(scope="module")
def c(server):
    cl = Client(server)
    yield cl
    cl.conn.disconnect(True)


def share(server, *p):
    return os.path.join(server.paths["data"], *p)


# ---- named streams -------------------------------------------------------------------------
def test_named_stream_lifecycle(c, server):
    o = c.open("st.txt:Alpha")            # creates the file and its stream (MS-FSA 2.1.5.1.1)
    o.write(b"stream-data", 0)
    o.close()
    assert os.path.getsize(share(server, "st.txt")) == 0
    b = c.open("ST.TXT", access=A.GENERIC_READ, disp=CreateDisposition.FILE_OPEN)
    status, buf = c.query(b, STREAM)
    assert status == 0 and stream_names(buf) == {"::$DATA": 0, ":Alpha:$DATA": 11}
    s = c.open("st.txt:ALPHA:$DATA", access=A.GENERIC_READ, disp=CreateDisposition.FILE_OPEN)
    assert s.read(0, 11) == b"stream-data"
    status, buf = c.query(s, NORMALIZED)
    assert status == 0 and buf[4:].decode("utf-16-le") == "st.txt:Alpha"   # name as created
    s.close()
    # the store is invisible over SMB
    d = dir_open(c)
    status, ents = c.listdir(d)
    d.close()
    assert not [n for n, _ in ents if ":" in n]
    assert c.status_of_open("st.txt:nope", disp=CreateDisposition.FILE_OPEN) == st.STATUS_OBJECT_NAME_NOT_FOUND
    assert c.status_of_open("st.txt:x", options=CreateOptions.FILE_DIRECTORY_FILE) == st.STATUS_NOT_A_DIRECTORY
    # delete-on-close of the stream removes only the stream
    s = c.open("st.txt:alpha", access=A.GENERIC_READ | A.DELETE, disp=CreateDisposition.FILE_OPEN,
               options=CreateOptions.FILE_DELETE_ON_CLOSE)
    s.close()
    status, buf = c.query(b, STREAM)
    assert stream_names(buf) == {"::$DATA": 0}
    b.close()
    # deleting the file deletes its streams' storage too
    c.open("st.txt:beta").close()
    store = share(server, ".smbnd:streams")
    assert os.listdir(store)
    c.open("st.txt", access=A.DELETE, disp=CreateDisposition.FILE_OPEN,
           options=CreateOptions.FILE_DELETE_ON_CLOSE).close()
    assert not os.path.exists(share(server, "st.txt")) and os.listdir(store) == []


def test_overwrite_drops_streams_and_directory_streams(c, server):
    c.open("ow.txt:s1").close()
    o = c.open("ow.txt", disp=CreateDisposition.FILE_OVERWRITE_IF)
    assert stream_names(c.query(o, STREAM)[1]) == {"::$DATA": 0}
    o.close()
    d = c.open("sdir", disp=CreateDisposition.FILE_OPEN_IF, options=CreateOptions.FILE_DIRECTORY_FILE)
    s = c.open("sdir:ds")
    s.write(b"x", 0)
    s.close()
    assert stream_names(c.query(d, STREAM)[1]) == {":ds:$DATA": 1}
    d.close()


# ---- extended attributes -------------------------------------------------------------------
def test_eas_create_query_set(c, server):
    eas = encode_full_ea_list([("EaOne", b"VALUE1", 0), ("SecondEA", b"ValueTwo", 0)])[0]
    o = c.open("ea.txt", access=ALL, disp=CreateDisposition.FILE_OVERWRITE_IF,
               contexts=[ctx(b"ExtA", eas)])
    status, buf = c.query(o, FULL_EA, flags=1)
    assert status == 0
    got = decode_full_ea_list(buf)
    assert [(n, v) for n, v, _ in got] == [("EAONE", b"VALUE1"), ("SECONDEA", b"ValueTwo")]   # upper-cased
    status, ea_size = c.query(o, EA_INFO)
    assert struct.unpack("<I", ea_size)[0] == len(buf)
    assert c.query(o, FULL_EA)[0] == st.STATUS_NO_MORE_EAS               # the enumeration went on
    status, one = c.query(o, FULL_EA, flags=1 | 2)                       # restart + single entry
    assert [n for n, _, _ in decode_full_ea_list(one)] == ["EAONE"]
    status, buf = c.query(o, FULL_EA, inp=encode_get_ea_list(["secondea", "missing"]))
    assert [(n, v) for n, v, _ in decode_full_ea_list(buf)] == [("SECONDEA", b"ValueTwo"), ("MISSING", b"")]
    # an empty value deletes; a bad name is refused
    assert c.set(o, FULL_EA, encode_full_ea_list([("eaone", b"", 0), ("SecondEA", b"", 0)])[0]) == 0
    assert c.query(o, FULL_EA, flags=1)[0] == st.STATUS_NO_EAS_ON_FILE
    bad = struct.pack("<IBBH", 0, 0, 3, 1) + b"a*b\0x"
    assert c.set(o, FULL_EA, bad) == st.STATUS_INVALID_EA_NAME
    o.close()
    r = c.open("ea.txt", access=A.FILE_READ_ATTRIBUTES, disp=CreateDisposition.FILE_OPEN)
    assert c.query(r, FULL_EA, flags=1)[0] == st.STATUS_ACCESS_DENIED
    r.close()


# ---- security descriptors ------------------------------------------------------------------
def _sd(c, o) -> sec.SecurityDescriptor:
    status, buf = c.query(o, 0, info_type=InfoType.SMB2_0_INFO_SECURITY, addl=0x7)
    assert status == 0
    return sec.decode_sd(buf)


def test_security_descriptor_stored_and_enforced(c, server):
    o = c.open("acl.txt", access=MAX_ALLOWED, disp=CreateDisposition.FILE_OVERWRITE_IF)
    sd = _sd(c, o)
    o.close()
    sd.dacl.aces.append(sec.Ace(sec.ACCESS_ALLOWED_ACE_TYPE, 0, 0x001F0000, sec.SID_AUTHENTICATED_USERS))
    o = c.open("acl2.txt", access=MAX_ALLOWED, disp=CreateDisposition.FILE_OVERWRITE_IF,
               contexts=[ctx(b"SecD", sec.encode_sd(sd))])
    got = _sd(c, o)
    assert [(a.sid, a.mask) for a in got.dacl.aces] == [(a.sid, a.mask) for a in sd.dacl.aces]
    # an empty DACL: only the owner's implicit READ_CONTROL|WRITE_DAC remain (MS-DTYP 2.5.3.2)
    empty = sec.SecurityDescriptor(dacl=sec.Acl([]))
    assert c.set(o, 0, sec.encode_sd(empty), info_type=InfoType.SMB2_0_INFO_SECURITY, addl=0x4) == 0
    assert c.status_of_open("acl2.txt", access=A.READ_CONTROL, disp=CreateDisposition.FILE_OPEN) == 0
    assert c.status_of_open("acl2.txt", access=A.FILE_READ_DATA,
                            disp=CreateDisposition.FILE_OPEN) == st.STATUS_ACCESS_DENIED
    # no DACL at all in the set request: a NULL DACL, everyone gets everything
    assert c.set(o, 0, sec.encode_sd(sec.SecurityDescriptor()), info_type=InfoType.SMB2_0_INFO_SECURITY,
                 addl=0x4) == 0
    got = _sd(c, o)
    assert got.dacl is None and got.control & sec.SE_DACL_PRESENT
    assert c.status_of_open("acl2.txt", access=A.FILE_READ_DATA, disp=CreateDisposition.FILE_OPEN) == 0
    o.close()


# ---- 8.3 names, enumeration ----------------------------------------------------------------
def test_short_names(c, server):
    c.open("dir83", options=CreateOptions.FILE_DIRECTORY_FILE).close()
    c.open("dir83\\torture_search.txt").close()
    c.open("dir83\\abc.txt").close()
    d = dir_open(c, "dir83")
    status, ents = c.listdir(d)
    d.close()
    short = dict(ents)
    assert short["abc.txt"] == ""                      # already an 8.3 name
    alias = short["torture_search.txt"]
    assert alias.startswith("TO") and alias.endswith("~1.TXT") and len(alias) == 12
    o = c.open("dir83\\torture_search.txt", access=A.GENERIC_READ, disp=CreateDisposition.FILE_OPEN)
    status, buf = c.query(o, ALT_NAME)
    assert buf[4:].decode("utf-16-le") == alias
    o.close()
    o = c.open("dir83\\" + alias.lower(), access=A.GENERIC_READ, disp=CreateDisposition.FILE_OPEN)
    assert c.query(o, NORMALIZED)[1][4:].decode("utf-16-le") == "dir83\\torture_search.txt"
    o.close()


def test_enumeration_skips_entries_deleted_meanwhile(c, server):
    c.open("enum", options=CreateOptions.FILE_DIRECTORY_FILE).close()
    for i in range(5):
        c.open(f"enum\\f{i}").close()
    d = dir_open(c, "enum")
    status, first = c.listdir(d, single=True)
    assert status == 0 and first[0][0] == "."
    for i in range(5):
        os.unlink(share(server, "enum", f"f{i}"))
    status, rest = c.listdir(d, restart=False)
    assert [n for n, _ in rest] == [".."]
    d.close()


def test_normalized_name_needs_311(server):
    c2 = Client(server, Dialects.SMB_3_0_2)
    try:
        o = c2.open("norm.txt")
        assert c2.query(o, NORMALIZED)[0] == st.STATUS_NOT_SUPPORTED
        o.close()
    finally:
        c2.conn.disconnect(True)


# ---- allocation size, write limits, create contexts --------------------------------------
def test_allocation_size(c, server):
    o = Open(c.tree, "alloc.bin")
    o.create(ImpersonationLevel.Impersonation, RW, 0, SHARE_ALL, CreateDisposition.FILE_OVERWRITE_IF, 0,
             [ctx(b"AlSi", struct.pack("<Q", 1 << 20))])
    assert o.allocation_size == 1 << 20 and o.end_of_file == 0
    assert c.set(o, ALLOCATION, struct.pack("<Q", 0)) == 0
    alloc, eof = struct.unpack_from("<QQ", c.query(o, STANDARD)[1])
    assert (alloc, eof) == (0, 0)
    assert c.set(o, ALLOCATION, struct.pack("<Q", 4096)) == 0
    alloc, eof = struct.unpack_from("<QQ", c.query(o, STANDARD)[1])
    assert (alloc, eof) == (4096, 0)
    assert c.set(o, ALLOCATION, struct.pack("<Q", 1 << 60)) == st.STATUS_DISK_FULL
    o.close()


def _write(c, o, offset, data):
    w = SMB2WriteRequest()
    w["offset"] = offset
    w["file_id"] = o.file_id
    w["buffer"] = data
    return c._call(w)[0]


def test_write_offset_limits(c, server):
    o = c.open("wr.bin", disp=CreateDisposition.FILE_OVERWRITE_IF)
    for off in (0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE, 1 << 63):
        assert _write(c, o, off, b"x") == st.STATUS_INVALID_PARAMETER, hex(off)
    assert _write(c, o, 0xFFFFFFF0000, b"x") == st.STATUS_INVALID_PARAMETER   # past the NTFS maximum
    assert _write(c, o, (1 << 63) - 1, b"") == 0                                # empty writes are fine
    assert _write(c, o, 0, b"ok") == 0
    o.close()
    assert os.path.getsize(share(server, "wr.bin")) == 2


def test_create_context_name_too_short(c, server):
    for name in (b"x", b"xx", b"xxx"):
        assert c.status_of_open("cc.txt", contexts=[ctx(name, b"")]) == st.STATUS_INVALID_PARAMETER
    assert c.status_of_open("cc.txt", contexts=[ctx(b"xxxxx", b"")]) == 0


def test_access_mask_checked_before_attributes(c, server):
    # smb2.create.gentest: reserved access bits win over an invalid attribute (VOLUME)
    assert c.status_of_open("g.txt", access=0x08000000, attrs=0x8,
                            disp=CreateDisposition.FILE_CREATE) == st.STATUS_ACCESS_DENIED
    assert c.status_of_open("g.txt", attrs=0x8) == st.STATUS_INVALID_PARAMETER


def test_stream_sharing_and_directory_data_stream(c, server):
    # a directory has no unnamed data stream (smb2.streams.dir)
    c.open("dd", options=CreateOptions.FILE_DIRECTORY_FILE).close()
    assert c.status_of_open("dd::$DATA", disp=CreateDisposition.FILE_OPEN,
                            options=CreateOptions.FILE_DIRECTORY_FILE) == st.STATUS_NOT_A_DIRECTORY
    assert c.status_of_open("dd::$DATA", disp=CreateDisposition.FILE_OPEN) == st.STATUS_FILE_IS_A_DIRECTORY
    # an open stream that does not share delete keeps its file from being opened for DELETE
    o = Open(c.tree, "sh.txt:s")
    o.create(ImpersonationLevel.Impersonation, RW, 0, ShareAccess.FILE_SHARE_READ,
             CreateDisposition.FILE_OPEN_IF, 0)
    assert c.status_of_open("sh.txt", access=A.DELETE,
                            disp=CreateDisposition.FILE_OPEN) == st.STATUS_SHARING_VIOLATION
    assert c.status_of_open("sh.txt", access=A.GENERIC_READ, disp=CreateDisposition.FILE_OPEN) == 0
    o.close()
    assert c.status_of_open("sh.txt", access=A.DELETE, disp=CreateDisposition.FILE_OPEN) == 0


def test_maximal_access_follows_stored_sd(c, server):
    o = c.open("mx.txt", access=MAX_ALLOWED, disp=CreateDisposition.FILE_OVERWRITE_IF)
    me = _sd(c, o).owner
    ro = sec.SecurityDescriptor(dacl=sec.Acl([sec.Ace(sec.ACCESS_ALLOWED_ACE_TYPE, 0, 0x00120089, me)]))
    assert c.set(o, 0, sec.encode_sd(ro), info_type=InfoType.SMB2_0_INFO_SECURITY, addl=0x4) == 0
    o.close()
    m = Open(c.tree, "mx.txt")
    resp = m.create(ImpersonationLevel.Impersonation, MAX_ALLOWED, 0, SHARE_ALL, CreateDisposition.FILE_OPEN, 0,
                    [ctx(b"MxAc", b"")])
    mxac = [r for r in resp if isinstance(r, SMB2CreateQueryMaximalAccessResponse)][0]
    status, mask = mxac["query_status"].get_value(), mxac["maximal_access"].get_value()
    # GENERIC_READ rights + the owner's READ_CONTROL|WRITE_DAC + DELETE (parent's FILE_DELETE_CHILD)
    assert status == 0 and mask == 0x00120089 | 0x00040000 | 0x00010000
    m.close()


def test_short_name_rules():
    from smbnd.vfs_short import is_8dot3, short_name
    assert is_8dot3("ABC.TXT") and is_8dot3("abc.txt") and is_8dot3("a") and not is_8dot3("a.b.c")
    assert not is_8dot3("toolongname.txt") and not is_8dot3("x.html") and not is_8dot3("sp ace.txt")
    assert short_name("abc.txt") == ""
    s = short_name("torture_search.txt")
    assert s == short_name("TORTURE_SEARCH.TXT") and is_8dot3(s) and s.endswith("~1.TXT")
    assert short_name(".bashrc").endswith("~1") and is_8dot3(short_name("a+b;c.longext"))


def test_ea_codec_rejects_bad_lists():
    from smbnd.wire.fscc import FsccError
    good = encode_full_ea_list([("A", b"1", 0), ("BB", b"22", 0)])[0]
    assert [n for n, _, _ in decode_full_ea_list(good)] == ["A", "BB"]
    for bad in (b"", good[:-1], struct.pack("<IBBH", 0, 0, 5, 0) + b"ab\0", struct.pack("<IBBH", 0, 1, 1, 0) + b"a\0"):
        with pytest.raises(FsccError):
            decode_full_ea_list(bad)
