"""A reference MS-SWN witness client following the Windows client sequence (MS-SWN 3.2.4, notes A
"Exact Windows client sequence"):

1. endpoint-mapper lookup of the witness on the SMB connection's IP (ept_map, ncacn_ip_tcp);
2. GetInterfaceList there (then that binding is closed, MS-SWN 3.2.4.1);
3. RegisterEx (v2, NetName = server name, IpAddress = the SMB IP, KeepAlive 120 s) on an entry with
   INTERFACE_WITNESS and AVAILABLE, trying the next entries on failure;
4. AsyncNotify loop, re-issued after ERROR_TIMEOUT; after ERROR_NOT_FOUND (forced unregister) it
   calls UnRegister and registers again from step 2.

Transport: impacket's DCE/RPC client (NTLM as RPC_C_AUTHN_WINNT at PKT_INTEGRITY, as Windows'
default level <9>, or PKT_PRIVACY); stubs encoded/decoded by ``witness.ndr``. Blocking API plus an async iterator:

    c = WitnessClient("127.0.0.11", "SMBND", "demo", "demo-Passw0rd", epm_port=1135)
    c.register(share="vol1")
    for note in c.notifications():          # or: async for note in c.anotifications()
        if note.kind == "client-move": reconnect_smb_to(note.online_addresses()[0]) ...
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from impacket.dcerpc.v5 import epm, rpcrt, transport
from impacket.uuid import uuidtup_to_bin

from witness import ndr as n

log = logging.getLogger("witness.client")

WITNESS_IF = uuidtup_to_bin(("ccd8c074-d0e5-4a40-92b4-d074faa6ba28", "1.1"))
KINDS = {n.RESOURCE_CHANGE: "resource-change", n.CLIENT_MOVE: "client-move", n.SHARE_MOVE: "share-move",
         n.IP_CHANGE: "ip-change"}


class WitnessError(Exception):
    def __init__(self, op: str, code: int):
        super().__init__(f"{op}: error 0x{code:08x}")
        self.op, self.code = op, code


@dataclass
class InterfaceEntry:
    group: str
    version: int
    state: int
    address: str
    flags: int

    @property
    def usable(self) -> bool:
        """MS-SWN 3.2.4.1: INTERFACE_WITNESS set and AVAILABLE."""
        return bool(self.flags & n.IF_WITNESS) and self.state == n.STATE_AVAILABLE


@dataclass
class Notification:
    kind: str                                   # resource-change | client-move | share-move | ip-change
    message_type: int
    resources: list = field(default_factory=list)     # RESOURCE_CHANGE: [(name, change type)]
    addresses: list = field(default_factory=list)     # IPADDR_INFO_LIST: [(address, flags)]
    received: float = field(default_factory=time.monotonic)

    @property
    def unavailable(self) -> bool:
        return any(t == n.RESOURCE_STATE_UNAVAILABLE for _nm, t in self.resources)

    def online_addresses(self) -> list[str]:
        """Destinations (flags without OFFLINE)."""
        return [a for a, f in self.addresses if not f & n.IPADDR_OFFLINE]


# ----------------------------------------------------------------------------- client-side NDR
def _wstr(s: str | None, ref: int) -> bytes:
    if s is None:
        return struct.pack("<I", 0)
    b = (s + "\0").encode("utf-16-le")
    k = len(b) // 2
    out = struct.pack("<IIII", ref, k, 0, k) + b
    return out + b"\0" * (-len(out) % 4)


def pack_register_ex(net: str | None, share: str | None, ip: str | None, client: str | None, flags: int,
                     keepalive: int, version: int = n.WITNESS_V2) -> bytes:
    return (struct.pack("<I", version) + _wstr(net, 0x20000) + _wstr(share, 0x20004) + _wstr(ip, 0x20008)
            + _wstr(client, 0x2000C) + struct.pack("<II", flags, keepalive))


def pack_register(net: str | None, ip: str | None, client: str | None, version: int = n.WITNESS_V1) -> bytes:
    return struct.pack("<I", version) + _wstr(net, 0x20000) + _wstr(ip, 0x20004) + _wstr(client, 0x20008)


def parse_interface_list(stub: bytes) -> tuple[list[InterfaceEntry], int]:
    (status,) = struct.unpack_from("<I", stub, len(stub) - 4)
    (ptr,) = struct.unpack_from("<I", stub, 0)
    if not ptr:
        return [], status
    count, aptr = struct.unpack_from("<II", stub, 4)
    out = []
    if aptr:
        (maxc,) = struct.unpack_from("<I", stub, 12)
        off = 16
        for _ in range(min(count, maxc)):
            rec = stub[off:off + n.INTERFACE_INFO_SIZE]
            name = rec[:520].decode("utf-16-le").split("\0", 1)[0]
            version, state = struct.unpack_from("<IH", rec, 520)
            v4, v6 = rec[528:532], rec[532:548]
            (flags,) = struct.unpack_from("<I", rec, 548)
            addr = socket.inet_ntop(socket.AF_INET6, v6) if flags & n.IF_IPV6 and not flags & n.IF_IPV4 \
                else socket.inet_ntoa(v4)
            out.append(InterfaceEntry(name, version, state, addr, flags))
            off += n.INTERFACE_INFO_SIZE
    return out, status


def parse_async_notify(stub: bytes) -> tuple[Notification | None, int]:
    (status,) = struct.unpack_from("<I", stub, len(stub) - 4)
    (ptr,) = struct.unpack_from("<I", stub, 0)
    if not ptr:
        return None, status
    mtype, length, count, bptr = struct.unpack_from("<IIII", stub, 4)
    buf = stub[24:24 + length] if bptr else b""
    note = Notification(KINDS.get(mtype, f"unknown-{mtype}"), mtype)
    if mtype == n.RESOURCE_CHANGE:
        note.resources = n.parse_resource_changes(buf, count)
    elif mtype in (n.CLIENT_MOVE, n.SHARE_MOVE, n.IP_CHANGE):
        off = 0
        for _ in range(count):
            (ln,) = struct.unpack_from("<I", buf, off)
            note.addresses += n.parse_ipaddr_info_list(buf[off:off + ln])
            off += ln
    return note, status


# ----------------------------------------------------------------------------- the client
class WitnessClient:
    def __init__(self, server_ip: str, net_name: str, user: str, password: str, domain: str = "", *,
                 epm_port: int = 135, witness_port: int | None = None, client_name: str | None = None,
                 privacy: bool = False, keepalive: int = 120, call_timeout: float = 180.0):
        self.server_ip, self.net_name = server_ip, net_name
        self.user, self.password, self.domain = user, password, domain
        self.epm_port, self.witness_port = epm_port, witness_port
        self.client_name = client_name or socket.getfqdn()          # MS-SWN <11>: the client's FQDN
        self.level = rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY if privacy else rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY
        self.keepalive, self.call_timeout = keepalive, call_timeout
        self.share: str | None = None
        self.ip_notification = False
        self.handle: bytes | None = None
        self.witness_address: str | None = None
        self._dce = None
        self.handlers: dict[str, list[Callable[[Notification], None]]] = {}

    # -- transport
    def lookup_port(self, address: str) -> int:
        """ept_map for the witness interface on ``address`` (C706 appendix O)."""
        if self.witness_port:
            return self.witness_port
        t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{address}[{self.epm_port}]")
        t.set_connect_timeout(10)
        dce = t.get_dce_rpc()
        dce.connect()
        try:
            binding = epm.hept_map(address, WITNESS_IF, protocol="ncacn_ip_tcp", dce=dce)
        finally:
            dce.disconnect()
        return int(binding.rsplit("[", 1)[1].rstrip("]"))

    def _connect(self, address: str):
        port = self.lookup_port(address)
        t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{address}[{port}]")
        t.set_credentials(self.user, self.password, self.domain)
        t.set_connect_timeout(10)
        dce = t.get_dce_rpc()
        # NTLMSSP as RPC_C_AUTHN_WINNT (accepted by MS-SWN <3>; impacket's GSS_NEGOTIATE is Kerberos only)
        dce.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)
        dce.set_auth_level(self.level)
        dce.connect()
        dce.bind(WITNESS_IF)
        return dce

    def _call(self, dce, opnum: int, stub: bytes, timeout: float | None = None) -> bytes:
        dce.get_rpc_transport().get_socket().settimeout(timeout or self.call_timeout)
        dce.call(opnum, stub)
        return dce.recv()

    # -- operations
    def get_interface_list(self, address: str | None = None) -> list[InterfaceEntry]:
        """WitnessrGetInterfaceList on ``address`` (default: the SMB server IP), then disconnect."""
        dce = self._connect(address or self.server_ip)
        try:
            entries, status = parse_interface_list(self._call(dce, 0, b""))
        finally:
            dce.disconnect()
        if status:
            raise WitnessError("GetInterfaceList", status)
        return entries

    def register(self, share: str | None = None, ip_notification: bool = False) -> str:
        """GetInterfaceList + RegisterEx on the first usable entry that accepts (MS-SWN 3.2.4.1).
        Returns the witness address registered with."""
        self.share, self.ip_notification = share, ip_notification
        last: Exception | None = None
        for entry in [e for e in self.get_interface_list() if e.usable]:
            try:
                dce = self._connect(entry.address)
            except Exception as e:          # unreachable: try the next one
                last = e
                continue
            stub = pack_register_ex(self.net_name, share, self.server_ip, self.client_name,
                                    n.REGISTER_IP_NOTIFICATION if ip_notification else 0, self.keepalive)
            out = self._call(dce, 4, stub)
            (status,) = struct.unpack_from("<I", out, 20)
            if status:
                dce.disconnect()
                last = WitnessError("RegisterEx", status)
                continue
            self.close()
            self._dce, self.handle, self.witness_address = dce, out[:20], entry.address
            log.info("registered with the witness on %s for %s", entry.address, self.server_ip)
            return entry.address
        raise last or WitnessError("GetInterfaceList", n.ERROR_NO_MORE_ITEMS)

    def async_notify(self) -> Notification | None:
        """One WitnessrAsyncNotify; None when the KeepAlive expired (ERROR_TIMEOUT)."""
        if self._dce is None or self.handle is None:
            raise WitnessError("AsyncNotify", n.ERROR_NOT_FOUND)
        note, status = parse_async_notify(self._call(self._dce, 3, self.handle, self.keepalive + 30))
        if status == n.ERROR_TIMEOUT:
            return None
        if status:
            raise WitnessError("AsyncNotify", status)
        return note

    def unregister(self) -> int:
        status = n.ERROR_NOT_FOUND
        if self._dce is not None and self.handle is not None:
            try:
                (status,) = struct.unpack_from("<I", self._call(self._dce, 2, self.handle, 30), 0)
            except Exception:
                pass
        self.handle = None
        return status

    def close(self) -> None:
        if self._dce is not None:
            try:
                self._dce.disconnect()
            except Exception:
                pass
        self._dce, self.handle = None, None

    # -- the loop
    def on(self, kind: str, fn: Callable[[Notification], None]) -> None:
        """Callback for "client-move", "resource-change", "share-move", "ip-change" or "*"."""
        self.handlers.setdefault(kind, []).append(fn)

    def notifications(self, reregister: bool = True, retry_interval: float = 1.0) -> Iterator[Notification]:
        """AsyncNotify forever (MS-SWN 3.2.4.2); on ERROR_NOT_FOUND, UnRegister and register again
        (notes A, Windows Server 2022 sequence). Callbacks run before each notification is yielded."""
        while True:
            try:
                note = self.async_notify()
            except WitnessError as e:
                if e.code != n.ERROR_NOT_FOUND or not reregister:
                    raise
                self.unregister()
                self._reregister(retry_interval)
                continue
            except (OSError, rpcrt.DCERPCException) as e:
                if not reregister:
                    raise
                log.info("witness connection lost (%s): registering again", e)
                self.close()
                self._reregister(retry_interval)
                continue
            if note is None:
                continue                                   # ERROR_TIMEOUT: re-issue (3.2.4.2)
            for fn in self.handlers.get(note.kind, []) + self.handlers.get("*", []):
                fn(note)
            yield note

    def _reregister(self, retry_interval: float) -> None:
        while True:
            try:
                self.register(self.share, self.ip_notification)
                return
            except Exception as e:                 # Windows retries every 60 s (<13>); we retry faster
                log.info("re-registration failed: %s", e)
                time.sleep(retry_interval)

    async def anotifications(self, reregister: bool = True):
        """``async for note in client.anotifications()``: the blocking loop in a worker thread."""
        it = self.notifications(reregister)
        while True:
            yield await asyncio.to_thread(next, it)
