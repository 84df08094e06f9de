"""DCE/RPC runtime (smbnd.rpc): the sans-I/O association driven PDU by PDU, hypothesis fuzz of the
codecs and the state machine, and sign/seal against real clients over ncacn_ip_tcp (impacket's
DCE/RPC client; Samba's own client through python3-samba when it is installed)."""
import asyncio
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import uuid

import pytest
import spnego
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from impacket.dcerpc.v5 import rpcrt, srvs, transport
from impacket.uuid import uuidtup_to_bin

from smbnd.auth import UserDB
from smbnd.config import ServerConfig, ShareConfig
from smbnd.rpc import association as a
from smbnd.rpc import pdu as p
from smbnd.rpc.security import NtlmProvider, Principal
from smbnd.rpc.srvsvc import Srvsvc
from smbnd.rpc.tcp import RpcTcpServer
from smbnd.server import Server

ECHO_UUID = "12345678-1234-abcd-ef00-0123456789ab"
ECHO = p.SyntaxId.of(ECHO_UUID, 1)
PASSWORD = "demo-Passw0rd"


class Later:
    """Opnum 2 answers later: the test completes the parked calls in any order."""

    def __init__(self):
        self.calls = []
        self.cancelled = []

    def park(self, call, stub):
        call.on_cancel = self.cancelled.append
        self.calls.append((call, stub))
        return None


def echo_interface(later: Later | None = None, min_level=p.LEVEL_NONE):
    def boom(call, stub):
        raise RuntimeError("handler bug")
    handlers = {0: lambda call, stub: stub[::-1], 1: boom, 3: lambda call, stub: b"\0" * int(stub or b"0")}
    if later is not None:
        handlers[2] = later.park
    return a.Interface(ECHO_UUID, (1, 0), "echo", handlers, min_auth_level=min_level)


def assoc(later=None, **kw):
    return a.Association([echo_interface(later)], principal=Principal("demo"), **kw)


def pdus(assoc_):
    out = []
    for raw in assoc_.data_to_send():
        hdr = p.parse_header(raw)
        assert hdr.frag_length == len(raw)
        out.append((hdr, raw))
    return out


def bind(assoc_, contexts=None, **kw):
    contexts = contexts or [p.ContextElem(0, ECHO, [p.NDR_SYNTAX])]
    assoc_.receive_data(p.pack_bind(contexts, **kw))
    [(hdr, raw)] = pdus(assoc_)
    assert hdr.ptype == p.BIND_ACK, hdr
    return p.parse_bind_ack(raw, hdr)


def fault_of(hdr, raw):
    assert hdr.ptype == p.FAULT, hdr
    return p.parse_fault_status(raw, hdr), hdr.pfc_flags


def call(assoc_, opnum, stub, ctx=0, call_id=7):
    assoc_.receive_data(p.pack_request(ctx, opnum, stub, call_id=call_id))
    return pdus(assoc_)


def stub_of(out):
    data = b""
    for hdr, raw in out:
        assert hdr.ptype == p.RESPONSE, hdr
        data += p.parse_response(raw, hdr).stub
    assert out[0][0].pfc_flags & p.PFC_FIRST_FRAG and out[-1][0].pfc_flags & p.PFC_LAST_FRAG
    return data


# ---- presentation contexts, BTFN, NDR64 (C706 12.6.4.4, MS-RPCE 3.3.1.5.3) -----------------------
def test_bind_windows_style_ndr_ndr64_btfn():
    x = assoc(secondary_address="135")
    ack = bind(x, [p.ContextElem(0, ECHO, [p.NDR_SYNTAX]), p.ContextElem(1, ECHO, [p.NDR64_SYNTAX]),
                   p.ContextElem(2, ECHO, [p.btfn_syntax(3)])])
    assert [(r.result, r.reason) for r in ack.results] == [
        (p.ACCEPTANCE, 0), (p.PROVIDER_REJECTION, p.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (p.NEGOTIATE_ACK, p.BTFN_KEEP_CONNECTION_ON_ORPHAN)]
    assert ack.results[0].transfer == p.NDR_SYNTAX and ack.results[2].transfer == p.NULL_SYNTAX
    assert ack.secondary_address == "135" and ack.assoc_group_id
    assert stub_of(call(x, 0, b"abc")) == b"cba"


def test_bind_unknown_interface_and_frag_sizes():
    x = assoc()
    other = p.SyntaxId.of(str(uuid.uuid4()), 1)
    ack = bind(x, [p.ContextElem(0, other, [p.NDR_SYNTAX]), p.ContextElem(1, p.SyntaxId.of(ECHO_UUID, 2),
                                                                          [p.NDR_SYNTAX])],
               max_xmit=1000, max_recv=65535)
    assert [(r.result, r.reason) for r in ack.results] == [(p.PROVIDER_REJECTION, p.ABSTRACT_SYNTAX_NOT_SUPPORTED)] * 2
    assert ack.max_xmit_frag == ack.max_recv_frag == 2048       # clamped to [2048, 5840]
    # a request on a context that was never accepted: nca_s_unk_if, the association lives on
    [(hdr, raw)] = call(x, 0, b"x", ctx=1)
    assert fault_of(hdr, raw) == (a.NCA_S_UNK_IF, p.PFC_FIRST_FRAG | p.PFC_LAST_FRAG | p.PFC_DID_NOT_EXECUTE)
    assert not x.want_close


def test_alter_context_adds_contexts_and_several_calls_outstanding():
    later = Later()
    x = assoc(later)
    bind(x)
    x.receive_data(p.pack_bind([p.ContextElem(5, ECHO, [p.NDR64_SYNTAX, p.NDR_SYNTAX])], ptype=p.ALTER_CONTEXT,
                               call_id=2))
    [(hdr, raw)] = pdus(x)
    assert hdr.ptype == p.ALTER_CONTEXT_RESP
    assert p.parse_bind_ack(raw, hdr).results[0].result == p.ACCEPTANCE
    # three calls outstanding at once, answered out of order; one more runs meanwhile
    for cid in (10, 11, 12):
        assert call(x, 2, b"%d" % cid, ctx=5, call_id=cid) == []
    assert stub_of(call(x, 0, b"xy", call_id=13)) == b"yx"
    later.calls[1][0].reply(b"eleven")
    later.calls[0][0].fault(0x1234)
    later.calls[2][0].reply(b"twelve")
    out = pdus(x)
    assert [h.call_id for h, _ in out] == [11, 10, 12]
    assert stub_of(out[:1]) == b"eleven" and fault_of(*out[1])[0] == 0x1234


def test_async_completion_notifies_transport_and_cancel_orphan():
    later = Later()
    x = assoc(later)
    flushed = []
    x.on_output = lambda: flushed.append(x.data_to_send())
    bind(x)
    call(x, 2, b"a", call_id=20)
    call(x, 2, b"b", call_id=21)
    x.receive_data(p.pack_header(p.CO_CANCEL, 3, 20, 16))
    x.receive_data(p.pack_header(p.ORPHANED, 3, 21, 16))
    assert [c.call_id for c in later.cancelled] == [20, 21]
    later.calls[1][0].reply(b"dropped")      # orphaned: never sent
    later.calls[0][0].reply(b"late")
    assert len(flushed) == 1 and p.parse_header(flushed[0][0]).call_id == 20


def test_fragmented_request_and_response():
    x = assoc()
    bind(x, max_xmit=2048, max_recv=2048)
    data = os.urandom(5000)
    parts = [data[:2000], data[2000:4000], data[4000:]]
    for i, part in enumerate(parts):
        flags = (p.PFC_FIRST_FRAG if i == 0 else 0) | (p.PFC_LAST_FRAG if i == 2 else 0)
        x.receive_data(p.pack_request(0, 0, part, call_id=9, flags=flags, alloc_hint=len(data)))
    out = pdus(x)
    assert len(out) == 3 and all(len(raw) <= 2048 for _, raw in out)
    assert stub_of(out) == data[::-1]
    # byte-at-a-time delivery reassembles the stream just the same
    for b in p.pack_request(0, 0, b"slow", call_id=30):
        x.receive_data(bytes([b]))
    assert stub_of(pdus(x)) == b"wols"


@pytest.mark.parametrize("opnum,status", [(9, a.NCA_S_OP_RNG_ERROR), (1, a.FAULT_OTHER)])
def test_faults_keep_association(opnum, status):
    x = assoc()
    bind(x)
    [(hdr, raw)] = call(x, opnum, b"")
    assert fault_of(hdr, raw)[0] == status
    assert stub_of(call(x, 0, b"ok")) == b"ko"


def test_protocol_errors_close():
    x = assoc()
    x.receive_data(p.pack_request(0, 0, b"x"))                 # request before bind
    [(hdr, raw)] = pdus(x)
    assert hdr.ptype == p.BIND_NAK and struct.unpack_from("<H", raw, 16)[0] == p.NAK_PROTOCOL_VERSION_NOT_SUPPORTED
    assert x.want_close
    x = assoc()
    bind(x)
    x.receive_data(p.pack_bind([p.ContextElem(0, ECHO, [p.NDR_SYNTAX])], call_id=3))   # second bind
    [(hdr, raw)] = pdus(x)
    assert hdr.ptype == p.BIND_NAK and x.want_close
    x = assoc()
    bind(x)
    huge = bytearray(p.pack_request(0, 0, b"x"))
    struct.pack_into("<H", huge, 8, 60000)                     # a fragment larger than we accept
    x.receive_data(bytes(huge))
    [(hdr, raw)] = pdus(x)
    assert fault_of(hdr, raw)[0] == a.NCA_S_PROTO_ERROR and x.want_close
    x = assoc()
    bind(x)
    x.receive_data(p.pack_request(0, 0, b"x", flags=p.PFC_LAST_FRAG, call_id=44))   # continuation of nothing
    [(hdr, raw)] = pdus(x)
    assert fault_of(hdr, raw)[0] == a.NCA_S_PROTO_ERROR and x.want_close


def test_request_size_limit():
    x = assoc(max_request=10000)
    bind(x)
    x.receive_data(p.pack_request(0, 0, b"x" * 100, flags=p.PFC_FIRST_FRAG, alloc_hint=1 << 30))
    [(hdr, raw)] = pdus(x)
    assert fault_of(hdr, raw)[0] == a.FAULT_ACCESS_DENIED and x.want_close


def test_auth_required_by_interface_and_unknown_auth_type():
    x = a.Association([echo_interface(min_level=p.LEVEL_PKT_INTEGRITY)], security=None)
    bind(x)
    [(hdr, raw)] = call(x, 0, b"x")
    assert fault_of(hdr, raw)[0] == a.FAULT_ACCESS_DENIED
    x = assoc()
    x.receive_data(p.pack_bind([p.ContextElem(0, ECHO, [p.NDR_SYNTAX])],
                               auth=p.SecTrailer(p.AUTHN_GSS_KERBEROS, 6, 0, 1, b"token")))
    [(hdr, raw)] = pdus(x)
    assert hdr.ptype == p.BIND_NAK
    assert struct.unpack_from("<H", raw, 16)[0] == p.NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED


def test_verification_trailer():
    x = assoc()
    bind(x)
    good = b"abcde" + p.pack_verification_trailer(5, pcontext=(ECHO, p.NDR_SYNTAX))
    assert stub_of(call(x, 0, good)).lstrip(b"\0") == b"edcba"    # alignment pad stays with the stub
    bad = b"abcde" + p.pack_verification_trailer(5, pcontext=(p.SyntaxId.of(str(uuid.uuid4()), 1), p.NDR_SYNTAX))
    assert fault_of(*call(x, 0, bad)[0])[0] == a.FAULT_ACCESS_DENIED


def test_shutdown_pdu():
    x = assoc()
    bind(x)
    x.shutdown()
    [(hdr, _)] = pdus(x)
    assert hdr.ptype == p.SHUTDOWN and x.want_close


# ---- hypothesis: nothing escapes ---------------------------------------------------------------
def _check_output(x):
    for raw in x.data_to_send():
        hdr = p.parse_header(raw)
        assert hdr.frag_length == len(raw)
        assert hdr.ptype in (p.BIND_ACK, p.BIND_NAK, p.ALTER_CONTEXT_RESP, p.RESPONSE, p.FAULT, p.SHUTDOWN)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.binary(max_size=300))
def test_fuzz_codecs(data):
    for parse in (p.parse_bind, p.parse_request, p.parse_bind_ack, p.parse_response, p.parse_fault_status):
        try:
            parse(data, p.parse_header(data))
        except p.PduError:
            pass
    p.find_verification_trailer(data)


VALID = [
    p.pack_bind([p.ContextElem(0, ECHO, [p.NDR_SYNTAX]), p.ContextElem(1, ECHO, [p.btfn_syntax(3)])]),
    p.pack_bind([p.ContextElem(0, ECHO, [p.NDR_SYNTAX])], auth=p.SecTrailer(p.AUTHN_WINNT, 5, 0, 0, b"NTLMSSP\0x")),
    p.pack_bind([p.ContextElem(2, ECHO, [p.NDR_SYNTAX])], ptype=p.ALTER_CONTEXT, call_id=2),
    p.pack_request(0, 0, b"hello", call_id=3),
    p.pack_request(0, 2, b"later", call_id=4),
    p.pack_request(0, 0, b"part", call_id=5, flags=p.PFC_FIRST_FRAG),
    p.pack_request(0, 0, b"rest", call_id=5, flags=p.PFC_LAST_FRAG),
    p.pack_request(0, 0, b"x", auth=p.SecTrailer(p.AUTHN_WINNT, 5, 0, 0, b"\0" * 16)),
    p.pack_auth3(6, p.SecTrailer(p.AUTHN_WINNT, 5, 0, 0, b"NTLMSSP\0")),
    p.pack_header(p.CO_CANCEL, 3, 4, 16),
    p.pack_header(p.ORPHANED, 3, 4, 16),
    p.pack_fault(8, 5),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(hs.tuples(hs.sampled_from(range(len(VALID))),
                          hs.lists(hs.tuples(hs.integers(0, 400), hs.integers(0, 255)), max_size=4),
                          hs.integers(0, 400)), min_size=1, max_size=8))
def test_fuzz_association_mutated(steps):
    later = Later()
    x = a.Association([echo_interface(later)], security=NtlmProvider(UserDB.from_mapping({"demo": PASSWORD}),
                      netbios_name="S", netbios_domain="D", dns_name="s.d", dns_domain="d"))
    for idx, flips, cut in steps:
        raw = bytearray(VALID[idx])
        for pos, val in flips:
            if pos < len(raw):
                raw[pos] = val
        x.receive_data(bytes(raw[:cut] if cut < len(raw) else raw))
        _check_output(x)
    for c, _ in later.calls:
        c.reply(b"done")
    _check_output(x)
    x.connection_lost()


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=2000), hs.integers(1, 64))
def test_fuzz_association_random_stream(data, chunk):
    x = assoc()
    for i in range(0, len(data), chunk):
        x.receive_data(data[i:i + chunk])
        _check_output(x)


def authed(level=p.LEVEL_PKT_INTEGRITY):
    """A WINNT (3-leg, auth3) association driven by pyspnego's NTLM initiator."""
    x = a.Association([echo_interface()], security=NtlmProvider(UserDB.from_mapping({"demo": PASSWORD}),
                      netbios_name="S", netbios_domain="D", dns_name="s.d", dns_domain="d"))
    c = spnego.client("demo", PASSWORD, hostname="s", service="host", protocol="ntlm",
                      context_req=spnego.ContextReq.integrity | spnego.ContextReq.confidentiality)
    ack = bind(x, auth=p.SecTrailer(p.AUTHN_WINNT, level, 0, 1, c.step()))
    x.receive_data(p.pack_auth3(2, p.SecTrailer(p.AUTHN_WINNT, level, 0, 1, c.step(ack.auth.auth_value))))
    assert pdus(x) == [] and x.auth_state == "done" and x.principal.user == "demo"
    return x, c


def signed_request(c, stub, call_id, level=p.LEVEL_PKT_INTEGRITY):
    pad = p.auth_pad(len(stub))
    pdu = bytearray(p.pack_request(0, 0, stub, call_id=call_id,
                                   auth=p.SecTrailer(p.AUTHN_WINNT, level, pad, 1, b"\0" * 16)))
    pdu[-16:] = c.sign(bytes(pdu[:-16]))
    return bytes(pdu)


def test_pyspnego_integrity_both_ways():
    x, c = authed()
    for cid in (3, 4):
        x.receive_data(signed_request(c, b"hello world", cid))
        [(hdr, raw)] = pdus(x)
        r = p.parse_response(raw, hdr)
        assert r.stub[:11] == b"dlrow olleh" and r.auth.auth_pad_length == 5
        c.verify(raw[:-16], r.auth.auth_value)          # raises if our signature is wrong
    x.receive_data(p.pack_request(0, 0, b"unsigned", call_id=5))
    assert fault_of(*pdus(x)[0])[0] == a.FAULT_ACCESS_DENIED and x.want_close


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(hs.tuples(hs.integers(0, 200), hs.integers(0, 255)), min_size=1, max_size=4), hs.binary(max_size=64))
def test_fuzz_authenticated_requests(flips, stub):
    """Tampered signed requests: a fault (bad signature, auth mismatch...) and a close, or a
    response when the flip hit nothing that matters; never an exception."""
    x, c = authed()
    raw = bytearray(signed_request(c, stub, 9))
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    x.receive_data(bytes(raw))
    _check_output(x)


# ---- real clients over ncacn_ip_tcp (smbnd.rpc.tcp) ---------------------------------------------
@pytest.fixture(scope="module")
def tcp_rpc():
    root = tempfile.mkdtemp(prefix="smbnd-rpc-")
    cfg = ServerConfig(users={"demo": PASSWORD},
                       shares=[ShareConfig("data", root, comment="Data share"), ShareConfig("ca", root, ca=True)])
    cfg.finish()
    server = Server(cfg, users=UserDB.from_mapping({"demo": PASSWORD}))
    provider = NtlmProvider.for_server(server)
    loop = asyncio.new_event_loop()
    rpc = RpcTcpServer(lambda peer, port: a.Association(
        [echo_interface(min_level=p.LEVEL_PKT_INTEGRITY), Srvsvc(server).interface()],
        security=provider, secondary_address=str(port), name=peer))
    port = loop.run_until_complete(rpc.start("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    asyncio.run_coroutine_threadsafe(rpc.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    shutil.rmtree(root, ignore_errors=True)


def impacket_dce(port, level, password=PASSWORD, iface=ECHO_UUID):
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    t.set_credentials("demo", password, "WORKGROUP")
    dce = t.get_dce_rpc()
    dce.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)
    dce.set_auth_level(level)
    dce.connect()
    dce.bind(uuidtup_to_bin((iface, "1.0")) if iface == ECHO_UUID else iface)
    return dce


@pytest.mark.parametrize("level", [rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY])
def test_impacket_sign_seal(tcp_rpc, level):
    dce = impacket_dce(tcp_rpc, level)
    try:
        for n in (b"hello", os.urandom(9000), b"z" * 4000):     # multi-fragment both ways
            dce.call(0, n)
            assert dce.recv() == n[::-1]
        dce.call(3, b"20000")                                  # a large fragmented response
        assert dce.recv() == b"\0" * 20000
    finally:
        dce.disconnect()


def test_impacket_privacy_srvsvc(tcp_rpc):
    dce = impacket_dce(tcp_rpc, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, iface=srvs.MSRPC_UUID_SRVS)
    try:
        r = srvs.hNetrShareEnum(dce, 1)
        shares = [(e["shi1_netname"][:-1], e["shi1_remark"][:-1]) for e in r["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"]]
        assert shares == [("data", "Data share"), ("ca", ""), ("IPC$", "Remote IPC")]
    finally:
        dce.disconnect()


def test_impacket_wrong_password_is_access_denied(tcp_rpc):
    dce = impacket_dce(tcp_rpc, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, password="wrong")
    with pytest.raises(rpcrt.DCERPCException, match="access_denied"):
        dce.call(0, b"x")
        dce.recv()


def test_unauthenticated_call_to_integrity_interface(tcp_rpc):
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{tcp_rpc}]")
    dce = t.get_dce_rpc()
    dce.connect()
    dce.bind(uuidtup_to_bin((ECHO_UUID, "1.0")))
    with pytest.raises(rpcrt.DCERPCException, match="access_denied"):
        dce.call(0, b"x")
        dce.recv()


def test_bad_signature_is_sec_pkg_error(tcp_rpc):
    dce = impacket_dce(tcp_rpc, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    forged = p.pack_request(0, 0, b"abcd" * 4, call_id=99,
                            auth=p.SecTrailer(p.AUTHN_WINNT, 5, 0, 79231, b"\x01" + b"\0" * 15))
    s = dce.get_rpc_transport().get_socket()
    s.sendall(forged)
    s.settimeout(5)
    raw = s.recv(4096)
    hdr = p.parse_header(raw)
    assert p.parse_fault_status(raw, hdr) == a.FAULT_SEC_PKG_ERROR
    assert s.recv(4096) == b""          # and the association is closed


SAMBA_CLIENT = r"""
import sys
from samba import credentials, param
from samba.dcerpc import srvsvc
lp = param.LoadParm()
creds = credentials.Credentials()
creds.guess(lp)
creds.set_username("demo"); creds.set_password(sys.argv[2]); creds.set_domain("WORKGROUP")
creds.set_kerberos_state(credentials.DONT_USE_KERBEROS)
conn = srvsvc.srvsvc(sys.argv[1], lp, creds)
ctr = srvsvc.NetShareInfoCtr(); ctr.level = 1; ctr.ctr = srvsvc.NetShareCtr1()
info, total, resume = conn.NetShareEnumAll("\\\\127.0.0.1", ctr, 0xffffffff, 0)
print(total, ",".join("%s=%s" % (x.name, x.comment) for x in info.ctr.array))
print(conn.NetShareGetInfo("\\\\127.0.0.1", "ca", 1005).dfs_flags)
"""


def _samba_python():
    try:
        return subprocess.run(["/usr/bin/python3", "-c", "import samba.dcerpc.srvsvc"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _samba_python(), reason="python3-samba not installed")
@pytest.mark.parametrize("options", ["seal,spnego", "sign,spnego", "seal,ntlm", "sign,ntlm", "connect,ntlm"])
def test_samba_client_sign_seal(tcp_rpc, options):
    """Samba's client verifies our signatures and unseals our responses: SPNEGO (4 legs, alter
    context) and NTLMSSP (3 legs, auth3), integrity and privacy."""
    out = subprocess.run(["/usr/bin/python3", "-c", SAMBA_CLIENT, f"ncacn_ip_tcp:127.0.0.1[{tcp_rpc},{options}]",
                          PASSWORD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "3 data=Data share,ca=,IPC$=Remote IPC"
    assert int(lines[1]) & 0x4000                      # SHI1005_FLAGS_ENABLE_CA


@pytest.mark.skipif(not _samba_python(), reason="python3-samba not installed")
def test_samba_client_wrong_password(tcp_rpc):
    out = subprocess.run(["/usr/bin/python3", "-c", SAMBA_CLIENT, f"ncacn_ip_tcp:127.0.0.1[{tcp_rpc},seal,spnego]",
                          "wrong"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_tcp_shutdown_sends_shutdown_pdu():
    async def run():
        rpc = RpcTcpServer(lambda peer, port: assoc())
        port = await rpc.start("127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(p.pack_bind([p.ContextElem(0, ECHO, [p.NDR_SYNTAX])]))
        ack = await r.read(4096)
        assert p.parse_header(ack).ptype == p.BIND_ACK
        await rpc.close()
        data = await r.read(4096)
        assert p.parse_header(data).ptype == p.SHUTDOWN
        assert await r.read(4096) == b""
        w.close()
    asyncio.run(run())


def test_socket_garbage_never_kills_listener(tcp_rpc):
    for junk in (b"\0" * 16, b"\x05\x00\x0b\x03\x10\0\0\0\xff\xff\0\0\1\0\0\0" + b"A" * 100, os.urandom(5000)):
        with socket.create_connection(("127.0.0.1", tcp_rpc), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    dce = impacket_dce(tcp_rpc, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    dce.call(0, b"alive")
    assert dce.recv() == b"evila"
    dce.disconnect()
