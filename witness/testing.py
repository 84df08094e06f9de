"""Harness for witness interop runs (tests, drills): a two-node cluster TOML on loopback, the
witness and stand-in SMB node processes, a private network namespace (so that the endpoint mapper
can own TCP 135 without touching the host's: Samba's rpcclient always asks EPM on 135), and an
interactive rpcclient session on a pty."""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from smbnd.cluster.model import socket_path

USER, PASSWORD = "demo", "demo-Passw0rd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def unique_loopback_pair() -> tuple[str, str]:
    """Two 127.x.y.z addresses unlikely to collide with other tests running in parallel."""
    r = int.from_bytes(os.urandom(2), "big") % 200 + 20
    base = os.getpid() % 200 + 20
    return f"127.{base}.{r}.11", f"127.{base}.{r}.12"


def write_cluster(root: str, addr_a: str, addr_b: str, *, smb_port: int, epm_port: int, witness_port: int,
                  scale_out: bool = False, name: str = "SMBND") -> str:
    path = os.path.join(root, "cluster.toml")
    with open(path, "w") as f:
        f.write(f"""[cluster]
name = "smbndc"
state_dir = "state"
smb_port = {smb_port}
epm_port = {epm_port}
witness_port = {witness_port}

[svm]
name = "{name}"
scale_out = {str(scale_out).lower()}

[[node]]
name = "a"
[[node]]
name = "b"
[[ha_pair]]
nodes = ["a", "b"]

[[aggregate]]
name = "aggr_a"
home = "a"
path = "aggr_a"
[[aggregate]]
name = "aggr_b"
home = "b"
path = "aggr_b"

[[lif]]
name = "lif_a"
address = "{addr_a}"
home = "a"
[[lif]]
name = "lif_b"
address = "{addr_b}"
home = "b"

[[volume]]
name = "vol1"
aggregate = "aggr_a"
ca = true
[[volume]]
name = "vol2"
aggregate = "aggr_b"

[users]
{USER} = "{PASSWORD}"
""")
    return path


class NetNS:
    """A private network namespace (root only) held by a sleeping process; ``wrap`` prefixes a
    command so that it runs inside it. Unix sockets on the file system stay reachable."""

    def __init__(self):
        self.proc = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 1000000"],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.proc.stdout.readline().strip() != "up":
            raise RuntimeError("cannot create a network namespace")

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--"] + cmd

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and all(
            subprocess.run(["which", x], capture_output=True).returncode == 0 for x in ("unshare", "nsenter", "ip"))


class Proc:
    """A child process that prints one readiness line; stopped with SIGTERM."""

    def __init__(self, cmd: list[str], ready: str, log_path: str, timeout: float = 30):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if ready in line or not line:
                break
        if ready not in line:
            self.stop()
            raise RuntimeError(f"{cmd[:4]} did not start: {line!r} {self.log()[-3000:]}")
        self.ready_line = line

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_witness(config: str, node: str, log_path: str, ns: NetNS | None = None, *extra: str) -> Proc:
    cmd = [sys.executable, "-m", "witness", "--config", config, "--node", node, "--log-level", "INFO", *extra]
    return Proc(ns.wrap(cmd) if ns else cmd, "ready", log_path)


def start_node(config: str, node: str, log_path: str, ns: NetNS | None = None) -> Proc:
    cmd = [sys.executable, "-m", "smbnd.cluster.node", "--config", config, "--node", node]
    return Proc(ns.wrap(cmd) if ns else cmd, " ready ", log_path)


class Rpcclient:
    """An interactive rpcclient (stdin: pipe, stdout/stderr: a pty so that output is unbuffered)."""

    def __init__(self, binding: str, ns: NetNS | None = None, user: str = USER, password: str = PASSWORD):
        master, slave = pty.openpty()
        cmd = ["rpcclient", "-U", f"{user}%{password}", binding]
        self.proc = subprocess.Popen(ns.wrap(cmd) if ns else cmd, stdin=subprocess.PIPE, stdout=slave,
                                     stderr=slave, start_new_session=True)
        os.close(slave)
        self.fd = master
        self.out = ""

    def run(self, command: str, expect: str, timeout: float = 30) -> str:
        """Send one command; return the output up to and including the first match of ``expect``.
        Commands separated by newlines are sent one by one (rpcclient reads one line per poll)."""
        start = len(self.out)
        *first, last = command.split("\n")
        for cmd in first:
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
            time.sleep(0.3)
        self.proc.stdin.write(last.encode() + b"\n")
        self.proc.stdin.flush()
        rx = re.compile(expect, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.out, start)
            if m:
                return self.out[start:m.end()]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{command!r}: no {expect!r} in {self.out[start:]!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    raise EOFError(f"rpcclient exited: {self.out[start:]!r}")
                self.out += data.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        try:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


class Cluster:
    """Two witnesses (nodes a and b) and stand-in SMB nodes in a private network namespace:
    lif_a 127.0.0.11 on a, lif_b 127.0.0.12 on b; EPM on 135 (private), witness 6135, SMB 4455."""

    ADDR_A, ADDR_B = "127.0.0.11", "127.0.0.12"
    SMB, EPM, WITNESS = 4455, 135, 6135

    def __init__(self, root: str, *, smb_nodes=("a", "b"), witness_args=(), scale_out: bool = False):
        self.root = root
        self.ns = NetNS()
        self.procs: dict[str, Proc] = {}
        try:
            self.config = write_cluster(root, self.ADDR_A, self.ADDR_B, smb_port=self.SMB, epm_port=self.EPM,
                                        witness_port=self.WITNESS, scale_out=scale_out)
            self.state_dir = os.path.join(root, "state")
            for node in ("a", "b"):
                self.procs[f"witness-{node}"] = start_witness(self.config, node, os.path.join(root, f"w{node}.log"),
                                                              self.ns, *witness_args)
            for node in smb_nodes:
                self.procs[f"smb-{node}"] = start_node(self.config, node, os.path.join(root, f"n{node}.log"), self.ns)
        except Exception:
            self.stop()
            raise

    def control(self, node: str):
        from .control import ControlClient
        return ControlClient(socket_path(self.state_dir, f"{node}.witness"))

    def run(self, cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.ns.wrap(cmd), capture_output=True, text=True, timeout=timeout, **kw)

    def logs(self) -> str:
        return "\n".join(f"== {k}\n{p.log()[-3000:]}" for k, p in self.procs.items())

    def emit(self, seq: int, type_: str, **fields) -> None:
        """Append an event to events.jsonl as the supervisor does (the witness tails it)."""
        import json
        with open(os.path.join(self.state_dir, "events.jsonl"), "a") as f:
            f.write(json.dumps({"seq": seq, "ts": time.time(), "type": type_, **fields}) + "\n")

    def set_placement(self, **lif_node: str) -> None:
        from smbnd.cluster.model import Placement, load_cluster
        c = load_cluster(self.config)
        path = os.path.join(self.state_dir, "placement.json")
        pl = Placement.load(path) or c.initial_placement()
        pl.lif_node.update(lif_node)
        pl.epoch += 1
        pl.save(path)

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()
        self.ns.close()
