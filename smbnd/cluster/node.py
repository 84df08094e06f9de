"""A cluster node process (docs/cluster-design.md, "Processes" and "Node control protocol").

    python -m smbnd.cluster.node --config FILE --node NAME [--waiting-giveback] [--log-level INFO]

One SMB Server over every volume of the SVM (the backing directories are shared), listening on the
data LIFs this node hosts (the Placement in <state_dir>/placement.json, else the initial one; none
with --waiting-giveback). Handle stores are per (volume, LIF) in the aggregate's state directory,
so "state moves with the LIF": ``host_lif`` loads a LIF's stores, then listens; ``release_lif``
stops listening, closes the LIF's connections and drops its opens from memory, keeping the rows.
Control: JSON lines on the Unix socket <state_dir>/nodes/<node>.sock. Heartbeats: UDP to the HA
partner (smbnd.cluster.heartbeat). Prints ``smbnd node NAME ready ...`` once serving.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from ..config import ConfigError
from .model import ClusterConfig, Placement, load_cluster, node_server_config, socket_path

log = logging.getLogger("smbnd.cluster.node")


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def server_config(c: ClusterConfig, node: str, placement: Placement, hosted: list[str], port: int):
    """The node's ServerConfig: every volume (state_dir = its aggregate's), listening on `hosted`."""
    cfg = node_server_config(c, node, placement, port=port)
    cfg.listen = [(c.lifs[lif].address, port) for lif in hosted]
    cfg.clustered = True
    cfg.scale_out = c.svm.scale_out
    cfg.asymmetric = c.svm.asymmetric
    cfg.lifs = {d.address: d.name for d in c.lifs.values()}
    for sc in cfg.shares:
        sc.state_dir = c.volume_state_dir(sc.name, placement)
        os.makedirs(sc.path, exist_ok=True)
    os.makedirs(cfg.state_dir, exist_ok=True)
    return cfg.finish()


class Node:
    def __init__(self, cluster: ClusterConfig, name: str, waiting_giveback: bool = False):
        if name not in cluster.nodes:
            raise ConfigError("--node", f"unknown node {name!r} (known: {', '.join(sorted(cluster.nodes))})")
        self.cluster, self.name = cluster, name
        self.placement = (Placement.load(os.path.join(cluster.state_dir, "placement.json"))
                          or cluster.initial_placement())
        self.waiting_giveback = waiting_giveback
        self.port = cluster.port("smb")
        self.sock_path = socket_path(cluster.state_dir, name)
        self.started = time.time()
        self.frozen: set[str] = set()
        self.faults: dict[str, dict] = {}
        self.stop_event: asyncio.Event | None = None
        self.server = self.listeners = self.heartbeat = self._ctl = None
        from .lif import backend_for
        self.lif_backend = backend_for(cluster.lif_backend)

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        from ..netio import Listeners
        from ..server import Server
        c = self.cluster
        hosted = [] if self.waiting_giveback else self.placement.lifs_on(self.name)
        self.server = Server(server_config(c, self.name, self.placement, hosted, self.port))
        self.listeners = Listeners(self.server)
        self.stop_event = asyncio.Event()
        for lif in hosted:
            self.lif_backend.plumb(c.lifs[lif])
            await self.listeners.start(c.lifs[lif].address, self.port)
        await self._start_heartbeat()
        os.makedirs(os.path.dirname(self.sock_path), exist_ok=True)
        try:
            os.unlink(self.sock_path)       # a stale socket of a killed predecessor
        except FileNotFoundError:
            pass
        self._ctl = await asyncio.start_unix_server(self._client, self.sock_path, limit=1 << 20)
        os.chmod(self.sock_path, 0o600)

    async def _start_heartbeat(self) -> None:
        from .heartbeat import Heartbeat
        c, me = self.cluster, self.cluster.nodes[self.name]
        partner = me.partner or None
        paddr = _hostport(c.nodes[partner].interconnect) if partner else None
        self.heartbeat = Heartbeat(self.name, _hostport(me.interconnect), partner, paddr,
                                   c.heartbeat_interval_ms, c.heartbeat_misses, epoch=int(self.started * 1000))
        try:
            await self.heartbeat.start()
        except OSError as e:
            log.error("heartbeat on %s: %s (node serves without it)", me.interconnect, e)
            self.heartbeat = None

    async def stop(self, graceful: bool = True) -> None:
        if self._ctl is not None:
            self._ctl.close()
        if graceful:
            for lif in self.hosted():
                await self._release(lif)
        await self.listeners.close_all()
        for conn in list(self.server.connections):
            conn.close()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        try:
            os.unlink(self.sock_path)
        except OSError:
            pass

    def hosted(self) -> list[str]:
        by_addr = {d.address: n for n, d in self.cluster.lifs.items()}
        return sorted(by_addr[a] for a in self.listeners.addresses() if a in by_addr)

    # ------------------------------------------------------------------ control socket
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(100_000):          # one connection, many requests (bounded)
                line = await reader.readline()
                if not line:
                    break
                rid = None
                try:
                    req = json.loads(line)
                    rid = req.get("id")
                    op = req.pop("op")
                    req.pop("id", None)
                    fn = getattr(self, f"op_{op}", None)
                    if fn is None:
                        raise ValueError(f"unknown op {op!r}")
                    resp = {"id": rid, "ok": True, **(await fn(**req))}
                except Exception as e:          # the error goes back to the caller, the node goes on
                    if not isinstance(e, (ValueError, KeyError, TypeError)):
                        log.exception("node op failed")
                    resp = {"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"}
                writer.write((json.dumps(resp) + "\n").encode())
                await writer.drain()
                if resp.get("ok") and resp.get("_exit") is not None:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _lif(self, lif: str):
        d = self.cluster.lifs.get(lif)
        if d is None:
            raise KeyError(f"unknown LIF {lif!r}")
        return d

    def _shares_of(self, aggr: str) -> list[str]:
        if aggr not in self.cluster.aggregates:
            raise KeyError(f"unknown aggregate {aggr!r}")
        return sorted(v for v, a in self.placement.vol_aggr.items() if a == aggr)

    async def op_ping(self) -> dict:
        return {"node": self.name, "pid": os.getpid(), "epoch": self.placement.epoch}

    async def op_status(self) -> dict:
        srv = self.server
        return {"node": self.name, "pid": os.getpid(), "epoch": self.placement.epoch, "lifs": self.hosted(),
                "sessions": len(srv.sessions), "connections": len(srv.connections),
                "opens": srv.open_counts(), "disconnected": srv.disconnected(),
                "heartbeat": self.heartbeat.view() if self.heartbeat is not None else None,
                "storage_faults": dict(self.faults), "frozen": sorted(self.frozen),
                "waiting_giveback": self.waiting_giveback and not self.hosted()}

    async def op_placement(self, placement: dict) -> dict:
        """Adopt the supervisor's placement: volume paths and store directories follow a vol move."""
        from ..vfs import ShareFS
        p = Placement(**{k: placement[k] for k in ("lif_node", "aggr_owner", "vol_aggr", "down_nodes", "epoch")
                         if k in placement})
        moved = []
        for v in self.cluster.volumes:
            share = self.server.shares.get(v.lower())
            if share is None or v not in p.vol_aggr:
                continue
            path = self.cluster.volume_path(v, p)
            if path != share.config.path:
                os.makedirs(path, exist_ok=True)
                share.fs = ShareFS(path, read_only=share.config.read_only)
                share.config.path = path
                moved.append(v)
            share.config.state_dir = self.cluster.volume_state_dir(v, p)
        self.placement = p
        return {"epoch": p.epoch, "moved": moved}

    async def op_host_lif(self, lif: str) -> dict:
        d = self._lif(lif)
        t0 = time.perf_counter()
        loaded = await self.server.host_lif_async(lif)    # stores first, then the address answers
        self.lif_backend.plumb(d)
        await self.listeners.start(d.address, self.port)
        self.waiting_giveback = False
        ms = round((time.perf_counter() - t0) * 1000, 1)
        log.warning("hosting LIF %s (%s): %d opens loaded in %.1f ms", lif, d.address, loaded, ms)
        return {"loaded": loaded, "ms": ms}

    async def _release(self, lif: str) -> int:
        d = self._lif(lif)
        if self.lif_backend.name == "netns":
            # a real IP move: the address leaves this node first and its connections vanish silently
            # (netio), so a client's next segment meets the new owner's RST and it reconnects
            try:
                self.lif_backend.unplumb(d)
            except Exception as e:  # noqa: BLE001
                log.warning("unplumbing %s: %s", d.address, e)
            for c in self.server.connections:
                if c.lif == lif:
                    c.vanish = True
        self.listeners.stop(d.address)
        dropped = await self.server.release_lif_async(lif)   # closes its connections, keeps the rows
        self.listeners.close_connections(d.address)  # anything that raced in
        try:
            self.lif_backend.unplumb(d)
        except Exception as e:  # noqa: BLE001 - the address may already be gone
            log.warning("unplumbing %s: %s", d.address, e)
        return dropped

    async def op_release_lif(self, lif: str) -> dict:
        t0 = time.perf_counter()
        dropped = await self._release(lif)
        return {"dropped": dropped, "ms": round((time.perf_counter() - t0) * 1000, 1)}

    async def op_freeze(self, aggr: str, max_s: float = 30.0) -> dict:
        shares = self._shares_of(aggr)
        self.server.gates.freeze(shares, max_s=float(max_s))
        self.frozen.add(aggr)
        return {"shares": shares}

    async def op_thaw(self, aggr: str) -> dict:
        shares = self._shares_of(aggr)
        self.server.gates.thaw(shares)
        self.frozen.discard(aggr)
        return {"shares": shares}

    async def op_storage_fault(self, aggr: str, mode: str, ms: int = 0) -> dict:
        shares = self._shares_of(aggr)
        self.server.gates.fault(shares, mode, int(ms))
        if mode == "clear":
            self.faults.pop(aggr, None)
        else:
            self.faults[aggr] = {"mode": mode, "ms": int(ms)}
        return {"shares": shares}

    async def op_heartbeat_fault(self, drop_in: bool = False, drop_out: bool = False) -> dict:
        if self.heartbeat is None:
            raise ValueError("no heartbeat running")
        self.heartbeat.set_fault(bool(drop_in), bool(drop_out))
        return {"heartbeat": self.heartbeat.view()}

    async def op_flush(self) -> dict:
        """fsync the stores (WAL checkpoint) and the data of every open file."""
        n = 0
        for s in list(self.server.durable.stores.by_share.values()):
            s.db.execute("PRAGMA wal_checkpoint(FULL)")
            n += 1
        files = 0
        for o in list(self.server.opens.values()):
            if o.fd is not None:
                try:
                    os.fsync(o.fd)
                    files += 1
                except OSError:
                    pass
        return {"stores": n, "files": files}

    async def op_shutdown(self, graceful: bool = True) -> dict:
        loop = asyncio.get_running_loop()
        if graceful:
            loop.call_soon(self.stop_event.set)
        else:
            loop.call_later(0.05, os._exit, 0)        # after the response is written
        return {"_exit": 0}


async def run(cluster: ClusterConfig, name: str, waiting_giveback: bool) -> int:
    node = Node(cluster, name, waiting_giveback)
    try:
        await node.start()
    except OSError as e:
        print(f"smbnd node {name}: cannot start: {e}", file=sys.stderr, flush=True)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop_event.set)
    lifs = ",".join(f"{lif}={cluster.lifs[lif].address}" for lif in node.hosted()) or "-"
    print(f"smbnd node {name} ready lifs {lifs} port {node.port} control {node.sock_path} pid {os.getpid()}",
          flush=True)
    await node.stop_event.wait()
    await node.stop(graceful=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smbnd.cluster.node", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--waiting-giveback", action="store_true", help="host no LIF (restarted after a takeover)")
    ap.add_argument("--log-level", default=os.environ.get("SMBND_LOG_LEVEL", "WARNING"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=getattr(logging, a.log_level.upper(), logging.WARNING),
                        format=f"%(asctime)s {a.node} %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cluster = load_cluster(a.config)
        return asyncio.run(run(cluster, a.node, a.waiting_giveback))
    except ConfigError as e:
        print(f"smbnd node: config error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
