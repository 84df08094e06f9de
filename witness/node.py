"""The witness of one cluster node: MS-SWN service + endpoint mapper on the addresses of the LIFs
the node hosts, fed by the cluster's placement and events (docs/cluster-design.md).

Mapping of cluster state to MS-SWN local events (3.1.6), decided per the notes (section A):
- a LIF whose node goes down (node_down, node_fenced, unplanned takeover_start) or that is set
  down (lif_down) -> Interface UNAVAILABLE -> RESOURCE_CHANGE UNAVAILABLE to registrations on its IP;
- such a LIF back in service (takeover_done moved it to the partner, giveback, lif_up)
  -> AVAILABLE -> RESOURCE_CHANGE AVAILABLE;
- a LIF that changed node while staying available (lif_moved: migrate, revert, planned takeover,
  giveback) -> CLIENT_MOVE to its address (now served by the new node) for registrations on its IP;
- between lif_moving and lif_moved a LIF keeps its previous node in the MS-SWN state (it can only
  turn UNAVAILABLE): the placement is committed before the new node hosts the address, and a
  CLIENT_MOVE / RESOURCE_CHANGE AVAILABLE sent then would send clients to an address nobody answers;
- lif_down / lif_up also -> IP_CHANGE (OFFLINE / ONLINE) to registrations with IP notification;
- vol_moved / aggr_relocated on a scale-out or asymmetric SVM -> SHARE_MOVE to the LIFs of the
  node that now owns the volume's aggregate, for registrations naming that share.
The state is recomputed from scratch on every input and diffed, so a replayed or duplicated
event never produces a second notification.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from smbnd.auth import UserDB
from smbnd.cluster.model import ClusterConfig, Placement
from smbnd.rpc import pdu as p
from smbnd.rpc.association import Association
from smbnd.rpc.epm import Endpoint, EndpointMapper
from smbnd.rpc.iface import AssocGroups, Interface
from smbnd.rpc.security import NtlmProvider
from smbnd.rpc.tcp import RpcTcpServer

from . import ndr as n
from .service import WITNESS_UUID, WITNESS_VERSION, Interface_, WitnessService
from smbnd.cluster.model import socket_path

log = logging.getLogger("witness")

# MS-CMRP (clusapi): bind accepted so that smbtorture's rpc.witness connection helper succeeds;
# no operation is implemented (every call -> nca_s_op_rng_error). We do not emulate MS-CMRP.
CLUSAPI_UUID = "b97db8b2-4c63-11cf-bff6-08002be23f2f"
# a lif_moving without its lif_moved (the operation failed, or the event was lost) stops holding the
# LIF's state after this long; the supervisor's node operations time out before it
MOVE_HOLD_S = 90.0
FILE_FALLBACK_S = 2.0          # placement.json ahead of the event stream this long: adopt the file


def control_path(c: ClusterConfig, node: str) -> str:
    return socket_path(c.state_dir, f"{node}.witness")


class WitnessNode:
    def __init__(self, c: ClusterConfig, node: str, *, forced_unregister_delay: float = 5.0,
                 unused_timeout: float = 30.0, poll_interval: float = 0.1):
        if node not in c.nodes:
            raise ValueError(f"unknown node {node!r}")
        self.c, self.node = c, node
        self.poll_interval = poll_interval
        self.placement_path = os.path.join(c.state_dir, "placement.json")
        self.placement = Placement.load(self.placement_path) or c.initial_placement()
        self._placement_mtime = 0
        self._file_placement: Placement | None = None
        self._file_newer_since = 0.0
        self.down: set[str] = set()              # nodes known down from events
        self.lifs_down: set[str] = set()         # LIFs administratively down (lif_down)
        self.moving: dict[str, float] = {}       # LIF -> monotonic time of its lif_moving (until lif_moved)
        self.last_seq = 0
        self.service = WitnessService(c.svm.name, shares=lambda: list(c.volumes),
                                      scale_out=c.svm.scale_out, unused_timeout=unused_timeout,
                                      forced_unregister_delay=forced_unregister_delay)
        self.service.aliases.add(c.name.upper())
        self.epm = EndpointMapper([Endpoint(WITNESS_UUID, WITNESS_VERSION, "Witness Service", self._witness_port)])
        self.users = UserDB.from_mapping(c.users)
        dns_domain = f"{c.svm.domain.lower()}.test" if "." not in c.svm.domain else c.svm.domain.lower()
        self.provider = NtlmProvider(self.users, netbios_name=c.svm.name[:15].upper(),
                                     netbios_domain=c.svm.domain.upper(),
                                     dns_name=f"{c.svm.name.lower()}.{dns_domain}", dns_domain=dns_domain)
        self.groups = AssocGroups()
        self.listeners: dict[tuple[str, str], RpcTcpServer] = {}
        self._state: dict[str, tuple[str, bool]] = {}     # lif -> (node, available)
        self._tasks: list[asyncio.Task] = []
        self._control: asyncio.base_events.Server | None = None
        self.event_source = "none"
        self.registrations_path = os.path.join(c.state_dir, "witness", f"{node}.json")
        self.service.on_change = self._publish

    def _publish(self) -> None:
        """Registrations for the supervisor's /v1/status ("witness"): <state_dir>/witness/<node>.json."""
        try:
            os.makedirs(os.path.dirname(self.registrations_path), exist_ok=True)
            tmp = self.registrations_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.service.list(), f)
            os.replace(tmp, self.registrations_path)
        except OSError as e:
            log.info("witness %s: cannot publish registrations: %s", self.node, e)

    # ------------------------------------------------------------------ RPC endpoints
    def _witness_port(self, address: str) -> int | None:
        return self.c.port("witness") if (address, "witness") in self.listeners else None

    def _factory(self, kind: str):
        def make(peer: str, port: int) -> Association:
            if kind == "epm":
                ifaces = [self.epm.interface()]
            else:
                ifaces = [self.service.interface(),
                          Interface(CLUSAPI_UUID, (3, 0), "clusapi", {}, min_auth_level=p.LEVEL_PKT_INTEGRITY)]
            return Association(ifaces, security=self.provider, groups=self.groups,
                               secondary_address=str(port), name=f"{kind}@{peer}")
        return make

    def hosted_addresses(self) -> list[str]:
        return sorted(self.c.lifs[lif].address for lif in self.placement.lifs_on(self.node) if lif in self.c.lifs)

    async def _update_listeners(self) -> None:
        want = {(a, k) for a in self.hosted_addresses() for k in ("witness", "epm")}
        for key in [k for k in self.listeners if k not in want]:
            srv = self.listeners.pop(key)
            await srv.close()
            log.info("witness %s: stopped listening on %s (%s)", self.node, *key)
        for addr, kind in sorted(want - set(self.listeners)):
            srv = RpcTcpServer(self._factory(kind))
            port = self.c.port("witness") if kind == "witness" else self.c.port("epm")
            try:
                await srv.start(addr, port)
            except OSError as e:      # the previous owner has not released it yet: retried next round
                log.info("witness %s: cannot listen on %s:%d yet: %s", self.node, addr, port, e.strerror)
                continue
            self.listeners[(addr, kind)] = srv
            log.info("witness %s: listening on %s:%d (%s)", self.node, addr, port, kind)

    # ------------------------------------------------------------------ cluster state -> MS-SWN
    def _compute(self) -> dict[str, tuple[str, bool]]:
        down = self.down | set(self.placement.down_nodes)
        out = {}
        for name, lif in self.c.lifs.items():
            node = self.placement.lif_node.get(name, lif.home)
            if name in self.moving and name in self._state:
                node = self._state[name][0]          # held until lif_moved: the old node (MS-SWN 3.1.6.2)
            out[name] = (node, node not in down and name not in self.lifs_down)
        return out

    def _expire_moves(self) -> bool:
        now = time.monotonic()
        stale = [lif for lif, t in self.moving.items() if now - t > MOVE_HOLD_S]
        for lif in stale:
            log.info("witness %s: %s: no lif_moved after %.0f s; state released", self.node, lif, MOVE_HOLD_S)
            del self.moving[lif]
        return bool(stale)

    def reconcile(self) -> None:
        new = self._compute()
        svc = self.service
        ifaces = []
        for name, lif in self.c.lifs.items():
            node, up = new[name]
            old = svc.find_interface(lif.address)
            iface = Interface_(name=name, group=self.c.svm.name, address=lif.address,
                               state=old.state if old else (n.STATE_AVAILABLE if up else n.STATE_UNAVAILABLE),
                               local=node == self.node, node=node)
            ifaces.append(iface)
        svc.interfaces = ifaces
        for name, (node, up) in new.items():
            lif = self.c.lifs[name]
            prev = self._state.get(name)
            if prev is None:
                svc.find_interface(lif.address).state = n.STATE_AVAILABLE if up else n.STATE_UNAVAILABLE
                continue
            pnode, pup = prev
            if pup and not up:
                regs = svc.set_interface_state(lif.address, n.STATE_UNAVAILABLE)
                log.info("witness %s: %s (%s) unavailable -> RESOURCE_CHANGE to %d", self.node, name,
                         lif.address, len(regs))
            elif up and not pup:
                regs = svc.set_interface_state(lif.address, n.STATE_AVAILABLE)
                log.info("witness %s: %s (%s) available -> RESOURCE_CHANGE to %d", self.node, name,
                         lif.address, len(regs))
            elif up and node != pnode:
                k = svc.client_move(svc.select(ip=lif.address), [(lif.address, 0)])
                log.info("witness %s: %s (%s) moved %s -> %s: CLIENT_MOVE to %d", self.node, name, lif.address,
                         pnode, node, k)
        self._state = new
        svc._wake_list_waiters()

    def lif_ip_change(self, lif: str, online: bool) -> int:
        """lif_down / lif_up -> IP_CHANGE (flags per notes A: OFFLINE 0x11 / ONLINE 0x9 for IPv4)."""
        addr = self.c.lifs[lif].address
        flag = n.IPADDR_ONLINE if online else n.IPADDR_OFFLINE
        return self.service.ip_change(self.service.select(), [(addr, flag)])

    def share_moved(self, vols: list[str]) -> int:
        if not (self.c.svm.scale_out or self.c.svm.asymmetric):
            return 0
        total = 0
        for vol in vols:
            aggr = self.placement.vol_aggr.get(vol, self.c.volumes[vol].aggregate if vol in self.c.volumes else "")
            owner = self.placement.aggr_owner.get(aggr)
            dest = [(self.c.lifs[l].address, 0) for l in self.placement.lifs_on(owner or "")
                    if self._state.get(l, ("", False))[1]]
            if dest:
                total += self.service.share_move(self.service.select(share=vol), dest)
        return total

    def apply_event(self, ev: dict) -> None:
        seq = ev.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return
            self.last_seq = seq
        t = ev.get("type")
        node = ev.get("node")
        if t in ("node_down", "node_fenced") or (t == "takeover_start" and not ev.get("planned")):
            self.down.add(node)
        elif t in ("node_up", "giveback_done"):
            self.down.discard(node)
        elif t == "lif_down" and ev.get("lif") in self.c.lifs:
            self.lifs_down.add(ev["lif"])
            self.lif_ip_change(ev["lif"], False)
        elif t == "lif_up" and ev.get("lif") in self.c.lifs:
            self.lifs_down.discard(ev["lif"])
            self.lif_ip_change(ev["lif"], True)
        elif t == "lif_moving" and ev.get("lif") in self.c.lifs:
            self.moving[ev["lif"]] = time.monotonic()
        elif t == "lif_moved" and ev.get("lif") in self.c.lifs:
            self.moving.pop(ev["lif"], None)
            self.placement.lif_node[ev["lif"]] = ev.get("to_node")
        elif t == "placement" and isinstance(ev.get("placement"), dict):
            self.placement = Placement.from_json(json.dumps(ev["placement"]))
        elif t == "vol_moved" and ev.get("vol") in self.c.volumes:
            self.placement.vol_aggr[ev["vol"]] = ev.get("to_aggr")
        elif t == "aggr_relocated":
            self.placement.aggr_owner[ev.get("aggr")] = ev.get("to_node")
        self.reconcile()
        if t == "vol_moved":
            self.share_moved([ev["vol"]])
        elif t == "aggr_relocated":
            self.share_moved([v for v, a in self.placement.vol_aggr.items() if a == ev.get("aggr")])

    def _reload_placement(self, force: bool = False) -> bool:
        """Adopt ``placement.json`` when it is newer (epoch) than what we hold.

        While events flow (``event_source`` api/file) they are the input: every commit is a
        ``placement`` event, in order with node_down / lif_moving / lif_moved. The file is written
        a few ms before that event reaches us, so adopting it at once would skip the states between
        (a fenced node's LIF would look moved, CLIENT_MOVE, instead of UNAVAILABLE then AVAILABLE,
        MS-SWN 3.1.6.1). Then the file is only a fallback: adopted when the stream has not caught up
        with it within FILE_FALLBACK_S."""
        try:
            mtime = os.stat(self.placement_path).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime != self._placement_mtime or force:
            self._placement_mtime = mtime
            self._file_placement = Placement.load(self.placement_path)
            self._file_newer_since = time.monotonic()
        pl = self._file_placement
        if pl is None or pl.epoch < self.placement.epoch or (pl.epoch == self.placement.epoch and not force):
            return False
        if not force and self.event_source in ("api", "file") \
                and time.monotonic() - self._file_newer_since < FILE_FALLBACK_S:
            return False
        self.placement = pl
        return True

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        from .control import ControlServer
        from .events import follow_events
        self._reload_placement(force=True)
        self.reconcile()
        await self._update_listeners()
        self.control = ControlServer(self)
        await self.control.start(control_path(self.c, self.node))
        self._publish()
        self._tasks.append(asyncio.create_task(self._poll()))
        self._tasks.append(asyncio.create_task(follow_events(self)))

    async def _poll(self) -> None:
        while True:
            try:
                if self._reload_placement() | self._expire_moves():
                    self.reconcile()
                await self._update_listeners()
            except Exception:
                log.exception("witness %s: placement poll", self.node)
            await asyncio.sleep(self.poll_interval)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self.control.stop()
        for srv in list(self.listeners.values()):
            await srv.close()
        self.listeners.clear()
        self.service.close()
        try:
            os.unlink(self.registrations_path)
        except OSError:
            pass

    def status(self) -> dict:
        return {"node": self.node, "pid": os.getpid(), "event_source": self.event_source, "last_seq": self.last_seq,
                "epoch": self.placement.epoch, "listening": sorted(f"{a}:{self.c.port(k)} {k}"
                                                                   for a, k in self.listeners),
                "interfaces": [{"lif": i.name, "address": i.address, "node": i.node, "local": i.local,
                                "state": {1: "available", 0xFF: "unavailable"}.get(i.state, "unknown")}
                               for i in self.service.interfaces],
                "registrations": self.service.list()}
