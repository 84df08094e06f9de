"""Unplanned takeover time: node1 SIGKILLed -> node2 serving lif1 with lif1's handles loaded.

For each N the CA volume's store for lif1 (``aggr1/.smbnd-state/vol1@lif1.handles.sqlite``) is
filled directly with N disconnected persistent opens (HandleStore.put_many, as bench/store_load.py;
real files behind them, 10 % with a byte-range lock, all with an RWH lease). node1 starts with lif1
(loading them), node2 with lif2; node1 is SIGKILLed; then node2 gets ``host_lif lif1`` (what the
supervisor sends after fencing) and we poll lif1's address until it accepts a TCP connection.

    python bench/takeover.py [--n 1000,10000,100000] [--dir /tmp]

Reports: host_lif as timed by node2 (open the store, mark rows disconnected, index them -- the
opens are rebuilt with their FileState/locks/leases when first used, smbnd.pending -- start
listening) and kill -> accepting as the client sees it.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from smbnd.cluster.nodectl import NodeClient  # noqa: E402
from smbnd.cluster.model import socket_path  # noqa: E402
from smbnd.handlestore import HandleStore  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from store_load import records  # noqa: E402  (the same 100k-open fixture as the store-load bench)

TOML = """
[cluster]
name = "bench"
state_dir = "cluster"
smb_port = {port}
reconnect_window = 300
[[node]]
name = "node1"
interconnect = "{net}.1:{hb1}"
[[node]]
name = "node2"
interconnect = "{net}.2:{hb2}"
[[ha_pair]]
nodes = ["node1", "node2"]
[[aggregate]]
name = "aggr1"
home = "node1"
path = "aggr1"
[[aggregate]]
name = "aggr2"
home = "node2"
path = "aggr2"
[[lif]]
name = "lif1"
address = "{net}.11"
home = "node1"
[[lif]]
name = "lif2"
address = "{net}.12"
home = "node2"
[[volume]]
name = "vol1"
aggregate = "aggr1"
ca = true
[users]
demo = "demo-Passw0rd"
"""


def _free(kind=socket.SOCK_STREAM, host="127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fill(d: str, n: int) -> None:
    vol = os.path.join(d, "aggr1", "vol1")
    recs = records(vol, n)
    s = HandleStore(os.path.join(d, "aggr1", ".smbnd-state", "vol1@lif1.handles.sqlite"), volume=vol)
    s.put_many(recs)
    s.close()


def start(d: str, cfg: str, node: str) -> subprocess.Popen:
    log = open(os.path.join(d, f"{node}.log"), "w")
    p = subprocess.Popen([sys.executable, "-m", "smbnd.cluster.node", "--config", cfg, "--node", node],
                         stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    line = p.stdout.readline()
    if "ready" not in line:
        raise RuntimeError(f"{node} did not start: {line!r}")
    return p


def one(n: int, base: str | None) -> tuple[float, float, int, float]:
    with tempfile.TemporaryDirectory(dir=base) as d:
        net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        port = _free(host=f"{net}.11")
        cfg = os.path.join(d, "cluster.toml")
        with open(cfg, "w") as f:
            f.write(TOML.format(port=port, net=net, hb1=_free(socket.SOCK_DGRAM, f"{net}.1"),
                                hb2=_free(socket.SOCK_DGRAM, f"{net}.2")))
        os.makedirs(os.path.join(d, "aggr1", "vol1"))
        fill(d, n)
        p1 = start(d, cfg, "node1")
        p2 = start(d, cfg, "node2")
        try:
            n2 = NodeClient(socket_path(os.path.join(d, "cluster"), "node2"))
            pings: list[float] = []
            done = threading.Event()

            def pinger():                            # does node2 stay responsive (mediator pings)?
                for _ in range(100_000):
                    if done.is_set():
                        return
                    t = time.perf_counter()
                    try:
                        n2.call_sync("ping", timeout=30)
                    except (OSError, RuntimeError):
                        pass
                    pings.append((time.perf_counter() - t) * 1000)
                    time.sleep(0.05)
            t0 = time.perf_counter()
            os.kill(p1.pid, signal.SIGKILL)          # our own child, by PID
            p1.wait(10)
            th = threading.Thread(target=pinger)
            th.start()
            try:
                r = n2.call_sync("host_lif", lif="lif1", timeout=600)
            finally:
                done.set()
                th.join(60)
            for _ in range(10_000):
                try:
                    socket.create_connection((f"{net}.11", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.001)
            total = (time.perf_counter() - t0) * 1000
            return r["ms"], total, r["loaded"], max(pings, default=0.0)
        finally:
            for p in (p1, p2):
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="1000,10000,100000")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    rows = []
    for n in [int(x) for x in a.n.split(",")]:
        host_ms, total_ms, loaded, ping = one(n, a.dir)
        assert loaded == n, (loaded, n)
        rows.append((n, host_ms, total_ms, ping))
        print(f"  {n:>7} opens: host_lif {host_ms:9.1f} ms, kill -> accepting {total_ms:9.1f} ms, "
              f"slowest ping meanwhile {ping:.0f} ms", flush=True)
    print("\n| persistent opens | host_lif (load + listen) | kill -> lif1 accepting | per 1k opens "
          "| slowest node2 ping during it |")
    print("|---:|---:|---:|---:|---:|")
    for n, h, t, p in rows:
        print(f"| {n:,} | {h:,.0f} ms | {t:,.0f} ms | {h / (n / 1000):.1f} ms | {p:.0f} ms |")


if __name__ == "__main__":
    main()
