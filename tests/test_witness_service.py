"""MS-SWN service on the RPC runtime over ncacn_ip_tcp, driven by impacket's DCE/RPC client (a real
NTLM/SPNEGO peer): validations and error codes, AsyncNotify timers, forced unregister, expiry,
layouts, and bad input that must fault without disturbing other registrations."""
import asyncio
import os
import socket
import struct
import threading
import time

import pytest
from impacket.dcerpc.v5 import rpcrt, transport

from interop.witness_client import (WITNESS_IF, pack_register, pack_register_ex, parse_async_notify,
                                    parse_interface_list)
from smbnd.auth import UserDB
from smbnd.rpc import pdu as p
from smbnd.rpc.association import Association
from smbnd.rpc.iface import AssocGroups
from smbnd.rpc.security import NtlmProvider
from smbnd.rpc.tcp import RpcTcpServer
from witness import ndr as n
from witness.service import Interface_, WitnessService

USER, PASSWORD = "demo", "demo-Passw0rd"
A, B = "127.0.0.1", "10.9.9.9"       # "A" hosted elsewhere (INTERFACE_WITNESS), "B" local


class Server:
    """The witness service in a background event loop on a free loopback port."""

    def __init__(self, **kw):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.svc = WitnessService("SMBND", shares=lambda: ["vol1", "vol2"], loop=self.loop, **kw)
        self.svc.set_interfaces([Interface_("lif_a", "SMBND", A, local=False),
                                 Interface_("lif_b", "SMBND", B, local=True)])
        prov = NtlmProvider(UserDB.from_mapping({USER: PASSWORD}), netbios_name="SMBND", netbios_domain="WORKGROUP",
                            dns_name="smbnd.smbnd.test", dns_domain="smbnd.test")
        groups = AssocGroups()
        self.rpc = RpcTcpServer(lambda peer, port: Association([self.svc.interface()], security=prov, groups=groups))
        self.port = self.do(self.rpc.start("127.0.0.1", 0))

    def do(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def sync(self, fn, *a, **kw):
        async def f():
            return fn(*a, **kw)
        return self.do(f())

    def close(self):
        self.do(self.rpc.close())
        self.sync(self.svc.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def srv():
    s = Server(forced_unregister_delay=0.5, unused_timeout=30)
    yield s
    s.close()


def dce(srv, level=rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, auth=rpcrt.RPC_C_AUTHN_WINNT, password=PASSWORD):
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{srv.port}]")
    if level is not None:
        t.set_credentials(USER, password, "WORKGROUP")
    d = t.get_dce_rpc()
    if level is not None:
        d.set_auth_type(auth)
        d.set_auth_level(level)
    d.connect()
    d.bind(WITNESS_IF)
    return d


def call(d, opnum, stub, timeout=10):
    d.get_rpc_transport().get_socket().settimeout(timeout)
    d.call(opnum, stub)
    return d.recv()


def status(out):
    return struct.unpack_from("<I", out, len(out) - 4)[0]


def register_ex(d, ip=A, share=None, keepalive=120, client="c1", net="SMBND", flags=0, version=n.WITNESS_V2):
    out = call(d, 4, pack_register_ex(net, share, ip, client, flags, keepalive, version))
    return out[:20], status(out)


# ---- validations (MS-SWN 3.1.4.2, 3.1.4.5) ---------------------------------------------------------
@pytest.mark.parametrize("level", [rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY])
def test_interface_list_and_register_errors(srv, level):
    """(impacket speaks NTLM only as WINNT; SPNEGO is covered by python3-samba in test_witness_interop)"""
    d = dce(srv, level)
    entries, st = parse_interface_list(call(d, 0, b""))
    assert st == 0
    assert [(e.address, e.flags, e.state, e.group, e.version) for e in entries] == [
        (A, n.IF_IPV4 | n.IF_WITNESS, n.STATE_AVAILABLE, "SMBND", 0xFFFFFFFF),
        (B, n.IF_IPV4, n.STATE_AVAILABLE, "SMBND", 0xFFFFFFFF)]
    reg = lambda *a: status(call(d, 1, pack_register(*a[1:], version=a[0])))     # noqa: E731
    assert reg(n.WITNESS_V2, "SMBND", A, "c") == n.ERROR_REVISION_MISMATCH
    assert reg(0, None, None, None) == n.ERROR_REVISION_MISMATCH
    assert reg(n.WITNESS_V1, "", "", "") == n.ERROR_INVALID_PARAMETER
    assert reg(n.WITNESS_V1, None, A, "c") == n.ERROR_INVALID_PARAMETER
    assert reg(n.WITNESS_V1, "OTHER", A, "c") == n.ERROR_INVALID_PARAMETER
    assert reg(n.WITNESS_V1, "SMBND", "10.1.1.1", "c") == n.ERROR_INVALID_STATE
    assert reg(n.WITNESS_V1, "smbnd.smbnd.test", A, "c") == 0          # DNS name of the NetName
    assert register_ex(d, version=n.WITNESS_V1)[1] == n.ERROR_REVISION_MISMATCH
    assert register_ex(d, share="nosuch")[1] == n.ERROR_INVALID_STATE
    assert register_ex(d, ip="not-an-ip")[1] == n.ERROR_INVALID_STATE
    h, st = register_ex(d, share="VOL1")
    assert st == 0 and h[:4] == b"\0\0\0\0"
    assert status(call(d, 2, h)) == 0
    # a second UnRegister: INVALID_PARAMETER as 2012 R2+ (<4>); AsyncNotify: NOT_FOUND (3.1.4.4)
    assert status(call(d, 2, h)) == n.ERROR_INVALID_PARAMETER
    assert parse_async_notify(call(d, 3, h)) == (None, n.ERROR_NOT_FOUND)
    with pytest.raises(rpcrt.DCERPCException, match="nca_s_op_rng_error"):   # opnum 5 as Server 2022
        call(d, 5, h)
    d.disconnect()


def test_auth_required(srv):
    d = dce(srv, level=None)
    with pytest.raises(rpcrt.DCERPCException, match="access_denied"):
        call(d, 0, b"")
    d = dce(srv, level=rpcrt.RPC_C_AUTHN_LEVEL_CONNECT, auth=rpcrt.RPC_C_AUTHN_WINNT)
    with pytest.raises(rpcrt.DCERPCException, match="access_denied"):
        call(d, 0, b"")
    with pytest.raises(Exception):
        call(dce(srv, password="wrong"), 0, b"")


# ---- AsyncNotify and timers (3.1.4.4, 3.1.5) ---------------------------------------------------------
def test_keepalive_timeout_and_notifications(srv):
    d = dce(srv)
    h, _ = register_ex(d, keepalive=1)
    t = time.monotonic()
    assert parse_async_notify(call(d, 3, h)) == (None, n.ERROR_TIMEOUT)
    assert 0.9 < time.monotonic() - t < 3
    h0, _ = register_ex(d, keepalive=0)                     # KeepAlive 0: times out at once
    assert parse_async_notify(call(d, 3, h0)) == (None, n.ERROR_TIMEOUT)
    # IP change (v2 + IP notification), share move, client move, resource change: exact layouts
    h2, _ = register_ex(d, share="vol2", flags=n.REGISTER_IP_NOTIFICATION, client="c2", keepalive=30)
    regs = srv.sync(srv.svc.select, client="c2")
    srv.sync(srv.svc.ip_change, regs, [(A, n.IPADDR_OFFLINE)])
    note, st = parse_async_notify(call(d, 3, h2))
    assert st == 0 and note.kind == "ip-change" and note.addresses == [(A, n.IPADDR_V4 | n.IPADDR_OFFLINE)]
    srv.sync(srv.svc.share_move, regs, [(B, 0)])
    note, _ = parse_async_notify(call(d, 3, h2))
    assert note.kind == "share-move" and note.addresses == [(B, 0x1)]
    # forced unregister 0.5 s after a move: the pending AsyncNotify gets NOT_FOUND
    t = time.monotonic()
    assert parse_async_notify(call(d, 3, h2)) == (None, n.ERROR_NOT_FOUND)
    assert time.monotonic() - t < 2
    h3, _ = register_ex(d, client="c3", keepalive=30)
    regs = srv.sync(srv.svc.select, client="c3")

    def later():
        time.sleep(0.3)
        srv.sync(srv.svc.resource_change, regs, n.RESOURCE_STATE_UNAVAILABLE)
    threading.Thread(target=later).start()
    out = call(d, 3, h3)
    assert out[4:16] == struct.pack("<III", n.RESOURCE_CHANGE, 28, 1)       # 2 + 9 chars + NUL: 8 + 20
    assert out[24:52] == struct.pack("<II", 28, 0xFF) + "127.0.0.1\0".encode("utf-16-le")
    d.disconnect()


def test_v1_register_client_move_then_forced_unregister(srv):
    d = dce(srv, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    out = call(d, 1, pack_register("SMBND", A, "v1client"))
    h = out[:20]
    regs = srv.sync(srv.svc.select, client="v1client")
    srv.sync(srv.svc.client_move, regs, [(B, 0)])
    note, st = parse_async_notify(call(d, 3, h))
    assert st == 0 and note.kind == "client-move" and note.addresses == [(B, n.IPADDR_V4)]
    raw = n.pack_async_notify(n.CLIENT_MOVE, [n.ipaddr_info_list([(B, 0)])])
    assert raw[16:24] == struct.pack("<II", 0x20004, 36) and raw[24:36] == struct.pack("<III", 36, 0, 1)
    time.sleep(0.8)
    assert status(call(d, 2, h)) == n.ERROR_INVALID_PARAMETER          # already force-unregistered
    d.disconnect()


def test_unused_registration_expires_and_rundown():
    s = Server(unused_timeout=0.6)
    try:
        d = dce(s)
        h, _ = register_ex(d)
        assert len(s.sync(s.svc.list)) == 1
        time.sleep(1.5)
        assert s.sync(s.svc.list) == []                                   # MS-SWN 3.1.5.1
        register_ex(d)
        d.disconnect()                                                    # context handle rundown
        deadline = time.monotonic() + 5
        while s.sync(s.svc.list) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.sync(s.svc.list) == []
    finally:
        s.close()


def test_get_interface_list_waits_for_an_available_interface(srv):
    """MS-SWN 3.1.4.1: no AVAILABLE entry -> the call waits (3.1.6.1 wakes it)."""
    srv.sync(srv.svc.set_interface_state, A, n.STATE_UNAVAILABLE)
    srv.sync(srv.svc.set_interface_state, B, n.STATE_UNAVAILABLE)
    d = dce(srv)
    threading.Timer(0.5, srv.sync, (srv.svc.set_interface_state, B, n.STATE_AVAILABLE)).start()
    t = time.monotonic()
    entries, st = parse_interface_list(call(d, 0, b""))
    assert st == 0 and time.monotonic() - t >= 0.4
    assert [(e.address, e.state) for e in entries] == [(A, n.STATE_UNAVAILABLE), (B, n.STATE_AVAILABLE)]
    srv.sync(srv.svc.set_interfaces, [])
    assert parse_interface_list(call(d, 0, b"")) == ([], n.ERROR_NO_MORE_ITEMS)


def test_handles_are_per_association_group(srv):
    d1, d2 = dce(srv), dce(srv)
    h, _ = register_ex(d1)
    assert status(call(d2, 2, h)) == n.ERROR_INVALID_PARAMETER
    assert status(call(d1, 2, h)) == 0


# ---- bad input ---------------------------------------------------------------------------------------
def test_bad_input_faults_and_other_registrations_survive(srv):
    good = dce(srv)
    hg, _ = register_ex(good, client="survivor", keepalive=60)
    good.get_rpc_transport().get_socket().settimeout(20)
    good.call(3, hg)                                        # pending AsyncNotify on another association
    bad = dce(srv)
    for stub in (b"", b"\x01", os.urandom(7), struct.pack("<I", n.WITNESS_V2) + struct.pack("<IIII", 1, 5, 0, 9),
                 struct.pack("<I", 1) + struct.pack("<IIII", 1, 4, 2, 4) + b"a\0b\0c\0d\0" + b"\0" * 12):
        for op in (1, 4) if len(stub) == 20 else (1, 4, 2, 3):     # 20 bytes parse as a handle
            with pytest.raises(rpcrt.DCERPCException, match="rpc_x_bad_stub_data|nca_s_fault_ndr"):
                call(bad, op, stub)
    unknown = struct.pack("<I", 0) + os.urandom(16)
    assert parse_async_notify(call(bad, 3, unknown)) == (None, n.ERROR_NOT_FOUND)
    assert status(call(bad, 2, unknown)) == n.ERROR_INVALID_PARAMETER
    # raw garbage, a huge fragment, a request before bind: each closes its connection only
    for junk in (os.urandom(300), p.pack_header(p.REQUEST, 3, 1, 0xFFF0) + b"\0" * 64,
                 p.pack_request(0, 0, b"", call_id=1), b"\x05\x00\x0b\x03\x10\0\0\0\xff\xff\0\0\1\0\0\0"):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    regs = srv.sync(srv.svc.select, client="survivor")
    assert len(regs) == 1 and len(srv.sync(srv.svc.list)) == 1
    srv.sync(srv.svc.client_move, regs, [(B, 0)])
    note, st = parse_async_notify(good.recv())
    assert st == 0 and note.kind == "client-move"


def test_layouts_match_spec_example():
    # MS-SWN 4.1: RESOURCE_CHANGE for "GENERALFS", unavailable: Length 28
    rc = n.resource_change("GENERALFS", n.RESOURCE_STATE_UNAVAILABLE)
    assert rc[:8] == struct.pack("<II", 28, 0xFF) and len(rc) == 28
    info = n.InterfaceInfo("SMBND", n.STATE_AVAILABLE, "192.168.1.2", witness=True).pack()
    assert len(info) == n.INTERFACE_INFO_SIZE == 552
    assert info[528:532] == bytes([192, 168, 1, 2]) and info[548:552] == struct.pack("<I", 5)
    lst = n.ipaddr_info_list([("10.0.0.1", n.IPADDR_OFFLINE), ("fe80::1", n.IPADDR_ONLINE)])
    assert struct.unpack_from("<III", lst) == (60, 0, 2)
    assert n.parse_ipaddr_info_list(lst) == [("10.0.0.1", 0x11), ("fe80::1", 0x0A)]
