"""Event intake of the witness (docs/cluster-design.md): the control API stream
(GET /v1/events?since=N&follow=1, chunked JSON lines, bearer token) and the events.jsonl tail,
applied once each by seq; state changes become MS-SWN notifications (witness/node.py)."""
import asyncio
import json
import os
from types import SimpleNamespace

from smbnd.cluster.model import Placement, cluster_from_doc
from witness.events import follow_events
from witness.node import WitnessNode


def _cluster(tmp_path):
    doc = {"cluster": {"state_dir": str(tmp_path / "state")}, "svm": {"name": "SMBND"},
           "node": [{"name": "a"}, {"name": "b"}], "ha_pair": [{"nodes": ["a", "b"]}],
           "aggregate": [{"name": "ag", "home": "a", "path": str(tmp_path / "ag")}],
           "lif": [{"name": "la", "address": "127.0.0.201", "home": "a"},
                   {"name": "lb", "address": "127.0.0.202", "home": "b"}],
           "volume": [{"name": "v", "aggregate": "ag"}], "users": {"u": "p"}}
    return cluster_from_doc(doc)


def test_api_stream_with_token_then_dedup(tmp_path):
    c = _cluster(tmp_path)
    os.makedirs(c.state_dir)
    seen, requests = [], []
    events = [{"seq": 1, "type": "node_down", "node": "a"}, {"seq": 2, "type": "node_up", "node": "a"},
              {"seq": 1, "type": "node_down", "node": "a"}]

    async def handler(reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        requests.append(head)
        if "Authorization: Bearer s3cret" not in head:
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for ev in events:
                body = json.dumps(ev).encode() + b"\n"
                writer.write(b"%x\r\n%s\r\n" % (len(body), body))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def run():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        with open(os.path.join(c.state_dir, "api.json"), "w") as f:
            json.dump({"url": f"http://127.0.0.1:{port}", "pid": 1}, f)
        with open(os.path.join(c.state_dir, "token"), "w") as f:
            f.write("s3cret\n")
        node = SimpleNamespace(c=c, node="b", last_seq=0, event_source="none")

        def apply(ev):
            if ev["seq"] > node.last_seq:
                node.last_seq = ev["seq"]
                seen.append((ev["seq"], ev["type"]))
        node.apply_event = apply
        task = asyncio.create_task(follow_events(node))
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        srv.close()
        return node
    node = asyncio.run(run())
    assert seen == [(1, "node_down"), (2, "node_up")]
    assert "GET /v1/events?since=0&follow=1 HTTP/1.1" in requests[0] and node.event_source == "api"


def test_node_maps_events_to_interface_states(tmp_path):
    """Without a running loop for listeners: reconcile only (node b's view)."""
    c = _cluster(tmp_path)
    w = WitnessNode(c, "b")
    w.reconcile()
    svc = w.service
    assert [(i.address, i.state, i.local) for i in svc.interfaces] == [("127.0.0.201", 1, False),
                                                                      ("127.0.0.202", 1, True)]
    w.apply_event({"seq": 1, "type": "node_down", "node": "a"})
    assert svc.find_interface("127.0.0.201").state == 0xFF
    w.apply_event({"seq": 1, "type": "node_up", "node": "a"})          # replayed seq: ignored
    assert svc.find_interface("127.0.0.201").state == 0xFF
    pl = Placement.from_json(c.initial_placement().to_json())
    pl.lif_node["la"], pl.epoch = "b", 3
    w.apply_event({"seq": 2, "type": "placement", "placement": json.loads(pl.to_json())})
    assert [(i.state, i.local) for i in svc.interfaces] == [(1, True), (1, True)]      # taken over by b
    assert w.hosted_addresses() == ["127.0.0.201", "127.0.0.202"]
