"""The drill's side of the cluster: control API client (docs/cluster-design.md, "Control API":
HTTP/1.1 + JSON, ``Authorization: Bearer <state_dir/token>``, URL in ``<state_dir>/api.json``),
starting/stopping the cluster through the CLI, executing timeline operations, and isolated test
configs (unique loopback addresses, free ports, private directories) made from a cluster TOML.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.parse

from .schema import Op

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# what `smbnd cluster up --config FILE` runs, in the foreground (docs/cluster-design.md "Processes");
# run directly so the supervisor is our child and can be stopped by PID
SUPERVISOR_CMD = [sys.executable, "-m", "smbnd.cluster.supervisor", "--config"]


class ControlError(RuntimeError):
    pass


class ControlApi:
    def __init__(self, state_dir: str, timeout: float = 180.0):
        self.state_dir = state_dir
        self.timeout = timeout
        with open(os.path.join(state_dir, "api.json")) as f:
            self.url = json.load(f)["url"]
        with open(os.path.join(state_dir, "token")) as f:
            self.token = f.read().strip()
        u = urllib.parse.urlsplit(self.url)
        self.host, self.port = u.hostname, u.port or 80

    def request(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        """-> (HTTP status, parsed JSON or list of JSON lines or text)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as e:
            raise ControlError(f"{method} {path}: {type(e).__name__}: {e}") from None
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            lines = []
            for ln in text.splitlines():
                try:
                    lines.append(json.loads(ln))
                except json.JSONDecodeError:
                    return resp.status, text
            return resp.status, lines

    def status(self) -> dict:
        code, body = self.request("GET", "/v1/status", timeout=10)
        if code != 200:
            raise ControlError(f"GET /v1/status -> {code} {body}")
        return body

    def events(self, since: int = 0) -> list[dict]:
        code, body = self.request("GET", f"/v1/events?since={since}", timeout=20)
        if code != 200:
            raise ControlError(f"GET /v1/events -> {code} {body}")
        if isinstance(body, dict):
            body = body.get("events", [body])
        return [e for e in (body or []) if isinstance(e, dict)]


# ----------------------------------------------------------------------------- operations
def op_request(op: Op) -> tuple[str, dict] | None:
    """Timeline operation -> (path, JSON body) of the control API; None for local ops (wait)."""
    a, v = op.args, op.verb
    if v == ("takeover",):
        return "/v1/takeover", {"node": a["node"]}
    if v == ("giveback",):
        return "/v1/giveback", {"node": a["node"]}
    if v == ("lif", "migrate"):
        return "/v1/lif/migrate", {"lif": a["lif"], "node": a["node"]}
    if v == ("lif", "revert"):
        return "/v1/lif/revert", {"lif": a["lif"]}
    if v == ("aggr", "relocate"):
        return "/v1/aggr/relocate", {"aggr": a["aggr"], "node": a["node"]}
    if v == ("vol", "move"):
        return "/v1/vol/move", {"vol": a["vol"], "aggr": a["aggr"]}
    if v == ("node", "upgrade"):
        return "/v1/node/upgrade", {"node": a["node"]}
    if v[0] == "fault":
        body = {"kind": v[1]}
        body.update({k: a[k] for k in ("target", "direction", "ms") if k in a})
        if v[1] == "mgmt-down":
            body["seconds"] = a.get("seconds", 10.0)
        if v[1] == "partition":
            body.setdefault("direction", "both")
        return "/v1/fault", body
    return None


CLEARS = {"hang": "resume", "partition": "heal", "lif-down": "lif-up", "storage-fail": "storage-ok",
          "storage-slow": "storage-ok"}


def clearing_op(op: Op, start: float) -> Op | None:
    """`fault hang node1 --seconds 5` -> the `fault resume node1` the drill runs 5 s after it started
    (the control API's faults stay until cleared; mgmt-down clears itself)."""
    if op.verb[0] != "fault" or op.verb[1] not in CLEARS or not op.args.get("seconds"):
        return None
    clear = CLEARS[op.verb[1]]
    args = {"target": op.args["target"]} if op.args.get("target") else {}
    text = f"fault {clear}" + (f" {args['target']}" if args else "")
    return Op(at=round(start + float(op.args["seconds"]), 4), text=text, verb=("fault", clear), args=args,
              index=op.index, auto=True)


def run_op(api: ControlApi | None, op: Op, clock, stop_at: float) -> dict:
    """Execute one timeline op now; returns its record (start/end in drill seconds)."""
    rec = {"at": op.at, "op": op.text, "start": round(clock.now(), 4), "auto": op.auto}
    req = op_request(op)
    try:
        if req is None:                       # wait SECONDS | wait EVENT [--timeout S]
            if "event" in op.args:
                rec.update(_wait_event(api, op.args["event"], op.args.get("timeout", 60.0), clock, rec["start"]))
            else:
                time.sleep(max(0.0, min(op.args.get("seconds", 0.0), stop_at - clock.now())))
                rec["ok"] = True
        else:
            if api is None:
                raise ControlError("no control API (cluster not started?)")
            path, body = req
            code, resp = api.request("POST", path, body)
            rec.update(request={"path": path, "body": body}, http=code, response=resp, ok=code == 200)
            if code != 200:
                rec["error"] = (resp or {}).get("error", str(resp)) if isinstance(resp, dict) else str(resp)
    except ControlError as e:
        rec.update(ok=False, error=str(e))
    rec["end"] = round(clock.now(), 4)
    return rec


def _wait_event(api, etype: str, timeout: float, clock, since_t: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for e in api.events(0):
                if e.get("type") == etype and clock.from_wall(float(e.get("ts", 0))) >= since_t - 0.5:
                    return {"ok": True, "event": e}
        except ControlError:
            pass
        time.sleep(0.2)
    return {"ok": False, "error": f"no {etype} event within {timeout:g} s"}


# ----------------------------------------------------------------------------- cluster lifecycle
class ClusterProcess:
    """The cluster of a drill: the supervisor as our child process; stopped with POST /v1/shutdown
    (what `smbnd cluster down` does), then SIGTERM/SIGKILL by PID if it does not exit."""

    def __init__(self, config: str, state_dir: str, log_path: str):
        self.config, self.state_dir, self.log_path = config, state_dir, log_path
        self.proc: subprocess.Popen | None = None

    def up(self, timeout: float = 90.0) -> ControlApi:
        for stale in ("api.json",):
            try:
                os.unlink(os.path.join(self.state_dir, stale))
            except FileNotFoundError:
                pass
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(SUPERVISOR_CMD + [self.config], cwd=PROJECT_ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        last = "no api.json yet"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            try:
                api = ControlApi(self.state_dir)
                st = api.status()
                states = [n.get("state") for n in st.get("nodes", [])]
                if states and all(s == "up" for s in states):
                    return api
                last = f"node states {states}"
            except (OSError, ValueError, KeyError, ControlError) as e:
                last = str(e)
                if rc not in (None, 0):
                    break
            time.sleep(0.25)
        self.down()
        raise ControlError(f"cluster did not come up: {last}; log {self.log_path}:\n{self._tail()}")

    def _tail(self) -> str:
        try:
            return open(self.log_path).read()[-2000:]
        except OSError:
            return ""

    def down(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                ControlApi(self.state_dir, timeout=30).request("POST", "/v1/shutdown", {})
            except (OSError, ValueError, KeyError, ControlError):
                pass
        if self.proc is not None:
            for sig, wait in ((None, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                if self.proc.poll() is not None:
                    break
                if sig is not None:
                    try:
                        os.kill(self.proc.pid, sig)      # our own child, by PID
                    except ProcessLookupError:
                        break
                try:
                    self.proc.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
        if getattr(self, "_log", None):
            self._log.close()


# ----------------------------------------------------------------------------- isolated test configs
def _free_port(host: str = "127.0.0.1", kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(doc: dict) -> str:
    """Writer for the cluster TOML's shape: tables of scalars/lists and arrays of such tables."""
    out = []
    for name, val in doc.items():
        if isinstance(val, dict):
            out.append(f"[{name}]")
            out += [f"{json.dumps(k) if not k.replace('_', '').isalnum() else k} = {_toml_value(x)}"
                    for k, x in val.items()]
            out.append("")
        elif isinstance(val, list):
            for item in val:
                out.append(f"[[{name}]]")
                out += [f"{k} = {_toml_value(x)}" for k, x in item.items()]
                out.append("")
    return "\n".join(out)


def isolated_config(base_toml: str, workdir: str, seed: int | None = None) -> str:
    """A copy of ``base_toml`` that cannot collide with anything else on the machine: state and
    aggregates under ``workdir``, unique 127.0.0.x LIF addresses, free SMB/EPM/witness/control ports,
    interconnects on unique 127.0.1.x addresses with free UDP ports, metrics off. A netns cluster
    keeps its backend: a unique cluster name (namespace names) and a random 192.168.x.0/24 for its
    LIFs (.11, .12, ...) and nodes (.1, .2, ...). -> path of the copy."""
    with open(base_toml, "rb") as f:
        doc = tomllib.load(f)
    rng = random.Random(seed if seed is not None else os.getpid() ^ time.monotonic_ns())
    os.makedirs(workdir, exist_ok=True)
    cl = doc.setdefault("cluster", {})
    cl["state_dir"] = os.path.join(workdir, "state")
    cl["smb_port"] = _free_port()
    cl["epm_port"] = _free_port()
    cl["witness_port"] = _free_port()
    cl["control"] = f"127.0.0.1:{_free_port()}"
    cl["metrics_port"] = 0
    lifs, nodes = doc.get("lif", []), doc.get("node", [])
    if cl.get("lif_backend") == "netns":
        # netns stays netns: the namespaces are named after the cluster's first 8 characters
        # (smbnd.cluster.lif.fabric_for), so a unique name; a random 192.168.x.0/24 fabric subnet
        for _ in range(50):
            cl["name"] = f"d{rng.randrange(10 ** 6):06d}"
            if not os.path.exists(f"/run/netns/snd-{cl['name']}-fab"):
                break
        net = f"192.168.{rng.randrange(100, 250)}"
        for i, lif in enumerate(lifs):
            lif["address"], lif["prefix_len"] = f"{net}.{11 + i}", 24
        for i, node in enumerate(nodes):
            node["interconnect"] = f"{net}.{1 + i}:7700"
    else:
        cl["lif_backend"] = "loopback"
        for lif, last in zip(lifs, rng.sample(range(100, 250), len(lifs))):
            lif["address"] = f"127.0.0.{last}"
        for node, last in zip(nodes, rng.sample(range(100, 250), len(nodes))):
            node["interconnect"] = f"127.0.1.{last}:{_free_port(kind=socket.SOCK_DGRAM)}"
    for aggr in doc.get("aggregate", []):
        aggr["path"] = os.path.join(workdir, aggr["name"])
        os.makedirs(aggr["path"], exist_ok=True)
    path = os.path.join(workdir, "cluster.toml")
    with open(path, "w") as f:
        f.write(f"# isolated copy of {base_toml} for a drill\n" + dump_toml(doc))
    return path
