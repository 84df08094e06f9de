"""Cluster commands of the `smbnd` CLI: a thin client of the control API (docs/cluster-design.md).

The API is found through the cluster config (``--config FILE``, else ``$SMBND_CONFIG``, else the demo
``examples/cluster-2node.toml``): ``<state_dir>/api.json`` gives the URL, ``<state_dir>/token`` the
bearer token. Exit codes: 0 ok, 1 the operation failed or the cluster is not reachable, 2 usage.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from typing import Optional

import typer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "examples", "cluster-2node.toml")
ConfigOpt = typer.Option(None, "--config", "-c", help="cluster TOML (default: $SMBND_CONFIG, else the demo)")


def _die(msg: str, code: int = 1) -> None:
    typer.echo(f"smbnd: {msg}", err=True)
    raise typer.Exit(code)


def config_path(config: Optional[str]) -> str:
    return os.path.abspath(config or os.environ.get("SMBND_CONFIG") or DEMO_CONFIG)


def load(config: Optional[str]):
    from smbnd.cluster.model import load_cluster
    from smbnd.config import ConfigError
    try:
        return load_cluster(config_path(config))
    except ConfigError as e:
        _die(f"config error: {e}", 2)


class Api:
    def __init__(self, state_dir: str, timeout: float = 300.0):
        try:
            with open(os.path.join(state_dir, "api.json")) as f:
                info = json.load(f)
            with open(os.path.join(state_dir, "token")) as f:
                self.token = f.read().strip()
        except (OSError, ValueError):
            raise ConnectionError(f"no cluster running (no {state_dir}/api.json)") from None
        self.url, self.pid = info["url"], int(info.get("pid", 0))
        u = urllib.parse.urlsplit(self.url)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout

    def _conn(self, timeout=None):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def request(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        conn = self._conn(timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = {"Authorization": f"Bearer {self.token}"}
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            text = r.read().decode()
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionError(f"control API {self.url}: {e}") from None
        finally:
            conn.close()
        try:
            return r.status, json.loads(text) if text.strip() else None
        except ValueError:
            return r.status, text

    def stream(self, path: str):
        """Lines of a (chunked) JSON-lines response, as they arrive."""
        conn = self._conn(timeout=None)
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        r = conn.getresponse()
        if r.status != 200:
            raise ConnectionError(f"GET {path}: {r.status} {r.read().decode()[:200]}")
        try:
            for line in r:
                if line.strip():
                    yield line.decode().rstrip("\n")
        finally:
            conn.close()


def api_for(config: Optional[str]) -> Api:
    try:
        return Api(load(config).state_dir)
    except ConnectionError as e:
        _die(str(e))


def call(config, method, path, body=None):
    try:
        code, doc = api_for(config).request(method, path, body)
    except ConnectionError as e:
        _die(str(e))
    if code != 200:
        _die(f"{path}: {(doc or {}).get('error', doc) if isinstance(doc, dict) else doc} (HTTP {code})")
    return doc


def _op(config, path, body, what):
    doc = call(config, "POST", path, body)
    extra = ", ".join(f"{k} {v}" for k, v in doc.items() if k not in ("ok", "ms", "events"))
    evs = doc.get("events") or []
    msg = f"{what}: done in {doc.get('ms')} ms"
    if extra:
        msg += f" ({extra})"
    if evs:
        msg += f"; events {evs[0]}-{evs[-1]}"
    typer.echo(msg)


# ------------------------------------------------------------------------ cluster up/down
cluster_app = typer.Typer(no_args_is_help=True, help="start and stop a cluster")


def connect_hints(cfg) -> list[str]:
    port = cfg.port("smb")
    user, pw = next(iter(cfg.users.items()))
    out = []
    for lif in cfg.lifs.values():
        for v in cfg.volumes.values():
            out.append(f"  smbclient //{lif.address}/{v.name} -p {port} -U {user}%{pw} -m SMB3_11"
                       f"      # {lif.name} (home {lif.home}), {'CA' if v.ca else 'plain'} share")
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _is_supervisor(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        return b"smbnd.cluster.supervisor" in cmd or b"cluster" in cmd
    except OSError:
        return False


def wait_ready(cfg, proc: subprocess.Popen | None, timeout: float) -> tuple[bool, str]:
    deadline, last = time.monotonic() + timeout, "no api.json yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False, f"supervisor exited with {proc.returncode}"
        try:
            api = Api(cfg.state_dir, timeout=5)
            if proc is None or api.pid == proc.pid:
                code, st = api.request("GET", "/v1/status", timeout=5)
                states = [n["state"] for n in st.get("nodes", [])] if code == 200 else []
                if states and all(s in ("up", "waiting_giveback") for s in states):
                    return True, ""
                last = f"node states {states}"
        except (ConnectionError, KeyError, ValueError, AttributeError) as e:
            last = str(e)
        time.sleep(0.2)
    return False, last


@cluster_app.command("up")
def up(config: Optional[str] = ConfigOpt,
       foreground: bool = typer.Option(False, "--foreground", "-f", help="run the supervisor in this process"),
       timeout: float = typer.Option(90.0, help="seconds to wait for all nodes (background mode)")):
    """Start the supervisor, the node processes and the witness processes."""
    cfg = load(config)
    try:
        api = Api(cfg.state_dir, timeout=3)
        if _alive(api.pid) and api.request("GET", "/v1/status", timeout=3)[0] == 200:
            _die(f"cluster already running (supervisor pid {api.pid}, {api.url})")
    except ConnectionError:
        pass
    if foreground:
        import asyncio

        from smbnd.cluster.supervisor import Supervisor

        def ready(sup):
            typer.echo(f"smbnd cluster {cfg.name} up (foreground, pid {os.getpid()}); connect:")
            typer.echo("\n".join(connect_hints(cfg)))
            typer.echo(f"  control: {cfg.control}  (smbnd status --config {cfg.source})", err=False)
            sys.stdout.flush()
        try:
            import uvloop  # optional extra
            uvloop.install()
        except ImportError:
            pass
        raise typer.Exit(asyncio.run(Supervisor(cfg).run(on_ready=ready)))
    os.makedirs(cfg.state_dir, exist_ok=True)
    log_path = os.path.join(cfg.state_dir, "supervisor.log")
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "smbnd.cluster.supervisor", "--config", cfg.source],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ok, why = wait_ready(cfg, proc, timeout)
    if not ok:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)            # our child, by PID
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        tail = open(log_path, errors="replace").read()[-1500:]
        _die(f"cluster did not come up: {why}\n{tail}")
    typer.echo(f"smbnd cluster {cfg.name} up: supervisor pid {proc.pid}, control http://{cfg.control}, "
               f"log {log_path}")
    typer.echo("connect:")
    typer.echo("\n".join(connect_hints(cfg)))
    typer.echo(f"status: smbnd status --config {cfg.source}      stop: smbnd cluster down --config {cfg.source}")


@cluster_app.command("down")
def down(config: Optional[str] = ConfigOpt, timeout: float = typer.Option(60.0)):
    """Stop the cluster (nodes, witnesses, supervisor)."""
    cfg = load(config)
    pid = 0
    try:
        api = Api(cfg.state_dir, timeout=10)
        pid = api.pid
        api.request("POST", "/v1/shutdown", {})
    except ConnectionError:
        try:
            with open(os.path.join(cfg.state_dir, "supervisor.pid")) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and _alive(pid) and _is_supervisor(pid):
            os.kill(pid, signal.SIGTERM)       # the supervisor of this state dir, by PID
        elif not pid:
            _die("no cluster running")
    deadline = time.monotonic() + timeout
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid and _alive(pid):
        _die(f"supervisor pid {pid} still running after {timeout:g} s")
    typer.echo(f"smbnd cluster {cfg.name} down")


# ------------------------------------------------------------------------ status / events
def status(config: Optional[str] = ConfigOpt, as_json: bool = typer.Option(False, "--json")):
    """Nodes, pairs, LIFs, aggregates, sessions, opens, disconnected opens, witness registrations."""
    st = call(config, "GET", "/v1/status")
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    con = Console()
    con.print(f"[bold]cluster[/] {st['cluster']}  [bold]SVM[/] {st['svm']}  placement epoch {st.get('epoch')}")
    t = Table(title="nodes")
    for h in ("node", "partner", "state", "pid", "sessions", "persistent", "durable", "plain", "heartbeat"):
        t.add_column(h)
    for n in st["nodes"]:
        o = st["opens"].get(n["name"]) or {}
        hb = (st.get("heartbeat") or {}).get(n["name"]) or {}
        hbs = "-" if not hb else ("partner alive" if hb.get("partner_alive") else "[red]partner lost[/]") + \
            (" (cut" + (" in" if hb.get("drop_in") else "") + (" out" if hb.get("drop_out") else "") + ")"
             if hb.get("drop_in") or hb.get("drop_out") else "")
        color = {"up": "green", "waiting_giveback": "yellow"}.get(n["state"], "red")
        t.add_row(n["name"], n["partner"] or "-", f"[{color}]{n['state']}[/]", str(n["pid"] or "-"),
                  str(st["sessions"].get(n["name"], 0)), str(o.get("persistent", 0)), str(o.get("durable", 0)),
                  str(o.get("plain", 0)), hbs)
    con.print(t)
    pairs = sorted({tuple(sorted((n["name"], n["partner"]))) for n in st["nodes"] if n["partner"]})
    con.print("HA pairs: " + (", ".join(f"{a} <-> {b}" for a, b in pairs) or "none"))
    t = Table(title="data LIFs")
    for h in ("LIF", "address", "home", "current", "status"):
        t.add_column(h)
    for x in st["lifs"]:
        t.add_row(x["name"], x["address"], x["home"],
                  x["current"] + ("" if x["current"] == x["home"] else " [yellow](not home)[/]"),
                  "[green]up[/]" if x["up"] else "[red]down[/]")
    con.print(t)
    t = Table(title="aggregates")
    for h in ("aggregate", "home", "owner", "path", "fault"):
        t.add_column(h)
    for a in st["aggregates"]:
        t.add_row(a["name"], a["home"], a["owner"], a["path"], a["fault"] or "-")
    con.print(t)
    t = Table(title="volumes")
    for h in ("volume", "aggregate", "CA"):
        t.add_column(h)
    for v in st["volumes"]:
        t.add_row(v["name"], v["aggregate"], "yes" if v["ca"] else "no")
    con.print(t)
    t = Table(title=f"disconnected opens ({len(st['disconnected'])})")
    for h in ("node", "share", "path", "LIF", "persistent id", "window left"):
        t.add_column(h)
    for d in st["disconnected"][:50]:
        t.add_row(d.get("node", ""), str(d.get("share")), str(d.get("path")), str(d.get("lif")),
                  str(d.get("persistent_id")), f"{float(d.get('remaining_s') or 0):.1f} s")
    con.print(t)
    t = Table(title=f"witness registrations ({len(st['witness'])})")
    for h in ("node", "client", "net name", "IP", "share"):
        t.add_column(h)
    for w in st["witness"][:50]:
        t.add_row(str(w.get("node")), str(w.get("client_name", "")), str(w.get("net_name", "")),
                  str(w.get("ip_address", "")), str(w.get("share_name") or ""))
    con.print(t)


def events(config: Optional[str] = ConfigOpt, follow: bool = typer.Option(False, "--follow", "-f"),
           since: int = typer.Option(0, "--since", help="only events with seq > N")):
    """The event log as JSON lines (--follow keeps streaming)."""
    api = api_for(config)
    try:
        for line in api.stream(f"/v1/events?since={since}&follow={1 if follow else 0}"):
            typer.echo(line)
            sys.stdout.flush()
    except (ConnectionError, OSError, http.client.HTTPException) as e:
        _die(str(e))
    except KeyboardInterrupt:
        pass


def takeover(node: str, config: Optional[str] = ConfigOpt):
    """Planned takeover of NODE by its HA partner."""
    _op(config, "/v1/takeover", {"node": node}, f"takeover of {node}")


def giveback(node: str, config: Optional[str] = ConfigOpt):
    """Give NODE's LIFs and aggregates back from its partner."""
    _op(config, "/v1/giveback", {"node": node}, f"giveback to {node}")


lif_app = typer.Typer(no_args_is_help=True, help="data LIFs")
aggr_app = typer.Typer(no_args_is_help=True, help="aggregates")
vol_app = typer.Typer(no_args_is_help=True, help="volumes")
node_app = typer.Typer(no_args_is_help=True, help="nodes")
fault_app = typer.Typer(no_args_is_help=True, help="fault injection")


@lif_app.command("migrate")
def lif_migrate(lif: str, node: str, config: Optional[str] = ConfigOpt):
    """Move LIF to NODE."""
    _op(config, "/v1/lif/migrate", {"lif": lif, "node": node}, f"migrate {lif} to {node}")


@lif_app.command("revert")
def lif_revert(lif: str, config: Optional[str] = ConfigOpt):
    """Move LIF back to its home node."""
    _op(config, "/v1/lif/revert", {"lif": lif}, f"revert {lif}")


@aggr_app.command("relocate")
def aggr_relocate(aggr: str, node: str, config: Optional[str] = ConfigOpt):
    """Relocate AGGR to NODE (the owner's HA partner)."""
    _op(config, "/v1/aggr/relocate", {"aggr": aggr, "node": node}, f"relocate {aggr} to {node}")


@vol_app.command("move")
def vol_move(vol: str, aggr: str, config: Optional[str] = ConfigOpt):
    """Move VOL to AGGR (open handles preserved)."""
    _op(config, "/v1/vol/move", {"vol": vol, "aggr": aggr}, f"move {vol} to {aggr}")


@node_app.command("upgrade")
def node_upgrade(node: str, config: Optional[str] = ConfigOpt):
    """Rolling upgrade: takeover, restart NODE's process, giveback."""
    _op(config, "/v1/node/upgrade", {"node": node}, f"upgrade of {node}")


def _fault(config, what, **body):
    _op(config, "/v1/fault", {k: v for k, v in body.items() if v is not None}, what)


@fault_app.command("kill")
def f_kill(node: str, config: Optional[str] = ConfigOpt):
    """SIGKILL NODE's process (the partner takes over)."""
    _fault(config, f"kill {node}", kind="kill", target=node)


@fault_app.command("hang")
def f_hang(node: str, config: Optional[str] = ConfigOpt):
    """SIGSTOP NODE's process (fenced and taken over once detected)."""
    _fault(config, f"hang {node}", kind="hang", target=node)


@fault_app.command("resume")
def f_resume(node: str, config: Optional[str] = ConfigOpt):
    """SIGCONT a hung NODE (if it was not fenced yet)."""
    _fault(config, f"resume {node}", kind="resume", target=node)


@fault_app.command("partition")
def f_partition(node: str, config: Optional[str] = ConfigOpt,
                direction: str = typer.Option("both", help="both | a-to-b | b-to-a (a = NODE, b = its partner)")):
    """Cut NODE's HA interconnect (heartbeats)."""
    _fault(config, f"partition {node} ({direction})", kind="partition", target=node, direction=direction)


@fault_app.command("heal")
def f_heal(node: str, config: Optional[str] = ConfigOpt):
    """Restore NODE's HA interconnect."""
    _fault(config, f"heal {node}", kind="heal", target=node)


@fault_app.command("lif-down")
def f_lif_down(lif: str, config: Optional[str] = ConfigOpt):
    """The LIF's address stops answering (not moved)."""
    _fault(config, f"lif-down {lif}", kind="lif-down", target=lif)


@fault_app.command("lif-up")
def f_lif_up(lif: str, config: Optional[str] = ConfigOpt):
    """The LIF answers again."""
    _fault(config, f"lif-up {lif}", kind="lif-up", target=lif)


@fault_app.command("storage-fail")
def f_storage_fail(aggr: str, config: Optional[str] = ConfigOpt):
    """Backing I/O on AGGR's volumes fails."""
    _fault(config, f"storage-fail {aggr}", kind="storage-fail", target=aggr)


@fault_app.command("storage-slow")
def f_storage_slow(aggr: str, ms: int, config: Optional[str] = ConfigOpt):
    """Add MS milliseconds to backing I/O on AGGR's volumes."""
    _fault(config, f"storage-slow {aggr} {ms} ms", kind="storage-slow", target=aggr, ms=ms)


@fault_app.command("storage-ok")
def f_storage_ok(aggr: str, config: Optional[str] = ConfigOpt):
    """Clear AGGR's storage fault."""
    _fault(config, f"storage-ok {aggr}", kind="storage-ok", target=aggr)


@fault_app.command("mgmt-down")
def f_mgmt_down(seconds: float, config: Optional[str] = ConfigOpt):
    """The control API stops listening for SECONDS (data service unaffected)."""
    _fault(config, f"mgmt-down {seconds:g} s", kind="mgmt-down", seconds=seconds)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    app.command("status")(status)
    app.command("events")(events)
    app.command("takeover")(takeover)
    app.command("giveback")(giveback)
    app.add_typer(lif_app, name="lif")
    app.add_typer(aggr_app, name="aggr")
    app.add_typer(vol_app, name="vol")
    app.add_typer(node_app, name="node")
    app.add_typer(fault_app, name="fault")
