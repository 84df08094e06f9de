"""srvsvc on IPC$ (MS-SRVS over ncacn_np) with real clients: smbclient -L, rpcclient, impacket's
SMBTransport; and the named-pipe semantics underneath (message mode, FSCTL_PIPE_TRANSCEIVE with
STATUS_BUFFER_OVERFLOW, pending READ, QUERY_INFO, garbage on the pipe)."""
import struct
import subprocess

import pytest
from impacket.dcerpc.v5 import srvs, transport
from impacket.smbconnection import SessionError, SMBConnection

from smbnd.rpc import pdu as p
from smbnd_server import PASSWORD, USER, SmbndServer
from test_malformed import (CANCEL, CLOSE, CREATE, IOCTL, QUERY_INFO, READ, WRITE, Raw, close_body, create_body,
                            ioctl_body, query_info_body, read_body, write_body)

CRED = f"{USER}%{PASSWORD}"
SRVSVC = p.SyntaxId.of("4b324fc8-1670-01d3-1278-5a47bf6ee188", 3)
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_CANCELLED = 0xC0000120
STATUS_PIPE_DISCONNECTED = 0xC00000B0
STATUS_PIPE_BROKEN = 0xC000014B
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034


def run(*args, timeout=60):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def rpcclient(server, cmd, binding="127.0.0.1"):
    return run("rpcclient", "-p", str(server.port), binding, "-U", CRED, "-c", cmd)


# ---- Samba's clients -----------------------------------------------------------------------------
def test_smbclient_list(server):
    out = run("smbclient", "-L", "//127.0.0.1", "-p", str(server.port), "-U", CRED,
              "--option=client min protocol=SMB2")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()
            if line.startswith("\t") and not line.strip().startswith(("Sharename", "---"))}
    assert rows["data"] == ["Disk"] and rows["ca"] == ["Disk"]
    assert rows["IPC$"] == ["IPC", "Remote", "IPC"]
    assert server.proc.poll() is None


def test_smbclient_list_comments(tmp_path):
    toml = tmp_path / "smbnd.toml"
    docs = tmp_path / "docs"
    docs.mkdir()
    toml.write_text(f'[[share]]\nname = "docs"\npath = "{docs}"\ncomment = "Team documents"\n')
    with SmbndServer("--config", str(toml)) as s:
        out = run("smbclient", "-L", "//127.0.0.1", "-p", str(s.port), "-U", CRED, "--option=client min protocol=SMB2")
        assert out.returncode == 0, out.stderr
        assert any(line.split() == ["docs", "Disk", "Team", "documents"] for line in out.stdout.splitlines()), out.stdout
        assert "Traceback" not in s.log()


def test_rpcclient_netshareenumall(server):
    out = rpcclient(server, "netshareenumall")
    assert out.returncode == 0, out.stderr
    names = [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("netname:")]
    assert names == ["data", "ca", "IPC$"]
    assert f"path:\tC:{server.paths['data'].replace('/', chr(92))}" in out.stdout
    out = rpcclient(server, "netshareenumall 1")
    assert out.returncode == 0 and "remark:\tRemote IPC" in out.stdout
    out = rpcclient(server, "netshareenum")      # NetrShareEnumSticky: no special shares
    assert out.returncode == 0 and "IPC$" not in out.stdout and "netname: ca" in out.stdout


@pytest.mark.parametrize("level", ["", "1", "2", "502", "1005"])   # what rpcclient can print
def test_rpcclient_netsharegetinfo(server, level):
    out = rpcclient(server, f"netsharegetinfo data {level}".strip())
    assert out.returncode == 0, out.stdout + out.stderr
    if level == "1005":
        assert "flags: 0x0" in out.stdout
    else:
        assert "netname: data" in out.stdout
    if level in ("", "502"):
        assert "SID: S-1-1-0" in out.stdout        # the share's security descriptor


def test_rpcclient_ca_flags_and_errors(server):
    out = rpcclient(server, "netsharegetinfo ca 1005")
    # ENABLE_CA only: CLUSTER_MANAGED needs ServerConfig.clustered (tests/test_witness_srvsvc.py)
    assert out.returncode == 0 and "flags: 0x4000" in out.stdout and "0x84000" not in out.stdout
    out = rpcclient(server, "netsharegetinfo nosuch")
    assert "WERR_NERR_NETNAMENOTFOUND" in out.stdout + out.stderr
    out = rpcclient(server, "netsharegetinfo data 7")
    assert "WERR_INVALID_LEVEL" in out.stdout + out.stderr
    out = rpcclient(server, "srvinfo")
    assert out.returncode == 0 and "platform_id     :\t500" in out.stdout and "10.0" in out.stdout


@pytest.mark.parametrize("options", ["sign", "seal", "spnego,seal", "ntlm,sign"])
def test_rpcclient_rpc_auth_over_pipe(server, options):
    """RPC-level sign/seal on top of the SMB session (auth3 and alter_context legs over the pipe)."""
    out = rpcclient(server, "netshareenumall 1", binding=f"ncacn_np:127.0.0.1[{options}]")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "netname: IPC$" in out.stdout


# ---- impacket ------------------------------------------------------------------------------------
def smb(server):
    conn = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=server.port)
    conn.login(USER, PASSWORD)
    # impacket 0.13's SMB3.create() raises UnboundLocalError for a root-level name when the server
    # advertises CAP_DIRECTORY_LEASING; pipe names are always root-level
    conn._SMBConnection._Connection["SupportsDirectoryLeasing"] = False
    return conn


@pytest.fixture
def dce(server):
    conn = smb(server)
    t = transport.SMBTransport("127.0.0.1", server.port, r"\srvsvc", smb_connection=conn)
    d = t.get_dce_rpc()
    d.connect()
    d.bind(srvs.MSRPC_UUID_SRVS)
    yield d
    d.disconnect()
    conn.close()


@pytest.mark.parametrize("level", [0, 1, 2, 501, 502, 503])
def test_impacket_share_enum(dce, server, level):
    r = srvs.hNetrShareEnum(dce, level)
    entries = r["InfoStruct"]["ShareInfo"][f"Level{level}"]["Buffer"]
    names = [e[f"shi{level}_netname"][:-1] for e in entries]
    assert names == ["data", "ca", "IPC$"] and r["TotalEntries"] == 3
    if level == 1:
        assert [e["shi1_type"] for e in entries] == [0, 0, 0x80000003]
    if level == 501:
        assert [e["shi501_flags"] & 0x4000 for e in entries] == [0, 0x4000, 0]
    if level == 502:
        assert entries[0]["shi502_path"][:-1] == "C:" + server.paths["data"].replace("/", "\\")
        assert len(entries[0]["shi502_security_descriptor"]) == entries[0]["shi502_reserved"] > 20


def test_impacket_share_get_info(dce):
    assert srvs.hNetrShareGetInfo(dce, "CA", 1005)["InfoStruct"]["ShareInfo1005"]["shi1005_flags"] & 0x4000
    info = srvs.hNetrShareGetInfo(dce, "data", 2)["InfoStruct"]["ShareInfo2"]
    assert info["shi2_netname"] == "data\x00" and info["shi2_max_uses"] == 0xFFFFFFFF
    assert info["shi2_current_uses"] >= 0
    with pytest.raises(srvs.DCERPCSessionError) as e:
        srvs.hNetrShareGetInfo(dce, "nosuch", 1)
    assert e.value.get_error_code() == 2310       # NERR_NetNameNotFound
    s = srvs.hNetrServerGetInfo(dce, 101)["InfoStruct"]["ServerInfo101"]
    assert s["sv101_platform_id"] == 500 and s["sv101_name"] == "SMBND\x00"


def test_impacket_pipe_name_forms_and_unknown_pipe(server):
    conn = smb(server)
    tid = conn.connectTree("IPC$")
    for name in ("srvsvc", "\\PIPE\\srvsvc", "SRVSVC"):
        conn.closeFile(tid, conn.openFile(tid, name))
    with pytest.raises(SessionError) as e:
        conn.openFile(tid, "nosuchpipe")
    assert e.value.getErrorCode() == STATUS_OBJECT_NAME_NOT_FOUND
    conn.close()


# ---- named-pipe semantics, raw SMB2 ----------------------------------------------------------------
@pytest.fixture
def pipe(server):
    c = Raw(server)
    c.negotiate((0x0300,))
    c.login()
    c.tree_connect("IPC$")
    status, m = c.call(CREATE, create_body("srvsvc", disp=1, opts=0))
    assert status == 0, hex(status)
    c.fid = m[64 + 64:64 + 80]
    yield c
    c.close()
    assert server.proc.poll() is None and "Traceback" not in server.log()


def _bind_pdu(call_id=1):
    return p.pack_bind([p.ContextElem(0, SRVSVC, [p.NDR_SYNTAX])], call_id=call_id, max_xmit=4280, max_recv=4280)


def _ioctl_out(m):
    off, n = struct.unpack_from("<II", m, 64 + 32)
    return m[off:off + n]


def test_transceive_buffer_overflow_then_read(pipe):
    status, m = pipe.call(IOCTL, ioctl_body(pipe.fid, FSCTL_PIPE_TRANSCEIVE, _bind_pdu(), maxout=20))
    assert status == STATUS_BUFFER_OVERFLOW
    head = _ioctl_out(m)
    assert len(head) == 20
    frag_length = struct.unpack_from("<H", head, 8)[0]
    status, m = pipe.call(READ, read_body(pipe.fid, 4280))
    assert status == 0
    ack = head + m[80:80 + frag_length - 20]
    hdr = p.parse_header(ack)
    assert hdr.ptype == p.BIND_ACK and len(ack) == frag_length
    assert p.parse_bind_ack(ack, hdr).secondary_address == "\\PIPE\\srvsvc"


def test_pending_read_completes_on_write(pipe):
    status, m = pipe.call(IOCTL, ioctl_body(pipe.fid, FSCTL_PIPE_TRANSCEIVE, _bind_pdu(), maxout=4280))
    assert status == 0 and p.parse_header(_ioctl_out(m)).ptype == p.BIND_ACK
    read_mid = pipe.send(READ, read_body(pipe.fid, 4280))
    interim = pipe.recv_frame()                                   # STATUS_PENDING, async
    assert struct.unpack_from("<I", interim, 8)[0] == 0x103
    stub = srvs.NetrServerGetInfo()
    stub["ServerName"] = "\\\\x\x00"
    stub["Level"] = 100
    write_mid = pipe.send(WRITE, write_body(pipe.fid, p.pack_request(0, 21, stub.getData(), call_id=2)))
    got = {}
    for _ in range(2):
        status, m = pipe.recv()
        got[struct.unpack_from("<Q", m, 24)[0]] = (status, m)
    assert got[write_mid][0] == 0
    status, m = got[read_mid]
    assert status == 0
    n = struct.unpack_from("<I", m, 64 + 4)[0]
    resp = m[80:80 + n]
    assert p.parse_header(resp).ptype == p.RESPONSE and "SMBND".encode("utf-16-le") in resp


def test_pending_read_cancel_and_close(pipe):
    mid = pipe.send(READ, read_body(pipe.fid, 100))
    interim = pipe.recv_frame()
    async_id = struct.unpack_from("<Q", interim, 32)[0]
    pipe.send(CANCEL, struct.pack("<HH", 4, 0), mid=mid, async_id=async_id)
    status, _ = pipe.recv()
    assert status == STATUS_CANCELLED
    pipe.send(READ, read_body(pipe.fid, 100))
    pipe.recv_frame()                                             # interim
    close_mid = pipe.send(CLOSE, close_body(pipe.fid))
    statuses = {}
    for _ in range(2):
        status, m = pipe.recv()
        statuses[struct.unpack_from("<Q", m, 24)[0]] = status
    assert statuses[close_mid] == 0 and STATUS_PIPE_BROKEN in statuses.values()


def test_query_info_on_pipe(pipe):
    status, m = pipe.call(QUERY_INFO, query_info_body(pipe.fid, cls=5))      # FileStandardInformation
    assert status == 0
    alloc, eof, links, delete_pending, is_dir = struct.unpack_from("<qqIBB", m, 72)
    assert (alloc, eof, links, is_dir) == (4096, 0, 1, 0)
    status, m = pipe.call(QUERY_INFO, query_info_body(pipe.fid, cls=23))     # FilePipeInformation
    assert status == 0 and struct.unpack_from("<II", m, 72) == (1, 0)      # message mode, queue operation


@pytest.mark.parametrize("junk", [b"\0" * 64, b"\x05\x00\x00\x03\x10\x00\x00\x00\x18\x00\x00\x00\x01\x00\x00\x00" + b"\0" * 8,
                                  b"\xff" * 300])
def test_garbage_on_pipe(pipe, junk):
    status, _ = pipe.call(WRITE, write_body(pipe.fid, junk))
    assert status == 0
    status, m = pipe.call(READ, read_body(pipe.fid, 4280))
    if status == 0:                                              # a bind_nak or fault, then nothing
        n = struct.unpack_from("<I", m, 64 + 4)[0]
        assert p.parse_header(m[80:80 + n]).ptype in (p.BIND_NAK, p.FAULT)
        status, _ = pipe.call(READ, read_body(pipe.fid, 4280))
    assert status == STATUS_PIPE_DISCONNECTED
    status, _ = pipe.call(WRITE, write_body(pipe.fid, _bind_pdu()))
    assert status == STATUS_PIPE_DISCONNECTED
