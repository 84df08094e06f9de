"""The MS-SWN server (Witness service, protocol version 2) on the smbnd DCE/RPC runtime.

State follows MS-SWN 3.1.1: ``InterfaceList`` (``Interface``), ``WitnessRegistrationList``
(``Registration``) with the pending notifications of each registration. Local events (3.1.6)
enter through ``resource_change`` / ``client_move`` / ``share_move`` / ``ip_change``; the witness
process maps cluster events to them and the control socket exposes them by hand.
Runs inside one asyncio loop; timers use ``loop.call_later``.
"""
from __future__ import annotations

import ipaddress
import logging
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Callable

from smbnd.rpc import pdu as p
from smbnd.rpc.iface import FAULT_NDR, Interface, RpcFault

from . import ndr as n

log = logging.getLogger("witness")

WITNESS_UUID = "ccd8c074-d0e5-4a40-92b4-d074faa6ba28"
WITNESS_VERSION = (1, 1)              # MS-SWN 6 IDL version(1.1); 2.1 says 1.0: minor 0 accepted too
SERVICE_VERSION = n.WITNESS_V2        # WitnessServiceVersion, MS-SWN 3.1.3 <2> (2012 R2 and later)
UNUSED_TIMEOUT = 30.0                 # MS-SWN 3.1.5.1 <5>
FORCED_UNREGISTER_DELAY = 5.0         # notes A "Windows Server 2022 quirk" (Samba forced_unregister)
MAX_REGISTRATIONS = 10_000            # beyond: ERROR_NO_SYSTEM_RESOURCES (MS-SWN 3.1.4.2)
# MS-RPCE 2.2.1.1.7 auth types MS-SWN 3.1.4 <3> accepts
ALLOWED_AUTHN = (p.AUTHN_GSS_KERBEROS, p.AUTHN_GSS_NEGOTIATE, p.AUTHN_WINNT)


@dataclass
class Interface_:
    """MS-SWN 3.1.1.2 Interface: one data LIF of the SVM."""
    name: str                          # LIF name (not on the wire)
    group: str                         # InterfaceGroupName
    address: str
    state: int = n.STATE_AVAILABLE
    local: bool = False                # hosted by the node this witness runs on (MS-SWN 3.1.4.1)
    node: str = ""


@dataclass(eq=False)
class Registration:
    """MS-SWN 3.1.1.3 WitnessRegistration."""
    key: uuidlib.UUID
    group_id: int
    version: int
    net_name: str
    ip_address: str
    client_name: str
    share_name: str | None = None
    ip_notification: bool = False
    keepalive: int | None = None
    user: str | None = None
    created: float = field(default_factory=time.time)
    last_use: float = field(default_factory=time.monotonic)
    changes: list = field(default_factory=list)          # PendingChangeNotifications [(name, state)]
    move: list | None = None                             # PendingMoveNotification [(addr, flags)]
    share_move: list | None = None                       # PendingShareMoveNotification
    ip_change: list | None = None                        # PendingIPNotification
    waiters: list = field(default_factory=list)          # pending AsyncNotify calls
    delivered: int = 0
    forced_unregister_at: float | None = None
    _timers: list = field(default_factory=list)

    def view(self) -> dict:
        return {"handle": f"0:{self.key}", "client": self.client_name, "net_name": self.net_name,
                "ip_address": self.ip_address, "share": self.share_name, "version": f"0x{self.version:08x}",
                "ip_notification": self.ip_notification, "keepalive": self.keepalive, "user": self.user,
                "async_notify_pending": len(self.waiters), "delivered": self.delivered,
                "pending": {"changes": len(self.changes), "move": self.move is not None,
                            "share_move": self.share_move is not None, "ip_change": self.ip_change is not None},
                "age_s": round(time.time() - self.created, 3)}

    def has_pending(self) -> bool:
        return bool(self.changes) or self.move is not None or self.share_move is not None \
            or self.ip_change is not None


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


class WitnessService:
    def __init__(self, net_name: str, *, shares: Callable[[], list[str]] = lambda: [],
                 scale_out: bool = False, unused_timeout: float = UNUSED_TIMEOUT,
                 forced_unregister_delay: float = FORCED_UNREGISTER_DELAY, loop=None):
        self.net_name = net_name.upper()                  # ServerGlobalName (MS-SWN 3.1.3)
        self.aliases: set[str] = set()
        self.shares = shares                              # NetrShareEnum stand-in (share names)
        self.scale_out = scale_out                        # shares are STYPE_CLUSTER_SOFS
        self.unused_timeout = unused_timeout
        self.forced_unregister_delay = forced_unregister_delay
        self.interfaces: list[Interface_] = []
        self.registrations: dict[uuidlib.UUID, Registration] = {}
        self._list_waiters: list = []                    # GetInterfaceList calls waiting for AVAILABLE
        self._groups_hooked: set[int] = set()
        self._loop = loop
        self._sweeper = None
        self.on_change: Callable[[], None] | None = None

    # ------------------------------------------------------------------ RPC plumbing
    @property
    def loop(self):
        if self._loop is None:
            import asyncio
            self._loop = asyncio.get_running_loop()
        return self._loop

    def interface(self) -> Interface:
        return Interface(WITNESS_UUID, WITNESS_VERSION, "witness", {
            0: self._guard(self.get_interface_list),
            1: self._guard(self.register),
            2: self._guard(self.unregister),
            3: self._guard(self.async_notify),
            4: self._guard(self.register_ex),
            # 5 WitnessrUnRegisterEx: absent -> nca_s_op_rng_error, i.e. RPC_S_PROCNUM_OUT_OF_RANGE as
            # Windows Server 2022 and earlier answer (MS-SWN 3.1.4.6 on learn.microsoft.com, notes A)
        }, min_auth_level=p.LEVEL_PKT_INTEGRITY)

    @staticmethod
    def _guard(fn):
        def handler(call, stub):
            if not call.little_endian:
                raise RpcFault(FAULT_NDR)
            # MS-SWN 3.1.4 <3>: only Kerberos, Negotiate and NTLM (WINNT) are accepted
            if call.association.auth_type not in ALLOWED_AUTHN:
                return error_stub(call.opnum, n.ERROR_NOT_AUTHENTICATED)
            try:
                return fn(call, stub)
            except n.NdrError as e:
                log.info("witness opnum %d: bad stub: %s", call.opnum, e)
                raise RpcFault(FAULT_NDR) from None
        return handler

    def _group_id(self, call) -> int:
        g = call.association.group
        if g is None:
            return 0
        if g.id not in self._groups_hooked:
            # context handle rundown (MS-RPCE 3.3.3.2.1 / MS-SWN 3.1.6.5): the registrations of an
            # association group die with its last connection
            self._groups_hooked.add(g.id)
            g.on_empty.append(self._rundown)
        return g.id

    def _rundown(self, group) -> None:
        self._groups_hooked.discard(group.id)
        for reg in [r for r in self.registrations.values() if r.group_id == group.id]:
            log.info("witness: rundown of %s (%s)", reg.key, reg.client_name)
            self._remove(reg, n.ERROR_NOT_FOUND)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ interfaces
    def set_interfaces(self, interfaces: list[Interface_]) -> None:
        self.interfaces = list(interfaces)
        self._wake_list_waiters()

    def _wake_list_waiters(self) -> None:
        if any(i.state == n.STATE_AVAILABLE for i in self.interfaces):
            waiters, self._list_waiters = self._list_waiters, []
            for call in waiters:
                if not call.done and not call.orphaned:
                    call.reply(self._interface_list())

    def _interface_list(self) -> bytes:
        infos = [n.InterfaceInfo(i.group, i.state, i.address, witness=not i.local) for i in self.interfaces]
        return n.pack_interface_list(infos)

    def find_interface(self, address: str) -> Interface_ | None:
        return next((i for i in self.interfaces if _same_ip(i.address, address)), None)

    # ------------------------------------------------------------------ opnum 0
    def get_interface_list(self, call, stub: bytes) -> bytes | None:
        """MS-SWN 3.1.4.1"""
        if not self.interfaces:
            return n.pack_interface_list([], n.ERROR_NO_MORE_ITEMS)
        if not any(i.state == n.STATE_AVAILABLE for i in self.interfaces):
            call.on_cancel = self._list_cancelled     # waits until one is AVAILABLE (3.1.6.1)
            self._list_waiters.append(call)
            return None
        return self._interface_list()

    def _list_cancelled(self, call) -> None:
        if call in self._list_waiters:
            self._list_waiters.remove(call)
        if not call.orphaned and not call.done:
            call.fault(p_fault_cancel())

    # ------------------------------------------------------------------ opnums 1 and 4
    def _net_name_ok(self, name: str) -> bool:
        """ServerGlobalName comparison (MS-SWN 3.1.4.2): case-insensitive; a DNS name whose first
        label is the NetBIOS name is the same server (as Samba's swn_server_check_net_name)."""
        u = name.upper()
        return u == self.net_name or u.split(".", 1)[0] == self.net_name or u in self.aliases

    def register(self, call, stub: bytes) -> bytes:
        """MS-SWN 3.1.4.2 WitnessrRegister."""
        a = n.parse_register(stub)
        if a.version != n.WITNESS_V1:
            return n.pack_register_response(None, n.ERROR_REVISION_MISMATCH)
        return self._create(call, a)

    def register_ex(self, call, stub: bytes) -> bytes:
        """MS-SWN 3.1.4.5 WitnessrRegisterEx."""
        a = n.parse_register_ex(stub)
        if a.version != n.WITNESS_V2:
            return n.pack_register_response(None, n.ERROR_REVISION_MISMATCH)
        return self._create(call, a)

    def _create(self, call, a: n.RegisterArgs) -> bytes:
        if a.net_name is None or a.ip_address is None or a.client_name is None:
            return n.pack_register_response(None, n.ERROR_INVALID_PARAMETER)
        if not self._net_name_ok(a.net_name):
            return n.pack_register_response(None, n.ERROR_INVALID_PARAMETER)
        # MS-SWN 3.1.4.2: the IP must be one of InterfaceList (Samba checks it for every share kind,
        # per dochelp's clarification quoted in srv_witness_nt.c) -> ERROR_INVALID_STATE
        if self.find_interface(a.ip_address) is None:
            return n.pack_register_response(None, n.ERROR_INVALID_STATE)
        if a.share_name is not None:
            # MS-SWN 3.1.4.5: enumeration failure / no shares / unknown share -> INVALID_STATE
            shares = {s.lower() for s in self.shares()}
            if not shares or a.share_name.lower() not in shares:
                return n.pack_register_response(None, n.ERROR_INVALID_STATE)
        if len(self.registrations) >= MAX_REGISTRATIONS:
            return n.pack_register_response(None, n.ERROR_NO_SYSTEM_RESOURCES)
        pr = call.principal
        reg = Registration(key=uuidlib.uuid4(), group_id=self._group_id(call), version=a.version,
                           net_name=a.net_name, ip_address=a.ip_address, client_name=a.client_name,
                           share_name=a.share_name, ip_notification=bool(a.flags & n.REGISTER_IP_NOTIFICATION),
                           keepalive=a.keepalive, user=pr.user if pr else None)
        self.registrations[reg.key] = reg
        self._arm_unused(reg)
        log.info("witness: registered %s client=%s net=%s ip=%s share=%s v=0x%x keepalive=%s", reg.key,
                 reg.client_name, reg.net_name, reg.ip_address, reg.share_name, reg.version, reg.keepalive)
        self._changed()
        return n.pack_register_response(reg.key, n.ERROR_SUCCESS)

    def _lookup(self, call, raw: bytes) -> Registration | None:
        reg = self.registrations.get(n.handle_key(raw))
        if reg is None or reg.group_id != self._group_id(call) or raw[:4] != b"\0\0\0\0":
            return None
        return reg

    # ------------------------------------------------------------------ opnum 2
    def unregister(self, call, stub: bytes) -> bytes:
        """MS-SWN 3.1.4.3; unknown handle: ERROR_INVALID_PARAMETER as 2012 R2 and later (<4>)."""
        reg = self._lookup(call, n.parse_handle(stub))
        if reg is None:
            return n.pack_status(n.ERROR_INVALID_PARAMETER)
        self._remove(reg, n.ERROR_NOT_FOUND)
        return n.pack_status(n.ERROR_SUCCESS)

    def _remove(self, reg: Registration, waiter_error: int) -> None:
        if self.registrations.pop(reg.key, None) is None:
            return
        for h in reg._timers:
            h.cancel()
        reg._timers.clear()
        waiters, reg.waiters = reg.waiters, []
        for call, timer in waiters:
            if timer is not None:
                timer.cancel()
            if not call.done and not call.orphaned:
                call.reply(n.pack_async_notify(0, [], waiter_error))
        log.info("witness: unregistered %s (%s)", reg.key, reg.client_name)
        self._changed()

    def unregister_by_key(self, key: uuidlib.UUID) -> bool:
        reg = self.registrations.get(key)
        if reg is None:
            return False
        self._remove(reg, n.ERROR_NOT_FOUND)
        return True

    # ------------------------------------------------------------------ opnum 3
    def async_notify(self, call, stub: bytes) -> bytes | None:
        """MS-SWN 3.1.4.4; KeepAlive expiry -> ERROR_TIMEOUT (3.1.5.2)."""
        reg = self._lookup(call, n.parse_handle(stub))
        if reg is None:
            return n.pack_async_notify(0, [], n.ERROR_NOT_FOUND)
        reg.last_use = time.monotonic()
        if reg.has_pending() and not reg.waiters:
            return self._build(reg)
        timer = None
        if reg.keepalive is not None:
            timer = self.loop.call_later(reg.keepalive, self._keepalive_expired, reg, call)
        reg.waiters.append((call, timer))
        call.on_cancel = lambda c, reg=reg: self._notify_cancelled(reg, c)
        self._changed()
        return None

    def _keepalive_expired(self, reg: Registration, call) -> None:
        for i, (c, _t) in enumerate(reg.waiters):
            if c is call:
                del reg.waiters[i]
                break
        else:
            return
        reg.last_use = time.monotonic()
        if not call.done and not call.orphaned:
            call.reply(n.pack_async_notify(0, [], n.ERROR_TIMEOUT))
        self._arm_unused(reg)
        self._changed()

    def _notify_cancelled(self, reg: Registration, call) -> None:
        for i, (c, t) in enumerate(reg.waiters):
            if c is call:
                del reg.waiters[i]
                if t is not None:
                    t.cancel()
                break
        if not call.orphaned and not call.done:
            call.fault(p_fault_cancel())
        self._arm_unused(reg)

    def _arm_unused(self, reg: Registration) -> None:
        """MS-SWN 3.1.2.1: one periodic sweep for all registrations (started on first use)."""
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        return max(0.05, min(1.0, self.unused_timeout / 4))

    def _sweep(self) -> None:
        """MS-SWN 3.1.5.1: drop registrations without a pending AsyncNotify whose LastUseTime is
        older than the unused-registration timeout (30 s, <5>)."""
        now = time.monotonic()
        for reg in list(self.registrations.values()):
            if not reg.waiters and reg.forced_unregister_at is None and now - reg.last_use >= self.unused_timeout:
                log.info("witness: registration %s (%s) unused for %.1f s: removed", reg.key, reg.client_name,
                         now - reg.last_use)
                self._remove(reg, n.ERROR_NOT_FOUND)
        self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep) if self.registrations else None

    def _build(self, reg: Registration) -> bytes:
        """One response from the pending notifications, in the order of MS-SWN 3.1.4.4."""
        forced = False
        if reg.changes:
            msgs = [n.resource_change(name, st) for name, st in reg.changes]
            forced = any(st != n.RESOURCE_STATE_AVAILABLE for _nm, st in reg.changes)
            reg.changes = []
            out = n.pack_async_notify(n.RESOURCE_CHANGE, msgs)
        elif reg.move is not None:
            out = n.pack_async_notify(n.CLIENT_MOVE, [n.ipaddr_info_list(reg.move)])
            reg.move, forced = None, True
        elif reg.share_move is not None:
            out = n.pack_async_notify(n.SHARE_MOVE, [n.ipaddr_info_list(reg.share_move)])
            reg.share_move, forced = None, True
        else:
            out = n.pack_async_notify(n.IP_CHANGE, [n.ipaddr_info_list(reg.ip_change or [])])
            reg.ip_change = None
        reg.delivered += 1
        reg.last_use = time.monotonic()              # MS-SWN 3.1.4.4 (v2): LastUseTime on response
        if forced and reg.forced_unregister_at is None and self.forced_unregister_delay >= 0:
            reg.forced_unregister_at = time.monotonic() + self.forced_unregister_delay
            reg._timers.append(self.loop.call_later(self.forced_unregister_delay, self._force_unregister, reg))
        else:
            self._arm_unused(reg)
        self._changed()
        return out

    def _force_unregister(self, reg: Registration) -> None:
        """notes A: after a move/unavailable event the registration is dropped; the pending
        AsyncNotify gets ERROR_NOT_FOUND and the client registers again."""
        log.info("witness: forced unregister of %s (%s)", reg.key, reg.client_name)
        self._remove(reg, n.ERROR_NOT_FOUND)

    def _deliver(self, reg: Registration) -> None:
        while reg.waiters and reg.has_pending():
            call, timer = reg.waiters.pop(0)
            if timer is not None:
                timer.cancel()
            if call.done or call.orphaned:
                continue
            call.reply(self._build(reg))

    # ------------------------------------------------------------------ local events (MS-SWN 3.1.6)
    def select(self, *, key: str | None = None, client: str | None = None, ip: str | None = None,
               net_name: str | None = None, share: str | None = None) -> list[Registration]:
        out = []
        for r in self.registrations.values():
            if key and str(r.key) != key.split(":")[-1].lower():
                continue
            if client and r.client_name.lower() != client.lower():
                continue
            if ip and not _same_ip(r.ip_address, ip):
                continue
            if net_name and r.net_name.upper() != net_name.upper():
                continue
            if share and (r.share_name or "").lower() != share.lower():
                continue
            out.append(r)
        return out

    def resource_change(self, regs: list[Registration], state: int, name: str | None = None) -> int:
        """3.1.6.1: a change entry per registration (ResourceName: the registered IP, as Samba)."""
        for r in regs:
            r.changes.append((name or r.ip_address, state))
            self._deliver(r)
        return len(regs)

    def set_interface_state(self, address: str, state: int) -> list[Registration]:
        """3.1.6.1: Interface.State changes; registrations on that IP get a change entry."""
        iface = self.find_interface(address)
        if iface is not None:
            iface.state = state
        self._wake_list_waiters()
        regs = self.select(ip=address)
        self.resource_change(regs, n.RESOURCE_STATE_UNAVAILABLE if state == n.STATE_UNAVAILABLE
                             else n.RESOURCE_STATE_AVAILABLE if state == n.STATE_AVAILABLE
                             else n.RESOURCE_STATE_UNKNOWN)
        return regs

    def client_move(self, regs: list[Registration], addresses: list[tuple[str, int]]) -> int:
        """3.1.6.2: create or overwrite PendingMoveNotification."""
        for r in regs:
            r.move = list(addresses)
            self._deliver(r)
        return len(regs)

    def share_move(self, regs: list[Registration], addresses: list[tuple[str, int]]) -> int:
        """3.1.6.3: only v2 registrations with ShareNameNotificationRequired."""
        regs = [r for r in regs if r.version == n.WITNESS_V2 and r.share_name]
        for r in regs:
            r.share_move = list(addresses)
            self._deliver(r)
        return len(regs)

    def ip_change(self, regs: list[Registration], addresses: list[tuple[str, int]]) -> int:
        """3.1.6.4: only v2 registrations with IPNotificationRequired."""
        regs = [r for r in regs if r.version == n.WITNESS_V2 and r.ip_notification]
        for r in regs:
            r.ip_change = list(addresses)
            self._deliver(r)
        return len(regs)

    def list(self) -> list[dict]:
        return [r.view() for r in self.registrations.values()]

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for reg in list(self.registrations.values()):
            for h in reg._timers:
                h.cancel()
            for _c, t in reg.waiters:
                if t is not None:
                    t.cancel()


def p_fault_cancel() -> int:
    from smbnd.rpc.iface import NCA_S_FAULT_CANCEL
    return NCA_S_FAULT_CANCEL


def error_stub(opnum: int, error: int) -> bytes:
    """The [out] parameters of an operation that failed before producing any (MS-SWN 3.1.4)."""
    if opnum == 0:
        return n.pack_interface_list([], error)
    if opnum in (1, 4):
        return n.pack_register_response(None, error)
    if opnum == 3:
        return n.pack_async_notify(0, [], error)
    return n.pack_status(error)
