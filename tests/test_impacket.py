"""impacket's SMBConnection against smbnd on SMB 3.0 and 3.1.1, signed and encrypted."""
import hashlib
import io
import os

import pytest
from impacket.smb3structs import SMB2_DIALECT_30, SMB2_DIALECT_311, SMB2_FLAGS_SIGNED, \
    SMB2_SESSION_FLAG_ENCRYPT_DATA
from impacket.smbconnection import SessionError, SMBConnection

from smbnd import status as st
from smbnd_server import PASSWORD, USER, SmbndServer


@pytest.fixture(scope="module")
def server():
    """Signing required by the server: impacket then signs on 3.0 as well as on 3.1.1."""
    with SmbndServer("--signing-required") as s:
        yield s
        assert "Traceback" not in s.log(), s.log()[-4000:]


def connect(server, dialect, mode):
    conn = SMBConnection(server.host, server.host, sess_port=server.port, preferredDialect=dialect, timeout=30)
    assert conn.getDialect() == dialect
    conn.login(USER, PASSWORD)
    smb3 = conn.getSMBServer()
    assert smb3._Session["SigningRequired"] and smb3._Session["SigningActivated"]
    # impacket switches encryption on by itself whenever the server can encrypt (3.0 CAP_ENCRYPTION,
    # 3.1.1 cipher context); 'signed' turns it off again so requests/responses are signed instead
    assert smb3._Session["SessionFlags"] & SMB2_SESSION_FLAG_ENCRYPT_DATA
    if mode == "signed":
        smb3._Session["SessionFlags"] &= ~SMB2_SESSION_FLAG_ENCRYPT_DATA
    rx = []
    nb = smb3._NetBIOSSession
    orig = nb.recv_packet

    def recv_packet(timeout=None):
        p = orig(timeout)
        rx.append(p.get_trailer()[:64])
        return p
    nb.recv_packet = recv_packet
    return conn, rx


def check_protection(rx, mode):
    assert rx
    for m in rx:
        if mode == "encrypted":
            assert m[:4] == b"\xfdSMB"
        else:
            assert m[:4] == b"\xfeSMB"
            assert int.from_bytes(m[16:20], "little") & SMB2_FLAGS_SIGNED


@pytest.mark.parametrize("dialect", [SMB2_DIALECT_30, SMB2_DIALECT_311], ids=["3.0", "3.1.1"])
@pytest.mark.parametrize("mode", ["signed", "encrypted"])
def test_impacket_file_ops(server, dialect, mode):
    conn, rx = connect(server, dialect, mode)
    root = server.paths["data"]
    d = f"imp_{dialect:x}_{mode}"
    data = os.urandom(1024 * 1024 + 333)   # two 1 MiB-max chunks (impacket is slow)
    try:
        conn.createDirectory("data", d)
        assert os.path.isdir(os.path.join(root, d))
        conn.putFile("data", f"{d}\\a.bin", io.BytesIO(data).read)
        with open(os.path.join(root, d, "a.bin"), "rb") as f:
            assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
        names = {e.get_longname(): e for e in conn.listPath("data", f"{d}\\*")}
        assert set(names) == {".", "..", "a.bin"}
        assert names["a.bin"].get_filesize() == len(data) and not names["a.bin"].is_directory()
        conn.rename("data", f"{d}\\a.bin", f"{d}\\b.bin")
        assert sorted(os.listdir(os.path.join(root, d))) == ["b.bin"]
        buf = io.BytesIO()
        conn.getFile("data", f"{d}\\b.bin", buf.write)
        assert hashlib.sha256(buf.getvalue()).digest() == hashlib.sha256(data).digest()
        with pytest.raises(SessionError) as e:
            conn.getFile("data", f"{d}\\a.bin", io.BytesIO().write)
        assert e.value.getErrorCode() == st.STATUS_OBJECT_NAME_NOT_FOUND
        with pytest.raises(SessionError) as e:   # not empty
            conn.deleteDirectory("data", d)
        assert e.value.getErrorCode() == st.STATUS_DIRECTORY_NOT_EMPTY
        conn.deleteFile("data", f"{d}\\b.bin")
        conn.deleteDirectory("data", d)
        assert not os.path.exists(os.path.join(root, d))
        assert d not in {e.get_longname() for e in conn.listPath("data", "*")}
        check_protection(rx, mode)
    finally:
        conn.close()


def test_impacket_unsigned_request_rejected(server):
    """MS-SMB2 3.3.5.2.4: with signing required, an unsigned request on the session is rejected."""
    conn, rx = connect(server, SMB2_DIALECT_30, "signed")
    smb3 = conn.getSMBServer()
    try:
        conn.listPath("data", "*")
        smb3._Session["SigningActivated"] = False      # stop signing our requests
        with pytest.raises(SessionError) as e:
            conn.listPath("data", "*")
        assert e.value.getErrorCode() == st.STATUS_ACCESS_DENIED
        smb3._Session["SigningActivated"] = True
        conn.listPath("data", "*")                     # the session survives
    finally:
        conn.close()
