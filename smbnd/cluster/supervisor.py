"""The cluster supervisor (docs/cluster-design.md "Processes"): one asyncio process that starts a node
process per node (and a witness process per node when the ``witness`` package provides one), keeps
the Placement in ``<state_dir>/placement.json``, polls the nodes, runs the mediator (faults.py),
performs operations (ops.py) and faults, and serves the control API (api.py), the event log
(events.py) and Prometheus metrics (metrics.py).

    python -m smbnd.cluster.supervisor --config FILE        (what `smbnd cluster up` runs)
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import secrets
import signal
import sys
import time

from ..config import ConfigError
from .api import ControlApi
from .events import EventLog
from .faults import Faults, PartitionTracker, judge, suspects
from .metrics import Metrics
from .model import ClusterConfig, Placement, load_cluster, socket_path
from .nodectl import NodeClient, NodeError
from .ops import OpError, Operations

log = logging.getLogger("smbnd.cluster.supervisor")
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
HUNG_AFTER = 2.0          # s without an answered status poll -> shown as "hung"


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class NodeProc:
    def __init__(self, name: str, sock: str, log_path: str):
        self.name, self.client, self.log_path = name, NodeClient(sock), log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False
        self.expected_exit = False
        self.status: dict | None = None
        self.last_ok = 0.0
        self.tasks: list[asyncio.Task] = []

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.running else 0


def load_placement(cfg: ClusterConfig, path: str) -> Placement:
    """The saved placement reconciled with the config (names added or removed since), else the initial."""
    init = cfg.initial_placement()
    pl = Placement.load(path)
    if pl is None:
        return init
    pl.lif_node = {k: (pl.lif_node[k] if pl.lif_node.get(k) in cfg.nodes else v) for k, v in init.lif_node.items()}
    pl.aggr_owner = {k: (pl.aggr_owner[k] if pl.aggr_owner.get(k) in cfg.nodes else v)
                     for k, v in init.aggr_owner.items()}
    pl.vol_aggr = {k: (pl.vol_aggr[k] if pl.vol_aggr.get(k) in cfg.aggregates else v)
                   for k, v in init.vol_aggr.items()}
    pl.down_nodes = [n for n in pl.down_nodes if n in cfg.nodes]
    return pl


class Supervisor:
    def __init__(self, cfg: ClusterConfig):
        self.cfg = cfg
        self.sd = cfg.state_dir
        self.placement_path = os.path.join(self.sd, "placement.json")
        self.placement = load_placement(cfg, self.placement_path)
        self.token = ""
        self.events: EventLog | None = None
        self.metrics = Metrics()
        self.ops = Operations(self)
        self.faults = Faults(self)
        self.lif_up = {lif: True for lif in cfg.lifs}
        self.storage_faults: dict[str, dict] = {}
        self.stopped: set[str] = set()              # SIGSTOPped by the hang fault
        self.partitioned: dict[frozenset, str] = {}
        self.partitions = PartitionTracker()
        self.nodes = {n: NodeProc(n, socket_path(self.sd, n),
                                  os.path.join(self.sd, "nodes", f"{n}.log")) for n in cfg.nodes}
        self.witness: dict[str, asyncio.subprocess.Process] = {}
        self._op_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._handling: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self.api: ControlApi | None = None
        self.fabric = None
        self.shutting_down = False

    # ------------------------------------------------------------------ state
    def node_state(self, name: str) -> str:
        np = self.nodes[name]
        if not np.running or not np.ready:
            return "down"
        if name in self.stopped or time.monotonic() - np.last_ok > HUNG_AFTER:
            return "hung"
        if name in self.placement.down_nodes:
            return "waiting_giveback"
        return "up"

    def node_pid(self, name: str) -> int:
        return self.nodes[name].pid

    async def call(self, node: str, op: str, timeout: float = 10, **args) -> dict:
        np = self.nodes[node]
        if not np.running:
            raise OpError(f"{node} is not running", 409)
        try:
            return await np.client.call(op, timeout=timeout, **args)
        except NodeError as e:
            raise OpError(f"{node}: {e}", 409) from None
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            raise OpError(f"{node}: {op}: {type(e).__name__}: {e}", 409) from None

    def commit_placement(self) -> None:
        self.placement.epoch += 1
        self.placement.save(self.placement_path)
        self.events.emit("placement", placement=json.loads(self.placement.to_json()))
        self._refresh_metrics()

    async def push_placement(self) -> None:
        doc = json.loads(self.placement.to_json())
        names = [n for n in self.cfg.nodes if self.nodes[n].running and self.nodes[n].ready]
        res = await asyncio.gather(*(self.call(n, "placement", timeout=5, placement=doc) for n in names),
                                   return_exceptions=True)
        for n, r in zip(names, res):
            if isinstance(r, Exception):
                log.warning("placement push to %s: %s", n, r)

    def status(self) -> dict:
        c, pl = self.cfg, self.placement
        disconnected, sessions, opens, hb = [], {}, {}, {}
        for n, np in self.nodes.items():
            st = np.status if np.running else None
            sessions[n] = (st or {}).get("sessions", 0)
            opens[n] = (st or {}).get("opens") or {"persistent": 0, "durable": 0, "plain": 0}
            hb[n] = (st or {}).get("heartbeat")
            disconnected += [{"node": n, **d} for d in (st or {}).get("disconnected") or []]
        return {
            "cluster": c.name, "svm": c.svm.name, "epoch": pl.epoch,
            "nodes": [{"name": n, "partner": d.partner, "state": self.node_state(n), "pid": self.nodes[n].pid}
                      for n, d in c.nodes.items()],
            "lifs": [{"name": n, "address": d.address, "home": d.home, "current": pl.lif_node[n],
                      "up": self.lif_up[n] and self.node_state(pl.lif_node[n]) in ("up", "waiting_giveback")}
                     for n, d in c.lifs.items()],
            "aggregates": [{"name": n, "home": d.home, "owner": pl.aggr_owner[n], "path": d.path,
                            "fault": (self.storage_faults.get(n) or {}).get("mode")}
                           for n, d in c.aggregates.items()],
            "volumes": [{"name": n, "aggregate": pl.vol_aggr[n], "ca": d.ca} for n, d in c.volumes.items()],
            "sessions": sessions, "opens": opens, "disconnected": disconnected,
            "witness": self.witness_registrations(), "heartbeat": hb,
            "partitioned": [{"nodes": sorted(k), "direction": v} for k, v in self.partitioned.items()],
            "smb_port": c.port("smb"),
        }

    def witness_registrations(self) -> list:
        """Hook for the witness processes: ``<state_dir>/witness/<node>.json`` holding a JSON list."""
        out = []
        d = os.path.join(self.sd, "witness")
        for n in self.cfg.nodes:
            try:
                with open(os.path.join(d, f"{n}.json")) as f:
                    regs = json.load(f)
            except (OSError, ValueError):
                continue
            out += [{"node": n, **r} if isinstance(r, dict) else {"node": n, "registration": r}
                    for r in (regs if isinstance(regs, list) else regs.get("registrations", []))]
        return out

    def _refresh_metrics(self) -> None:
        self.metrics.refresh(self.cfg, self.placement, {n: self.node_state(n) for n in self.nodes},
                             {n: np.status for n, np in self.nodes.items()}, self.lif_up)

    # ------------------------------------------------------------------ API entry points
    async def run_op(self, name: str, **args) -> dict:
        async with self._op_lock:
            seq0, t0 = self.events.seq, time.monotonic()
            if name == "fault":
                res = await self.faults.inject(**args)
            else:
                res = await getattr(self.ops, name)(**args)
            ms = int((time.monotonic() - t0) * 1000)
            return {**res, "ok": True, "ms": ms, "events": list(range(seq0 + 1, self.events.seq + 1))}

    def request_shutdown(self) -> None:
        asyncio.get_running_loop().call_later(0.05, self._stop.set)

    def mgmt_down(self, seconds: float) -> None:
        self.api.pause(seconds)

    # ------------------------------------------------------------------ node processes
    def _node_cmd(self, name: str, waiting_giveback: bool) -> list[str]:
        cmd = [sys.executable, "-m", "smbnd.cluster.node", "--config", self.cfg.source, "--node", name]
        if waiting_giveback:
            cmd.append("--waiting-giveback")
        if self.fabric is not None:
            cmd = self.fabric.exec_prefix(name) + cmd
        return cmd

    async def start_node(self, name: str, waiting_giveback: bool = False) -> None:
        np = self.nodes[name]
        np.ready, np.expected_exit, np.status = False, False, None
        logf = open(np.log_path, "ab")
        try:
            np.proc = await asyncio.create_subprocess_exec(
                *self._node_cmd(name, waiting_giveback), stdout=asyncio.subprocess.PIPE, stderr=logf,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        finally:
            logf.close()
        proc = np.proc
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            self._log_line(np, line)
            if not line or b" ready " in line:
                break
        if b" ready " not in line:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise OpError(f"{name} did not become ready (see {np.log_path})", 409)
        np.tasks = [asyncio.create_task(self._drain(np, proc)), asyncio.create_task(self._watch(np, proc))]
        np.last_ok = time.monotonic()
        np.ready = True
        await self._reconcile(name)
        self.events.emit("node_up", node=name, pid=proc.pid)

    def _log_line(self, np: NodeProc, line: bytes) -> None:
        if line:
            with open(np.log_path, "ab") as f:
                f.write(line)

    async def _drain(self, np: NodeProc, proc) -> None:
        for _ in range(10**9):
            line = await proc.stdout.readline()
            if not line:
                return
            self._log_line(np, line)

    async def _watch(self, np: NodeProc, proc) -> None:
        rc = await proc.wait()
        if np.proc is not proc or np.expected_exit:
            return
        np.ready = False
        reason = "killed" if rc == -signal.SIGKILL else "exited"
        self.events.emit("node_down", node=np.name, pid=proc.pid, reason=reason, returncode=rc)
        self._refresh_metrics()

    async def _reconcile(self, name: str) -> None:
        """Bring a freshly started node in line: placement, the LIFs it must (not) host, faults."""
        await self.push_placement()
        st = await self.call(name, "status", timeout=10)
        self.nodes[name].status = st
        want = set() if name in self.placement.down_nodes else {
            lif for lif in self.placement.lifs_on(name) if self.lif_up[lif]}
        have = set(st.get("lifs") or [])
        for lif in sorted(have - want):
            await self.call(name, "release_lif", timeout=30, lif=lif)
        for lif in sorted(want - have):
            await self.call(name, "host_lif", timeout=30, lif=lif)
        for aggr, f in self.storage_faults.items():
            await self.call(name, "storage_fault", timeout=10, aggr=aggr, mode=f["mode"], ms=f["ms"])
        for pair, direction in self.partitioned.items():
            if name in pair:
                a = sorted(pair)[0]
                await self.faults.inject("partition", target=a, direction=direction)

    async def stop_node(self, name: str, graceful: bool = True) -> None:
        np = self.nodes[name]
        if not np.running:
            return
        np.expected_exit = True
        proc = np.proc
        if name in self.stopped:
            os.kill(proc.pid, signal.SIGCONT)
            self.stopped.discard(name)
        try:
            await self.call(name, "shutdown", timeout=5, graceful=graceful)
        except OpError as e:
            log.warning("shutdown of %s: %s; SIGTERM", name, e)
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        np.ready = False
        self.events.emit("node_down", node=name, pid=proc.pid, reason="exited", returncode=proc.returncode)

    async def restart_node(self, name: str, waiting_giveback: bool = True) -> None:
        await self.start_node(name, waiting_giveback=waiting_giveback)

    def fence(self, name: str) -> None:
        np = self.nodes[name]
        np.expected_exit = True
        if np.running:
            os.kill(np.proc.pid, signal.SIGKILL)      # our child, by PID; a stopped process dies too
        self.stopped.discard(name)
        np.ready = False

    # ------------------------------------------------------------------ witness hook
    async def start_witnesses(self) -> None:
        try:
            if importlib.util.find_spec("witness.__main__") is None:
                return
        except (ImportError, ValueError):
            return
        for n in self.cfg.nodes:
            logf = open(os.path.join(self.sd, "nodes", f"{n}.witness.log"), "ab")
            try:
                cmd = [sys.executable, "-m", "witness", "--config", self.cfg.source, "--node", n]
                if self.fabric is not None:
                    cmd = self.fabric.exec_prefix(n) + cmd
                self.witness[n] = await asyncio.create_subprocess_exec(
                    *cmd, stdout=logf, stderr=logf, start_new_session=True)
            finally:
                logf.close()
        await self._wait_witnesses_ready()

    async def _wait_witnesses_ready(self, timeout: float = 30.0) -> None:
        """`cluster up` returns with every witness answering (its log's ready line), so that a client
        registering right after sees a witness (bounded; a witness that doesn't come up is logged)."""
        logs = {n: os.path.join(self.sd, "nodes", f"{n}.witness.log") for n in self.witness}
        start = {n: (os.path.getsize(p) if os.path.exists(p) else 0) for n, p in logs.items()}
        pending = set(logs)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for n in list(pending):
                try:
                    with open(logs[n], "rb") as f:
                        f.seek(start[n])
                        if f"witness {n} ready".encode() in f.read():
                            pending.discard(n)
                except OSError:
                    pass
                if self.witness[n].returncode is not None:
                    pending.discard(n)
                    log.warning("witness of %s exited (%s); see %s", n, self.witness[n].returncode, logs[n])
            await asyncio.sleep(0.05)
        for n in pending:
            log.warning("witness of %s not ready after %.0f s; see %s", n, timeout, logs[n])

    async def stop_witnesses(self) -> None:
        for p in self.witness.values():
            if p.returncode is None:
                p.terminate()
        for p in self.witness.values():
            try:
                await asyncio.wait_for(p.wait(), 10)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()

    # ------------------------------------------------------------------ polling + mediator
    async def _poll_one(self, name: str, timeout: float) -> bool:
        np = self.nodes[name]
        if not np.running or not np.ready or np.expected_exit or name in self._handling:
            return False
        try:
            np.status = await np.client.call("status", timeout=timeout)
            np.last_ok = time.monotonic()
            return True
        except (OSError, asyncio.TimeoutError, ValueError, NodeError):
            return False

    async def poll_loop(self) -> None:
        """One poller per node (a hung node's slow answers never delay the others' checks)."""
        await asyncio.gather(*(self._poll_node(n) for n in self.cfg.nodes))

    async def _poll_node(self, name: str) -> None:
        interval = self.cfg.heartbeat_interval_ms / 1000
        partners = {n: d.partner for n, d in self.cfg.nodes.items()}
        while not self._stop.is_set():
            t0 = time.monotonic()
            if await self._poll_one(name, 2 * interval):
                view = (self.nodes[name].status or {}).get("heartbeat")
                for suspect, reporter in suspects(partners, {name: view}, set(self.placement.down_nodes), {name}):
                    if suspect not in self._handling and not self.shutting_down:
                        self._handling.add(suspect)
                        self._tasks.append(asyncio.create_task(self._mediate(suspect, reporter)))
                partner = partners.get(name)
                if partner and (view or {}).get("partner_alive"):
                    pview = (self.nodes[partner].status or {}).get("heartbeat") or {}
                    if pview.get("partner_alive"):
                        self.partitions.healed(name, partner)
            self._tasks = [t for t in self._tasks if not t.done()]
            self._refresh_metrics()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))

    async def _mediate(self, suspect: str, reporter: str) -> None:
        """docs/cluster-design.md: check the suspect ourselves; fence + take over, or report a partition."""
        try:
            np = self.nodes[suspect]
            interval = self.cfg.heartbeat_interval_ms / 1000
            exited = not np.running
            ping_ok = False
            if not exited:
                try:
                    await np.client.call("ping", timeout=2 * interval)
                    ping_ok = True
                except (OSError, asyncio.TimeoutError, ValueError, NodeError):
                    ping_ok = False
            verdict = judge(exited, ping_ok)
            if verdict == "partition":
                if self.partitions.detected(reporter, suspect):
                    self.events.emit("partition_detected", node=reporter, partner=suspect)
                return
            async with self._op_lock:
                if self.shutting_down:
                    return
                if np.running:
                    pid = np.proc.pid
                    self.fence(suspect)
                    await asyncio.wait_for(np.proc.wait(), 10)
                    self.events.emit("node_down", node=suspect, pid=pid, reason="hung")
                self.events.emit("node_fenced", node=suspect)
                if suspect not in self.placement.down_nodes and self.node_state(reporter) == "up":
                    await self.ops.takeover(suspect, planned=False)
                if suspect in self.placement.down_nodes:
                    await self.restart_node(suspect, waiting_giveback=True)
        except Exception:  # noqa: BLE001 - the mediator must survive any single failure
            log.exception("mediator for %s failed", suspect)
        finally:
            self._handling.discard(suspect)

    # ------------------------------------------------------------------ life cycle
    def _prepare(self) -> None:
        os.makedirs(os.path.join(self.sd, "nodes"), exist_ok=True)
        for a in self.cfg.aggregates.values():
            os.makedirs(a.state_dir, exist_ok=True)
        for v in self.cfg.volumes:
            os.makedirs(self.cfg.volume_path(v, self.placement), exist_ok=True)
        self.token = secrets.token_urlsafe(32)
        tok = os.path.join(self.sd, "token")
        fd = os.open(tok + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        os.chmod(tok + ".tmp", 0o600)
        os.replace(tok + ".tmp", tok)
        self.placement.save(self.placement_path)
        with open(os.path.join(self.sd, "supervisor.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        self.events = EventLog(os.path.join(self.sd, "events.jsonl"))

    async def run(self, on_ready=None) -> int:
        self._prepare()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        host, port = _hostport(self.cfg.control)
        self.api = ControlApi(self, host, port)
        try:
            await self.api.start()
        except OSError as e:
            print(f"smbnd supervisor: cannot listen on {self.cfg.control}: {e.strerror}", file=sys.stderr, flush=True)
            self.events.close()
            return 1
        api_json = os.path.join(self.sd, "api.json")
        with open(api_json + ".tmp", "w") as f:
            json.dump({"url": f"http://{host}:{port}", "pid": os.getpid()}, f)
        os.replace(api_json + ".tmp", api_json)
        code = 0
        try:
            if self.cfg.lif_backend == "netns":
                from .lif import fabric_for
                self.fabric = fabric_for(self.cfg)
                self.fabric.up()
            try:
                self.metrics.serve(self.cfg.metrics_port)
            except OSError as e:
                log.warning("metrics port %s: %s", self.cfg.metrics_port, e)
            await self._stop_orphans()
            await asyncio.gather(*(self.start_node(n, waiting_giveback=n in self.placement.down_nodes)
                                   for n in self.cfg.nodes))
            await self.start_witnesses()
            self.events.emit("cluster_up", nodes={n: self.nodes[n].pid for n in self.cfg.nodes},
                             placement=json.loads(self.placement.to_json()))
            self._tasks.append(asyncio.create_task(self.poll_loop()))
            if on_ready is not None:
                on_ready(self)
            await self._stop.wait()
        except Exception as e:  # noqa: BLE001 - report and shut down whatever started
            log.exception("supervisor failed")
            print(f"smbnd supervisor: {e}", file=sys.stderr, flush=True)
            code = 1
        finally:
            await self.shutdown()
            for p in (api_json, os.path.join(self.sd, "supervisor.pid")):
                try:
                    os.unlink(p)
                except OSError:
                    pass
        return code

    async def _stop_orphans(self) -> None:
        """Node processes left by a supervisor that was SIGKILLed still answer on this state dir's
        sockets (and hold the LIF addresses): ask them to exit before starting new ones."""
        for n, np in self.nodes.items():
            if not os.path.exists(np.client.path):
                continue
            try:
                await np.client.call("shutdown", timeout=2, graceful=False)
                log.warning("stopped an orphaned %s process of a previous supervisor", n)
            except (OSError, asyncio.TimeoutError, ValueError, NodeError):
                continue
            for _ in range(50):                      # bounded: until its socket stops answering
                await asyncio.sleep(0.1)
                try:
                    await np.client.call("ping", timeout=0.5)
                except (OSError, asyncio.TimeoutError, ValueError, NodeError):
                    break

    async def shutdown(self) -> None:
        self.shutting_down = True
        self._stop.set()
        async with self._op_lock:
            for t in self._tasks:
                t.cancel()
            await self.stop_witnesses()
            await asyncio.gather(*(self.stop_node(n) for n in self.cfg.nodes), return_exceptions=True)
            for np in self.nodes.values():
                for t in np.tasks:
                    t.cancel()
            self.events.emit("cluster_down")
            if self.api is not None:
                await self.api.stop()
            self.metrics.close()
            if self.fabric is not None:
                self.fabric.down()
            self.events.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smbnd.cluster.supervisor")
    ap.add_argument("--config", required=True)
    ap.add_argument("--log-level", default=os.environ.get("SMBND_LOG_LEVEL", "WARNING"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=getattr(logging, a.log_level.upper(), logging.WARNING),
                        format="%(asctime)s supervisor %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = load_cluster(a.config)
    except ConfigError as e:
        print(f"smbnd supervisor: config error: {e}", file=sys.stderr, flush=True)
        return 2

    def ready(sup):
        print(f"smbnd cluster {cfg.name} up: control http://{cfg.control} pid {os.getpid()}", flush=True)
    return asyncio.run(Supervisor(cfg).run(on_ready=ready))


if __name__ == "__main__":
    sys.exit(main())
