"""The control API (in-process, fake supervisor) and the `smbnd` cluster CLI against a real cluster."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import time
import urllib.request

import pytest

from smbnd.cluster.api import ControlApi, openapi
from smbnd.cluster.events import EventLog
from smbnd.cluster.model import Placement
from smbnd.cluster.ops import OpError
from test_cluster_ops import ROOT, Cluster, Holder

TOKEN = "t0ken"


class FakeSup:
    def __init__(self, tmp_path):
        self.token = TOKEN
        self.events = EventLog(str(tmp_path / "events.jsonl"))
        self.placement = Placement(lif_node={"lif1": "node1"}, epoch=3)
        self.ops: list = []
        self.stopped = False

    def status(self):
        return {"cluster": "c", "nodes": []}

    async def run_op(self, name, **args):
        self.ops.append((name, args))
        if args.get("node") == "bad":
            raise OpError("unknown node 'bad'", 404)
        return {"ok": True, "ms": 1, "events": []}

    def request_shutdown(self):
        self.stopped = True


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _req(port, method, path, body=None, token=TOKEN):
    def go():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        hdrs = {"Authorization": f"Bearer {token}"} if token else {}
        c.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data
    return asyncio.to_thread(go)


async def test_api_auth_routes_errors_and_event_stream(tmp_path):
    sup = FakeSup(tmp_path)
    port = _free()
    api = ControlApi(sup, "127.0.0.1", port)
    await api.start()
    try:
        assert (await _req(port, "GET", "/v1/status", token=None))[0] == 401
        assert (await _req(port, "GET", "/v1/status", token="wrong"))[0] == 401
        code, data = await _req(port, "GET", "/v1/status")
        assert code == 200 and json.loads(data)["cluster"] == "c"
        code, data = await _req(port, "GET", "/v1/placement")
        assert json.loads(data)["epoch"] == 3
        assert (await _req(port, "GET", "/openapi.json", token=None))[0] == 200
        code, data = await _req(port, "POST", "/v1/takeover", {"node": "node1"})
        assert code == 200 and json.loads(data)["ok"] is True and sup.ops[-1] == ("takeover", {"node": "node1"})
        assert (await _req(port, "POST", "/v1/takeover", {}))[0] == 400
        code, data = await _req(port, "POST", "/v1/takeover", {"node": "bad"})
        assert code == 404 and "unknown node" in json.loads(data)["error"]
        assert (await _req(port, "POST", "/v1/nope", {}))[0] == 404
        assert (await _req(port, "GET", "/v1/takeover"))[0] == 405
        assert (await _req(port, "POST", "/v1/fault", {"kind": "explode"}))[0] == 400
        code, _ = await _req(port, "POST", "/v1/fault", {"kind": "partition", "target": "node1",
                                                         "direction": "a-to-b"})
        assert code == 200 and sup.ops[-1] == ("fault", {"kind": "partition", "target": "node1",
                                                         "direction": "a-to-b", "ms": 0, "seconds": 0.0})
        sup.events.emit("cluster_up")
        sup.events.emit("node_up", node="node1", pid=5)
        code, data = await _req(port, "GET", "/v1/events?since=1")
        assert [json.loads(x)["seq"] for x in data.splitlines()] == [2]

        def follow():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/v1/events?since=0&follow=1", headers={"Authorization": f"Bearer {TOKEN}"})
            r = c.getresponse()
            assert r.getheader("Transfer-Encoding") == "chunked"
            got = [json.loads(r.readline()) for _ in range(3)]
            c.close()
            return got
        task = asyncio.create_task(asyncio.to_thread(follow))
        await asyncio.sleep(0.3)
        sup.events.emit("lif_down", lif="lif1", address="127.0.0.11")
        got = await asyncio.wait_for(task, 10)
        assert [e["type"] for e in got] == ["cluster_up", "node_up", "lif_down"]
        assert (await _req(port, "POST", "/v1/shutdown", {}))[0] == 200 and sup.stopped
    finally:
        await api.stop()
        sup.events.close()


async def test_api_mgmt_down_pauses_listener(tmp_path):
    sup = FakeSup(tmp_path)
    port = _free()
    api = ControlApi(sup, "127.0.0.1", port)
    await api.start()
    try:
        api.pause(0.5)
        assert (await _req(port, "GET", "/v1/status"))[0] == 200        # this response still goes out
        await asyncio.sleep(0.1)
        with pytest.raises(OSError):
            await _req(port, "GET", "/v1/status")
        for _ in range(50):
            await asyncio.sleep(0.1)
            if api.listening:
                break
        assert (await _req(port, "GET", "/v1/status"))[0] == 200
        assert sup.events.since(0)[-1]["type"] == "fault_cleared"
    finally:
        await api.stop()
        sup.events.close()


def test_openapi_document_is_saved():
    with open(os.path.join(ROOT, "docs", "control-api.json")) as f:
        assert json.load(f) == json.loads(json.dumps(openapi()))
    paths = openapi()["paths"]
    for p in ("/v1/status", "/v1/placement", "/v1/events", "/v1/takeover", "/v1/giveback", "/v1/lif/migrate",
              "/v1/lif/revert", "/v1/aggr/relocate", "/v1/vol/move", "/v1/node/upgrade", "/v1/fault",
              "/v1/shutdown"):
        assert p in paths


def test_cli_against_a_real_cluster(tmp_path):
    c = Cluster(tmp_path, metrics=True)
    try:
        r = c.cli("cluster", "up")
        assert "smbclient //" in r.stdout and f"-p {c.port}" in r.stdout
        c.api = __import__("test_cluster_ops")._api(c.cfg.state_dir)
        c.pids.add(c.api.pid)
        c._note_pids()
        assert os.stat(os.path.join(c.cfg.state_dir, "token")).st_mode & 0o777 == 0o600
        assert "already running" in c.cli("cluster", "up", check=False).stderr
        out = c.cli("status").stdout
        for word in ("node1", "node2", "lif1", "aggr1", "vol1", "disconnected opens", "witness"):
            assert word in out
        h = Holder(c)
        st = json.loads(c.cli("status", "--json").stdout)
        assert st["opens"]["node1"]["persistent"] == 1 and st["sessions"]["node1"] >= 1
        assert "takeover of node1: done" in c.cli("takeover", "node1").stdout
        h.cli.drop()
        st = json.loads(c.cli("status", "--json").stdout)
        assert [d["lif"] for d in st["disconnected"]] == ["lif1"] and st["disconnected"][0]["remaining_s"] > 0
        assert c.cli("takeover", "node1", check=False).returncode == 1
        c.cli("giveback", "node1")
        c.cli("lif", "migrate", "lif1", "node2")
        c.cli("lif", "revert", "lif1")
        c.cli("aggr", "relocate", "aggr1", "node2")
        c.cli("aggr", "relocate", "aggr1", "node1")
        c.cli("fault", "storage-slow", "aggr2", "50")
        c.cli("fault", "storage-ok", "aggr2")
        c.cli("fault", "partition", "node1", "--direction", "b-to-a")
        c.cli("fault", "heal", "node1")
        h.reclaim()
        h.close()
        evs = [json.loads(x) for x in c.cli("events", "--since", "0").stdout.splitlines()]
        types = [e["type"] for e in evs]
        for t in ("cluster_up", "node_up", "takeover_start", "takeover_done", "giveback_done", "lif_moved",
                  "aggr_relocated", "fault", "fault_cleared", "placement"):
            assert t in types, t
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{c.cfg.metrics_port}/metrics", timeout=10).read().decode()
        assert 'smbnd_lif_current_node{lif="lif1",node="node1"} 1.0' in metrics
        assert "smbnd_takeover_seconds_count" in metrics and 'smbnd_opens{kind="persistent"' in metrics
        pids = [n["pid"] for n in c.status()["nodes"]] + [c.api.pid]
        assert "down" in c.cli("cluster", "down").stdout
        for _ in range(100):
            if not any(os.path.exists(f"/proc/{p}") for p in pids):
                break
            time.sleep(0.1)
        assert not any(os.path.exists(f"/proc/{p}") for p in pids)
        assert not os.path.exists(os.path.join(c.cfg.state_dir, "api.json"))
        assert c.cli("status", check=False).returncode == 1
    finally:
        c.down()


async def test_event_log_seq_persistence_and_subscribers(tmp_path):
    p = str(tmp_path / "events.jsonl")
    ev = EventLog(p)
    q = ev.subscribe()
    a = ev.emit("cluster_up")
    b = ev.emit("node_up", node="node1", pid=1)
    assert (a["seq"], b["seq"]) == (1, 2) and b["node"] == "node1"
    assert (await q.get())["seq"] == 1 and (await q.get())["type"] == "node_up"
    with pytest.raises(ValueError):
        ev.emit("no_such_type")
    ev.close()
    assert await q.get() is None                      # subscribers are told the log closed
    with open(p, "a") as f:
        f.write('{"seq": 3, "ts": 1, "type": "torn')     # a torn last line after a crash
    ev2 = EventLog(p)
    assert ev2.seq == 2 and [e["seq"] for e in ev2.since(1)] == [2]
    assert ev2.emit("cluster_down")["seq"] == 3
    ev2.close()
    assert [e["seq"] for e in EventLog(p).since(0)] == [1, 2, 3]
