"""Nondisruptive operations (docs/cluster-design.md, issue 4 "Operations").

Each operation validates against the supervisor's truth (``Placement`` + node states), emits its
event trail, drives the node processes over their control sockets and commits the new placement
(``placement.json``, epoch + 1, pushed to every running node). The model is ONTAP's: storage
failover (SFO) takeover/giveback moves a node's aggregates and data LIFs to its HA partner and
back (ONTAP 9 "HA pair management": https://docs.netapp.com/us-en/ontap/high-availability/);
``network interface migrate/revert`` moves one LIF; ``storage aggregate relocation`` (ARL) moves an
aggregate between partners; ``volume move`` moves a volume between aggregates with clients' opens
preserved. The pure planners (``plan_*``) compute what moves and are unit-tested without nodes.

``ctx`` is the supervisor (see supervisor.py); the methods used: ``cfg``, ``placement``,
``events``, ``lif_up``, ``call(node, op, timeout, **args)``, ``node_state(node)``,
``commit_placement()``, ``push_placement()``, ``restart_node(node, waiting_giveback)``,
``stop_node(node, graceful)``.
"""
from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import time

from .model import ClusterConfig, Placement

OP_TIMEOUT = 30.0          # s: one node op (host_lif loads stores: 100k opens take ~1 s)


class OpError(Exception):
    """An operation refused or failed; ``code`` is the HTTP status the control API answers with."""

    def __init__(self, msg: str, code: int = 409):
        super().__init__(msg)
        self.code = code


# ------------------------------------------------------------------ pure planners
def _need_node(cfg: ClusterConfig, node: str) -> None:
    if node not in cfg.nodes:
        raise OpError(f"unknown node {node!r}", 404)


def plan_takeover(cfg: ClusterConfig, pl: Placement, node: str) -> tuple[str, list[str], list[str]]:
    """(partner, LIFs to move, aggregates to move) for a takeover of ``node`` by its partner."""
    _need_node(cfg, node)
    partner = cfg.partner(node)
    if not partner:
        raise OpError(f"{node} has no HA partner", 409)
    if node in pl.down_nodes:
        raise OpError(f"{node} is already taken over", 409)
    if partner in pl.down_nodes:
        raise OpError(f"partner {partner} is itself taken over", 409)
    return partner, pl.lifs_on(node), pl.aggrs_of(node)


def plan_giveback(cfg: ClusterConfig, pl: Placement, node: str) -> tuple[str, list[str], list[str]]:
    """(partner giving back, LIFs homed on ``node`` now on the partner, its home aggregates there)."""
    _need_node(cfg, node)
    partner = cfg.partner(node)
    if node not in pl.down_nodes:
        raise OpError(f"{node} is not taken over", 409)
    lifs = sorted(n for n, d in cfg.lifs.items() if d.home == node and pl.lif_node.get(n) == partner)
    aggrs = sorted(n for n, d in cfg.aggregates.items() if d.home == node and pl.aggr_owner.get(n) == partner)
    return partner, lifs, aggrs


def plan_lif_migrate(cfg: ClusterConfig, pl: Placement, lif: str, node: str) -> str:
    """The LIF's current node (the source)."""
    if lif not in cfg.lifs:
        raise OpError(f"unknown LIF {lif!r}", 404)
    _need_node(cfg, node)
    if node in pl.down_nodes:
        raise OpError(f"{node} is taken over (waiting for giveback)", 409)
    cur = pl.lif_node[lif]
    if cur == node:
        raise OpError(f"{lif} is already on {node}", 409)
    return cur


def plan_aggr_relocate(cfg: ClusterConfig, pl: Placement, aggr: str, node: str) -> str:
    """The aggregate's current owner. ARL moves an aggregate between HA partners only."""
    if aggr not in cfg.aggregates:
        raise OpError(f"unknown aggregate {aggr!r}", 404)
    _need_node(cfg, node)
    cur = pl.aggr_owner[aggr]
    if cur == node:
        raise OpError(f"{aggr} is already owned by {node}", 409)
    if node != cfg.partner(cur):
        raise OpError(f"{node} is not the HA partner of {cur} (aggregate relocation is within a pair)", 400)
    if node in pl.down_nodes:
        raise OpError(f"{node} is taken over (waiting for giveback)", 409)
    return cur


def plan_vol_move(cfg: ClusterConfig, pl: Placement, vol: str, aggr: str) -> str:
    """The volume's current aggregate."""
    if vol not in cfg.volumes:
        raise OpError(f"unknown volume {vol!r}", 404)
    if aggr not in cfg.aggregates:
        raise OpError(f"unknown aggregate {aggr!r}", 404)
    cur = pl.vol_aggr[vol]
    if cur == aggr:
        raise OpError(f"{vol} is already on {aggr}", 409)
    return cur


def volume_files(cfg: ClusterConfig, vol: str, aggr: str) -> tuple[str, list[str]]:
    """(backing directory, handle-store files incl. -wal/-shm) of ``vol`` on ``aggr``."""
    a = cfg.aggregates[aggr]
    stores = sorted(glob.glob(os.path.join(glob.escape(a.state_dir), glob.escape(vol) + "@*.handles.sqlite*")))
    return os.path.join(a.path, vol), stores


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_fsync(src: str, dst: str) -> None:
    shutil.copy2(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


def move_volume_files(cfg: ClusterConfig, vol: str, src_aggr: str, dst_aggr: str) -> dict:
    """Move the backing directory and the stores. Same filesystem: os.rename (open fds stay valid:
    rename(2) keeps the inode). Otherwise copy + fsync, then remove the source."""
    src_dir, stores = volume_files(cfg, vol, src_aggr)
    dst = cfg.aggregates[dst_aggr]
    dst_dir = os.path.join(dst.path, vol)
    os.makedirs(dst.path, exist_ok=True)
    os.makedirs(dst.state_dir, exist_ok=True)
    if os.path.lexists(dst_dir):
        if os.path.isdir(dst_dir) and not os.listdir(dst_dir):
            os.rmdir(dst_dir)
        else:
            raise OpError(f"{dst_dir} exists and is not empty", 409)
    same_fs = os.stat(os.path.dirname(src_dir)).st_dev == os.stat(dst.path).st_dev
    if not os.path.isdir(src_dir):
        os.makedirs(src_dir, exist_ok=True)
    if same_fs:
        os.rename(src_dir, dst_dir)
        for s in stores:
            os.rename(s, os.path.join(dst.state_dir, os.path.basename(s)))
    else:
        shutil.copytree(src_dir, dst_dir, symlinks=True, copy_function=_copy_fsync)
        for s in stores:
            _copy_fsync(s, os.path.join(dst.state_dir, os.path.basename(s)))
        shutil.rmtree(src_dir)
        for s in stores:
            os.unlink(s)
    for d in (dst.path, dst.state_dir, os.path.dirname(src_dir)):
        _fsync_dir(d)
    for s in stores:
        if s.endswith(".handles.sqlite"):
            _retarget_store(os.path.join(dst.state_dir, os.path.basename(s)), dst_dir)
    return {"same_filesystem": same_fs, "stores": sum(s.endswith(".handles.sqlite") for s in stores)}


def _retarget_store(path: str, volume: str) -> None:
    """The store records the volume it belongs to (handlestore.py meta 'volume'; castore refuses to
    load a store whose volume is another path): point it at the new backing directory."""
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.execute("UPDATE meta SET value = ? WHERE key = 'volume'", (volume,))
    finally:
        db.close()


# --------------------------------------------------------------------- executors
class Operations:
    def __init__(self, ctx):
        self.ctx = ctx

    def _ms(self, t0: float) -> int:
        return int((time.monotonic() - t0) * 1000)

    async def _call(self, node: str, op: str, **args) -> dict:
        return await self.ctx.call(node, op, timeout=OP_TIMEOUT, **args)

    def _running(self, node: str) -> bool:
        return self.ctx.node_state(node) in ("up", "waiting_giveback")

    def _need_up(self, node: str) -> None:
        state = self.ctx.node_state(node)
        if state != "up":
            raise OpError(f"{node} is {state}", 409)

    async def _on_running(self, op: str, **args) -> None:
        for n in self.ctx.cfg.nodes:
            if self._running(n):
                await self._call(n, op, **args)

    async def _move_lifs(self, lifs: list[str], src: str, dst: str, release: bool) -> dict:
        """Release each LIF on src (unless src is dead), commit, host each on dst. Opens loaded."""
        ctx, pl = self.ctx, self.ctx.placement
        started = {}
        for lif in lifs:
            ctx.events.emit("lif_moving", lif=lif, address=ctx.cfg.lifs[lif].address, from_node=src, to_node=dst)
            started[lif] = time.monotonic()
            if release and ctx.lif_up.get(lif, True):
                await self._call(src, "release_lif", lif=lif)
            elif getattr(ctx, "fabric", None) is not None:     # netns: the dead node's kernel keeps it
                ctx.fabric.release_address(src, ctx.cfg.lifs[lif])
            pl.lif_node[lif] = dst
        return started

    async def _host_lifs(self, started: dict, src: str, dst: str) -> int:
        ctx = self.ctx
        loaded = 0
        for lif, t0 in started.items():
            if ctx.lif_up.get(lif, True):
                r = await self._call(dst, "host_lif", lif=lif)
                loaded += int(r.get("loaded", 0))
            ctx.events.emit("lif_moved", lif=lif, address=ctx.cfg.lifs[lif].address, from_node=src, to_node=dst,
                            ms=self._ms(t0))
        return loaded

    async def takeover(self, node: str, planned: bool = True) -> dict:
        ctx = self.ctx
        partner, lifs, aggrs = plan_takeover(ctx.cfg, ctx.placement, node)
        self._need_up(partner)
        if planned:
            self._need_up(node)
        t0 = time.monotonic()
        ctx.events.emit("takeover_start", node=node, by=partner, planned=planned)
        if planned:
            await self._call(node, "flush")
        started = await self._move_lifs(lifs, node, partner, release=planned)
        for a in aggrs:
            ctx.placement.aggr_owner[a] = partner
        if node not in ctx.placement.down_nodes:
            ctx.placement.down_nodes.append(node)
        ctx.commit_placement()
        await ctx.push_placement()
        loaded = await self._host_lifs(started, node, partner)
        ms = self._ms(t0)
        ctx.events.emit("takeover_done", node=node, by=partner, planned=planned, ms=ms, opens_loaded=loaded)
        ctx.metrics.takeover(planned, ms / 1000)
        return {"ms": ms, "opens_loaded": loaded}

    async def giveback(self, node: str) -> dict:
        ctx = self.ctx
        partner, lifs, aggrs = plan_giveback(ctx.cfg, ctx.placement, node)
        if ctx.node_state(node) != "waiting_giveback":
            raise OpError(f"{node} is {ctx.node_state(node)}, not waiting for giveback", 409)
        self._need_up(partner)
        t0 = time.monotonic()
        ctx.events.emit("giveback_start", node=node, **{"from": partner})
        await self._call(partner, "flush")
        started = await self._move_lifs(lifs, partner, node, release=True)
        for a in aggrs:
            ctx.placement.aggr_owner[a] = node
        ctx.placement.down_nodes.remove(node)
        ctx.commit_placement()
        await ctx.push_placement()
        await self._host_lifs(started, partner, node)
        ms = self._ms(t0)
        ctx.events.emit("giveback_done", node=node, ms=ms, **{"from": partner})
        ctx.metrics.operation("giveback", ms / 1000)
        return {"ms": ms}

    async def lif_migrate(self, lif: str, node: str) -> dict:
        ctx = self.ctx
        src = plan_lif_migrate(ctx.cfg, ctx.placement, lif, node)
        self._need_up(node)
        t0 = time.monotonic()
        started = await self._move_lifs([lif], src, node, release=self._running(src))
        ctx.commit_placement()
        await ctx.push_placement()
        await self._host_lifs(started, src, node)
        ms = self._ms(t0)
        ctx.metrics.operation("lif_migrate", ms / 1000)
        return {"ms": ms}

    async def lif_revert(self, lif: str) -> dict:
        if lif not in self.ctx.cfg.lifs:
            raise OpError(f"unknown LIF {lif!r}", 404)
        return await self.lif_migrate(lif, self.ctx.cfg.lifs[lif].home)

    async def aggr_relocate(self, aggr: str, node: str) -> dict:
        ctx = self.ctx
        src = plan_aggr_relocate(ctx.cfg, ctx.placement, aggr, node)
        self._need_up(node)
        t0 = time.monotonic()
        ctx.events.emit("aggr_relocating", aggr=aggr, from_node=src, to_node=node)
        await self._on_running("freeze", aggr=aggr)
        try:
            if self._running(src):
                await self._call(src, "flush")
            ctx.placement.aggr_owner[aggr] = node
            ctx.commit_placement()
            await ctx.push_placement()
        finally:
            await self._on_running("thaw", aggr=aggr)
        ms = self._ms(t0)
        ctx.events.emit("aggr_relocated", aggr=aggr, from_node=src, to_node=node, ms=ms)
        ctx.metrics.operation("aggr_relocate", ms / 1000)
        return {"ms": ms}

    async def vol_move(self, vol: str, aggr: str) -> dict:
        ctx = self.ctx
        src = plan_vol_move(ctx.cfg, ctx.placement, vol, aggr)
        t0 = time.monotonic()
        ctx.events.emit("vol_moving", vol=vol, from_aggr=src, to_aggr=aggr)
        frozen = [src, aggr]
        for a in frozen:
            await self._on_running("freeze", aggr=a)
        try:
            await self._on_running("flush")
            info = move_volume_files(ctx.cfg, vol, src, aggr)
            ctx.placement.vol_aggr[vol] = aggr
            ctx.commit_placement()
            await ctx.push_placement()
        finally:
            for a in frozen:
                await self._on_running("thaw", aggr=a)
        ms = self._ms(t0)
        ctx.events.emit("vol_moved", vol=vol, from_aggr=src, to_aggr=aggr, ms=ms)
        ctx.metrics.operation("vol_move", ms / 1000)
        return {"ms": ms, **info}

    async def upgrade(self, node: str) -> dict:
        """Rolling upgrade of one node: planned takeover, restart its process, giveback."""
        ctx = self.ctx
        _need_node(ctx.cfg, node)
        self._need_up(node)
        t0 = time.monotonic()
        tk = await self.takeover(node, planned=True)
        await ctx.stop_node(node, graceful=True)
        await ctx.restart_node(node, waiting_giveback=True)
        gb = await self.giveback(node)
        ms = self._ms(t0)
        ctx.metrics.operation("upgrade", ms / 1000)
        return {"ms": ms, "takeover_ms": tk["ms"], "giveback_ms": gb["ms"]}
