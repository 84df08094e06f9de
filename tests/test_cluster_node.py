"""Cluster node processes (smbnd.cluster.node) driven over their control sockets, with real clients.

Two nodes of an HA pair on loopback (docs/cluster-design.md): lif1 on node1, lif2 on node2, CA
volume vol1 on aggr1, plain vol2 on aggr2. A client holds a persistent handle (DH2Q PERSISTENT),
an RWH lease and a byte-range lock on vol1 through lif1; the LIF moves to node2 (release_lif on
node1, host_lif on node2 -- or node1 is SIGKILLed first); the client reconnects to the same
address and reclaims with DH2C (MS-SMB2 3.3.5.9.12): lease, lock and data intact. Meanwhile others
get STATUS_FILE_NOT_AVAILABLE (3.3.5.9); durable opens on the non-CA share are lost, as a filer's.
Storage faults and aggregate freeze/thaw act on the aggregate's volumes only.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.tree import SMB2TreeConnectRequest, SMB2TreeConnectResponse

from durable_client import (H, LEASE, LOCK_EXCLUSIVE, LOCK_FAIL_IMMEDIATELY, LOCK_UNLOCK, PERSISTENT, R, W, Cli,
                            FILE_OPENED, dh2c, dh2q, lease_v2)
from smbnd import status as st
from smbnd.cluster.nodectl import NodeClient
from smbnd_server import PASSWORD, USER, free_port
from smbnd.cluster.model import socket_path

CHUNK = 64 * 1024
FILE_WRITE_THROUGH = 0x2
SHARE_CAP_CA, SHARE_CAP_CLUSTER = 0x10, 0x40
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NodePair:
    """Two node processes from a cluster TOML in tmp_path; unique 127.x.y.z addresses, free ports."""

    def __init__(self, tmp):
        self.tmp = tmp
        net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        self.lif = {"lif1": f"{net}.11", "lif2": f"{net}.12"}
        self.port = free_port(self.lif["lif1"])
        ic1, ic2 = f"{net}.1", f"{net}.2"
        self.state_dir = os.path.join(tmp, "cluster")
        self.config = os.path.join(tmp, "cluster.toml")
        with open(self.config, "w") as f:
            f.write(f"""
[cluster]
name = "t"
state_dir = "cluster"
smb_port = {self.port}
heartbeat_interval_ms = 100
heartbeat_misses = 5
reconnect_window = 60
[svm]
name = "SMBND"
[[node]]
name = "node1"
interconnect = "{ic1}:{_udp_port(ic1)}"
[[node]]
name = "node2"
interconnect = "{ic2}:{_udp_port(ic2)}"
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
address = "{self.lif['lif1']}"
home = "node1"
[[lif]]
name = "lif2"
address = "{self.lif['lif2']}"
home = "node2"
[[volume]]
name = "vol1"
aggregate = "aggr1"
ca = true
[[volume]]
name = "vol2"
aggregate = "aggr2"
[users]
{USER} = "{PASSWORD}"
""")
        self.procs: dict[str, subprocess.Popen] = {}
        self.ctl = {n: NodeClient(socket_path(self.state_dir, n)) for n in ("node1", "node2")}

    def start(self, node: str, *extra: str) -> str:
        log = open(os.path.join(self.tmp, f"{node}.log"), "a")
        p = subprocess.Popen([sys.executable, "-m", "smbnd.cluster.node", "--config", self.config, "--node", node,
                              "--log-level", "INFO", *extra], stdout=subprocess.PIPE, stderr=log, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.procs[node] = p
        line = p.stdout.readline()
        assert line.startswith(f"smbnd node {node} ready"), (line, self.log(node)[-3000:])
        return line

    def kill(self, node: str) -> None:
        p = self.procs.pop(node)
        os.kill(p.pid, signal.SIGKILL)          # our own child, by PID
        p.wait(10)

    def log(self, node: str) -> str:
        try:
            return open(os.path.join(self.tmp, f"{node}.log")).read()
        except OSError:
            return ""

    def stop(self) -> None:
        for node, p in list(self.procs.items()):
            if p.poll() is None:
                try:
                    self.ctl[node].call_sync("shutdown", graceful=True)
                    p.wait(10)
                except Exception:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(10)
        self.procs.clear()


@pytest.fixture
def cluster(tmp_path):
    c = NodePair(str(tmp_path))
    c.start("node1")
    c.start("node2")
    yield c
    c.stop()
    for n in ("node1", "node2"):
        assert "Traceback" not in c.log(n), c.log(n)[-4000:]


def _open_persistent(a: Cli, fn: str, guid: bytes, key: bytes):
    r = a.create(fn, [dh2q(guid, 0, persistent=True), lease_v2(key, R | W | H)], oplock=LEASE, share=7,
                 options=FILE_WRITE_THROUGH)
    assert r.ok, hex(r.status)
    assert r.dh2q()[1] == PERSISTENT and r.lease()[1] == R | W | H
    return r


def _share_caps(cli: Cli, host: str, share: str) -> int:
    req = SMB2TreeConnectRequest()
    req["buffer"] = rf"\\{host}\{share}".encode("utf-16-le")
    resp = cli.conn.receive(cli.conn.send(req, sid=cli.sess.session_id))
    tr = SMB2TreeConnectResponse()
    tr.unpack(resp["data"].get_value())
    return int(tr["capabilities"].get_value())


def _holder(c: NodePair, fn: str):
    """A client with a persistent handle + RWH lease + exclusive lock on vol1 through lif1 (node1),
    and a durable (not persistent) handle on the plain vol2 through the same LIF."""
    cg, guid, key = uuid.uuid4(), os.urandom(16), os.urandom(16)
    a = Cli(c.lif["lif1"], c.port, "vol1", guid=cg)
    r = _open_persistent(a, fn, guid, key)
    blocks = [os.urandom(CHUNK) for _ in range(4)]
    for i, b in enumerate(blocks):
        assert r.open.write(b, i * CHUNK, write_through=True) == CHUNK
    assert a.lock(r.file_id, 0, 4096, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == 0
    p = Cli(c.lif["lif1"], c.port, "vol2", guid=cg)
    pguid, pkey = os.urandom(16), os.urandom(16)
    rp = p.create("plain.txt", [dh2q(pguid), lease_v2(pkey, R | W | H)], oplock=LEASE, share=7)
    assert rp.ok and rp.dh2q() is not None and rp.dh2q()[1] == 0      # durable, not persistent
    return dict(cg=cg, guid=guid, key=key, r=r, a=a, blocks=blocks, p=p, rp=rp, pguid=pguid, pkey=pkey)


def _reclaim_on(c: NodePair, fn: str, h: dict) -> None:
    """The holder comes back through lif1 (now node2): DH2C gets everything back; the plain share's
    durable open is gone."""
    b = Cli(c.lif["lif1"], c.port, "vol1")
    try:
        assert b.create(fn, share=7).status == st.STATUS_FILE_NOT_AVAILABLE     # 3.3.5.9, until reclaimed
    finally:
        b.close()
    a2 = Cli(c.lif["lif1"], c.port, "vol1", guid=h["cg"])
    try:
        r2 = a2.create(fn, [dh2c(h["r"].file_id, h["guid"], persistent=True), lease_v2(h["key"], 0)])
        assert r2.ok, hex(r2.status)
        assert r2.action == FILE_OPENED and r2.file_id[:8] == h["r"].file_id[:8]
        assert r2.oplock == LEASE and r2.lease()[:2] == (h["key"], R | W | H)
        assert r2.eof == len(h["blocks"]) * CHUNK
        for i, blk in enumerate(h["blocks"]):
            assert r2.open.read(i * CHUNK, CHUNK) == blk
        assert a2.lock(r2.file_id, 0, 4096, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY) == st.STATUS_LOCK_NOT_GRANTED
        assert a2.lock(r2.file_id, 0, 4096, LOCK_UNLOCK) == 0
        assert r2.open.write(b"after", len(h["blocks"]) * CHUNK, write_through=True) == 5
        # non-CA share: the durable open did not survive the move (a filer loses it)
        p2 = Cli(c.lif["lif1"], c.port, "vol2", guid=h["cg"])
        try:
            rp2 = p2.create("plain.txt", [dh2c(h["rp"].file_id, h["pguid"]), lease_v2(h["pkey"], 0)])
            assert rp2.status == st.STATUS_OBJECT_NAME_NOT_FOUND, hex(rp2.status)
            assert p2.create("plain.txt", share=7).ok        # and nothing blocks the file
        finally:
            p2.close()
        r2.open.close()
    finally:
        a2.close()


def test_lif_move_planned(cluster):
    c, fn = cluster, "vm-disk.vhdx"
    n1, n2 = c.ctl["node1"], c.ctl["node2"]
    assert n1.call_sync("ping")["node"] == "node1"
    assert n1.call_sync("status")["lifs"] == ["lif1"] and n2.call_sync("status")["lifs"] == ["lif2"]
    h = _holder(c, fn)
    # the store is per (volume, LIF), in the aggregate's state directory (outside every share)
    store = os.path.join(c.tmp, "aggr1", ".smbnd-state", "vol1@lif1.handles.sqlite")
    assert os.path.exists(store)
    s1 = n1.call_sync("status")
    assert s1["opens"]["persistent"] == 1 and s1["sessions"] >= 2
    rel = n1.call_sync("release_lif", lif="lif1")
    assert rel["dropped"] == 1
    assert n1.call_sync("status")["lifs"] == [] and n1.call_sync("status")["opens"]["persistent"] == 0
    with pytest.raises(OSError):                 # nobody answers on lif1 between the two steps
        socket.create_connection((c.lif["lif1"], c.port), timeout=2).close()
    hosted = n2.call_sync("host_lif", lif="lif1", timeout=30)
    assert hosted["loaded"] == 1 and hosted["ms"] >= 0
    s2 = n2.call_sync("status")
    assert s2["lifs"] == ["lif1", "lif2"]
    [d] = s2["disconnected"]
    assert d["lif"] == "lif1" and d["share"] == "vol1" and d["path"] == fn and 50 < d["remaining_s"] <= 60
    h["a"].drop()
    h["p"].drop()
    _reclaim_on(c, fn, h)
    assert n2.call_sync("status")["opens"]["persistent"] == 0     # closed: gone
    # and it moves back (giveback): node1 hosts lif1 again, nothing left to load
    assert n2.call_sync("release_lif", lif="lif1")["dropped"] == 0
    assert n1.call_sync("host_lif", lif="lif1")["loaded"] == 0


def test_lif_move_after_sigkill(cluster):
    c, fn = cluster, "db.mdf"
    h = _holder(c, fn)
    c.kill("node1")                              # the store survives a SIGKILL
    h["a"].drop()
    h["p"].drop()
    hosted = c.ctl["node2"].call_sync("host_lif", lif="lif1", timeout=30)
    assert hosted["loaded"] == 1
    _reclaim_on(c, fn, h)
    # node1 restarted waiting for giveback: hosts nothing, answers its control socket
    line = c.start("node1", "--waiting-giveback")
    assert "lifs -" in line
    st1 = c.ctl["node1"].call_sync("status")
    assert st1["lifs"] == [] and st1["waiting_giveback"] is True
    assert st1["heartbeat"]["partner"] == "node2"


def test_tree_connect_caps(cluster):
    c = cluster
    a = Cli(c.lif["lif2"], c.port, "vol2")
    try:
        assert _share_caps(a, c.lif["lif2"], "vol1") & (SHARE_CAP_CA | SHARE_CAP_CLUSTER) == SHARE_CAP_CA | \
            SHARE_CAP_CLUSTER
        assert _share_caps(a, c.lif["lif2"], "vol2") & (SHARE_CAP_CA | SHARE_CAP_CLUSTER) == SHARE_CAP_CLUSTER
    finally:
        a.close()


def test_storage_faults_and_freeze(cluster):
    c = cluster
    n2 = c.ctl["node2"]                          # lif2 is on node2; vol1 is on aggr1, vol2 on aggr2
    a = Cli(c.lif["lif2"], c.port, "vol1")
    p = Cli(c.lif["lif2"], c.port, "vol2")
    try:
        r = a.create("f.bin", share=7)
        assert r.ok and r.open.write(b"x" * 4096, 0) == 4096
        rp = p.create("g.bin", share=7)
        assert rp.ok and rp.open.write(b"y" * 10, 0) == 10
        # fail: backing I/O of aggr1's volumes errors; aggr2 unaffected
        n2.call_sync("storage_fault", aggr="aggr1", mode="fail")
        with pytest.raises(SMBResponseException) as e:
            r.open.read(0, 4096)
        assert e.value.status == st.STATUS_UNEXPECTED_IO_ERROR
        assert a.create("other.bin", share=7).status == st.STATUS_UNEXPECTED_IO_ERROR
        assert rp.open.read(0, 10) == b"y" * 10
        assert n2.call_sync("status")["storage_faults"] == {"aggr1": {"mode": "fail", "ms": 0}}
        n2.call_sync("storage_fault", aggr="aggr1", mode="clear")
        assert r.open.read(0, 4096) == b"x" * 4096
        # slow: added latency per request
        n2.call_sync("storage_fault", aggr="aggr1", mode="slow", ms=300)
        t = time.monotonic()
        assert r.open.read(0, 4096) == b"x" * 4096
        assert time.monotonic() - t >= 0.29
        t = time.monotonic()
        assert rp.open.read(0, 10) == b"y" * 10
        assert time.monotonic() - t < 0.25
        n2.call_sync("storage_fault", aggr="aggr1", mode="clear")
        # freeze: requests wait (no error, no timeout) until thaw; the other aggregate goes on
        n2.call_sync("freeze", aggr="aggr1")
        out: dict = {}

        def reader():
            t0 = time.monotonic()
            out["data"] = r.open.read(0, 4096)
            out["s"] = time.monotonic() - t0
        th = threading.Thread(target=reader)
        th.start()
        time.sleep(1.0)
        assert "data" not in out
        t = time.monotonic()
        assert rp.open.read(0, 10) == b"y" * 10          # aggr2's volume is not frozen
        assert time.monotonic() - t < 0.5
        assert n2.call_sync("status")["frozen"] == ["aggr1"]
        n2.call_sync("thaw", aggr="aggr1")
        th.join(10)
        assert out["data"] == b"x" * 4096 and out["s"] >= 0.9
        r.open.close()
        rp.open.close()
    finally:
        a.close()
        p.close()


def test_control_errors(cluster):
    n1 = cluster.ctl["node1"]
    from smbnd.cluster.nodectl import NodeError
    with pytest.raises(NodeError):
        n1.call_sync("host_lif", lif="nope")
    with pytest.raises(NodeError):
        n1.call_sync("frobnicate")
    with pytest.raises(NodeError):
        n1.call_sync("storage_fault", aggr="aggr1", mode="melt")
    assert n1.call_sync("flush")["stores"] >= 0
