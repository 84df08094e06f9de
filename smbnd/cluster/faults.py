"""Failure detection (the mediator) and fault injection (issue 4 "Failure detection", "Fault injection").

Mediator (docs/cluster-design.md "Failure detection and the mediator"): nodes of an HA pair watch
each other over UDP heartbeats; when node B reports its partner A not alive the supervisor, as a
third party, checks A itself — process exited, or control-socket ``ping`` unanswered within
2 x interval — and only then fences A (SIGKILL, so a SIGSTOPped node can never resume serving) and
lets B take over. If A answers, the interconnect is partitioned: no takeover, A keeps serving.
This is ONTAP's "mediator" tie-breaker for a cut interconnect (MetroCluster/SnapMirror active sync
ONTAP Mediator: https://docs.netapp.com/us-en/ontap/mediator/), reduced to one host. ``judge`` and
``suspects`` are the pure decision; the supervisor does the I/O.

Faults map to signals and node ops: kill = SIGKILL, hang = SIGSTOP / resume = SIGCONT,
partition = ``heartbeat_fault`` drops, lif-down = ``release_lif`` without moving, storage-* =
``storage_fault`` on every running node, mgmt-down = the control API stops listening.
"""
from __future__ import annotations

import os
import signal

from .ops import OpError

FAULT_KINDS = ("kill", "hang", "resume", "partition", "heal", "lif-down", "lif-up", "storage-fail",
               "storage-slow", "storage-ok", "mgmt-down")


# ----------------------------------------------------------------- mediator (pure)
def suspects(partners: dict[str, str], views: dict[str, dict | None], taken_over: set[str],
             reachable: set[str]) -> list[tuple[str, str]]:
    """(suspect, reporter) pairs: ``reporter`` is reachable (its last status answered), not taken over,
    and its heartbeat view says its partner ``suspect`` is not alive."""
    out = []
    for reporter, view in sorted(views.items()):
        partner = partners.get(reporter)
        if not partner or view is None or reporter not in reachable or reporter in taken_over:
            continue
        if view.get("partner") == partner and view.get("partner_alive") is False:
            out.append((partner, reporter))
    return out


def judge(process_exited: bool, ping_answered: bool) -> str:
    """'down' (fence and take over) or 'partition' (the suspect is alive: do nothing)."""
    if process_exited or not ping_answered:
        return "down"
    return "partition"


class PartitionTracker:
    """Emits ``partition_detected`` once per episode per pair; an episode ends when heartbeats flow."""

    def __init__(self):
        self.active: set[frozenset] = set()

    def detected(self, node: str, partner: str) -> bool:
        key = frozenset((node, partner))
        if key in self.active:
            return False
        self.active.add(key)
        return True

    def healed(self, node: str, partner: str) -> None:
        self.active.discard(frozenset((node, partner)))


# ----------------------------------------------------------------- fault injection
def _drops(direction: str) -> tuple[tuple[bool, bool], tuple[bool, bool]]:
    """(drop_in, drop_out) for node a and for node b. a-to-b cuts a's datagrams towards b."""
    if direction == "both":
        return (True, True), (True, True)
    if direction == "a-to-b":
        return (False, True), (True, False)
    if direction == "b-to-a":
        return (True, False), (False, True)
    raise OpError("direction must be both, a-to-b or b-to-a", 400)


class Faults:
    def __init__(self, ctx):
        self.ctx = ctx

    async def inject(self, kind: str, target: str = "", direction: str = "both", ms: int = 0,
                     seconds: float = 0) -> dict:
        if kind not in FAULT_KINDS:
            raise OpError(f"unknown fault kind {kind!r} (one of {', '.join(FAULT_KINDS)})", 400)
        fn = getattr(self, "_" + kind.replace("-", "_"))
        return await fn(target=target, direction=direction, ms=ms, seconds=seconds) or {}

    # -------- helpers
    def _node(self, target: str) -> str:
        if target not in self.ctx.cfg.nodes:
            raise OpError(f"unknown node {target!r}", 404)
        return target

    def _lif(self, target: str) -> str:
        if target not in self.ctx.cfg.lifs:
            raise OpError(f"unknown LIF {target!r}", 404)
        return target

    def _aggr(self, target: str) -> str:
        if target not in self.ctx.cfg.aggregates:
            raise OpError(f"unknown aggregate {target!r}", 404)
        return target

    def _pid(self, node: str) -> int:
        pid = self.ctx.node_pid(node)
        if not pid:
            raise OpError(f"{node} has no running process", 409)
        return pid

    async def _each_running(self, op: str, **args) -> None:
        for n in self.ctx.cfg.nodes:
            if self.ctx.node_state(n) in ("up", "waiting_giveback"):
                await self.ctx.call(n, op, timeout=10, **args)

    # -------- node processes
    async def _kill(self, target, **_):
        node = self._node(target)
        pid = self._pid(node)
        self.ctx.events.emit("fault", kind="kill", target=node, pid=pid)
        os.kill(pid, signal.SIGKILL)          # our child, by PID

    async def _hang(self, target, **_):
        node = self._node(target)
        pid = self._pid(node)
        self.ctx.events.emit("fault", kind="hang", target=node, pid=pid)
        self.ctx.stopped.add(node)
        os.kill(pid, signal.SIGSTOP)

    async def _resume(self, target, **_):
        node = self._node(target)
        pid = self.ctx.node_pid(node)
        if node in self.ctx.stopped and pid:
            os.kill(pid, signal.SIGCONT)
        self.ctx.stopped.discard(node)
        self.ctx.events.emit("fault_cleared", kind="hang", target=node)

    # -------- interconnect
    def _pair(self, target: str) -> tuple[str, str]:
        a = self._node(target or sorted(self.ctx.cfg.nodes)[0])
        b = self.ctx.cfg.partner(a)
        if not b:
            raise OpError(f"{a} has no HA partner", 409)
        return a, b

    async def _partition(self, target, direction="both", **_):
        a, b = self._pair(target)
        (ai, ao), (bi, bo) = _drops(direction or "both")
        self.ctx.events.emit("fault", kind="partition", target=a, partner=b, direction=direction or "both")
        for node, din, dout in ((a, ai, ao), (b, bi, bo)):
            if self.ctx.node_state(node) in ("up", "waiting_giveback"):
                await self.ctx.call(node, "heartbeat_fault", timeout=10, drop_in=din, drop_out=dout)
        self.ctx.partitioned[frozenset((a, b))] = direction or "both"

    async def _heal(self, target, **_):
        a, b = self._pair(target)
        for node in (a, b):
            if self.ctx.node_state(node) in ("up", "waiting_giveback"):
                await self.ctx.call(node, "heartbeat_fault", timeout=10, drop_in=False, drop_out=False)
        self.ctx.partitioned.pop(frozenset((a, b)), None)
        self.ctx.events.emit("fault_cleared", kind="partition", target=a, partner=b)

    # -------- LIFs
    async def _lif_down(self, target, **_):
        lif = self._lif(target)
        if not self.ctx.lif_up.get(lif, True):
            raise OpError(f"{lif} is already down", 409)
        node = self.ctx.placement.lif_node[lif]
        self.ctx.events.emit("fault", kind="lif-down", target=lif, node=node)
        if self.ctx.node_state(node) in ("up", "waiting_giveback"):
            await self.ctx.call(node, "release_lif", timeout=30, lif=lif)
        self.ctx.lif_up[lif] = False
        self.ctx.events.emit("lif_down", lif=lif, address=self.ctx.cfg.lifs[lif].address)

    async def _lif_up(self, target, **_):
        lif = self._lif(target)
        if self.ctx.lif_up.get(lif, True):
            raise OpError(f"{lif} is not down", 409)
        node = self.ctx.placement.lif_node[lif]
        self.ctx.lif_up[lif] = True
        if self.ctx.node_state(node) in ("up", "waiting_giveback"):
            await self.ctx.call(node, "host_lif", timeout=30, lif=lif)
        self.ctx.events.emit("lif_up", lif=lif, address=self.ctx.cfg.lifs[lif].address)
        self.ctx.events.emit("fault_cleared", kind="lif-down", target=lif)

    # -------- storage
    async def _storage(self, kind, aggr, mode, ms):
        await self._each_running("storage_fault", aggr=aggr, mode=mode, ms=int(ms or 0))
        if mode == "clear":
            self.ctx.storage_faults.pop(aggr, None)
            self.ctx.events.emit("fault_cleared", kind="storage", target=aggr)
        else:
            self.ctx.storage_faults[aggr] = {"mode": mode, "ms": int(ms or 0)}

    async def _storage_fail(self, target, **_):
        aggr = self._aggr(target)
        self.ctx.events.emit("fault", kind="storage-fail", target=aggr, owner=self.ctx.placement.aggr_owner[aggr])
        await self._storage("storage-fail", aggr, "fail", 0)

    async def _storage_slow(self, target, ms=0, **_):
        aggr = self._aggr(target)
        if not ms or int(ms) <= 0:
            raise OpError("storage-slow needs ms > 0", 400)
        self.ctx.events.emit("fault", kind="storage-slow", target=aggr, ms=int(ms),
                             owner=self.ctx.placement.aggr_owner[aggr])
        await self._storage("storage-slow", aggr, "slow", ms)

    async def _storage_ok(self, target, **_):
        aggr = self._aggr(target)
        await self._storage("storage-ok", aggr, "clear", 0)

    # -------- management network
    async def _mgmt_down(self, seconds=0, **_):
        s = float(seconds or 0)
        if s <= 0 or s > 3600:
            raise OpError("mgmt-down needs 0 < seconds <= 3600", 400)
        self.ctx.events.emit("fault", kind="mgmt-down", target="control", seconds=s)
        self.ctx.mgmt_down(s)       # the API answers this request, then stops listening for s seconds
        return {"seconds": s}
