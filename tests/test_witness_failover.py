"""Witness-driven failover on a real cluster (issue 5 acceptance, "Drill (with the cluster issue)").

A private 2-node cluster (the Cluster harness of test_cluster_ops.py: free ports, random 127.x
addresses). The reference witness client (interop/witness_client.py) registers the Windows way
(MS-SWN 3.2.4.1, notes A): endpoint-mapper lookup (ept_map) on the SMB connection's IP (lif1),
GetInterfaceList there, RegisterEx (v2) on the INTERFACE_WITNESS entry -- the partner node's LIF,
lif2 -- then the AsyncNotify loop (3.2.4.2). Beside it an smbprotocol client holds a persistent
handle (DH2Q PERSISTENT + RWH lease + a byte-range lock) on the CA share through lif1.

a. planned ``lif migrate lif1 node2``: CLIENT_MOVE (3.1.6.2) arrives; the client reconnects to the
   address it names and reclaims the handle with DH2C (MS-SMB2 3.3.5.9.12), data verified.
b. ``fault kill node1``: RESOURCE_CHANGE UNAVAILABLE (3.1.6.1) for lif1 arrives from node2's
   witness; after the takeover, RESOURCE_CHANGE AVAILABLE; the handle is reclaimed on node2.

Latencies are printed (-s), never asserted (speed targets live in bench/witness_latency.py).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from test_cluster_ops import Cluster, Holder, _placement, _report  # the harness (same tests/ dir)

from interop.witness_client import Notification, WitnessClient, WitnessError
from witness import ndr as n

NETNAME = "SMBND"


# ============================================================================ event ordering (no cluster)
def test_notifications_follow_event_order_not_placement_file(tmp_path):
    """The supervisor writes placement.json (takeover: lif1 on node2) a few ms before the events
    node_down .. lif_moved reach the witness. The witness must follow the events: UNAVAILABLE at
    node_down, AVAILABLE at lif_moved (MS-SWN 3.1.6.1), never a CLIENT_MOVE for a fenced node's
    LIF; and a planned move's CLIENT_MOVE (3.1.6.2) only once lif_moved says the new node serves it."""
    from smbnd.cluster.model import Placement, cluster_from_doc
    from witness.node import WitnessNode
    c = cluster_from_doc({
        "cluster": {"state_dir": str(tmp_path / "state")}, "svm": {"name": NETNAME},
        "node": [{"name": "a"}, {"name": "b"}], "ha_pair": [{"nodes": ["a", "b"]}],
        "aggregate": [{"name": "ag", "home": "a", "path": str(tmp_path / "ag")}],
        "lif": [{"name": "la", "address": "127.0.0.201", "home": "a"},
                {"name": "lb", "address": "127.0.0.202", "home": "b"}],
        "volume": [{"name": "v", "aggregate": "ag"}], "users": {"u": "p"}})
    os.makedirs(c.state_dir)
    w = WitnessNode(c, "b")
    w.reconcile()
    w.event_source = "api"
    seen = []
    svc = w.service
    set_state, move = svc.set_interface_state, svc.client_move
    svc.set_interface_state = lambda addr, state: (seen.append(("state", addr, state)), set_state(addr, state))[1]
    svc.client_move = lambda regs, addrs: (seen.append(("move", addrs)), move(regs, addrs))[1]

    def commit(epoch, **lif_node):
        pl = Placement.from_json(c.initial_placement().to_json())
        pl.lif_node.update(lif_node)
        pl.epoch, pl.down_nodes = epoch, ["a"] if lif_node.get("la") == "b" and epoch == 1 else []
        pl.save(os.path.join(c.state_dir, "placement.json"))
        return json.loads(pl.to_json())

    # unplanned takeover of a: the file is already committed when node_down arrives
    pl1 = commit(1, la="b")
    assert not w._reload_placement()                     # events flow: the file waits for the stream
    w.apply_event({"seq": 1, "type": "node_down", "node": "a", "reason": "killed"})
    assert seen == [("state", "127.0.0.201", n.STATE_UNAVAILABLE)]
    for i, ev in enumerate([{"type": "node_fenced", "node": "a"},
                            {"type": "takeover_start", "node": "a", "by": "b", "planned": False},
                            {"type": "lif_moving", "lif": "la", "from_node": "a", "to_node": "b"},
                            {"type": "placement", "placement": pl1}], start=2):
        w.apply_event({"seq": i, **ev})
    assert len(seen) == 1                                # not AVAILABLE before node b serves la
    w.apply_event({"seq": 6, "type": "lif_moved", "lif": "la", "from_node": "a", "to_node": "b"})
    assert seen[1:] == [("state", "127.0.0.201", n.STATE_AVAILABLE)]
    # giveback of a (a planned move): CLIENT_MOVE only at lif_moved
    pl2 = commit(2)
    for i, ev in enumerate([{"type": "node_up", "node": "a"}, {"type": "giveback_start", "node": "a"},
                            {"type": "lif_moving", "lif": "la", "from_node": "b", "to_node": "a"},
                            {"type": "placement", "placement": pl2}], start=7):
        w.apply_event({"seq": i, **ev})
        assert not w._reload_placement()
    assert len(seen) == 2
    w.apply_event({"seq": 11, "type": "lif_moved", "lif": "la", "from_node": "b", "to_node": "a"})
    assert seen[2:] == [("move", [("127.0.0.201", 0)])]


class Watcher:
    """The reference client's AsyncNotify loop in a thread; every notification is kept with its
    arrival time (monotonic and wall clock). ERROR_NOT_FOUND (forced unregister, notes A) ->
    UnRegister + register again from GetInterfaceList, as Windows Server 2022 clients do."""

    def __init__(self, c: Cluster, lif: str = "lif1", share: str = "vol1"):
        self.c, self.share = c, share
        user, password = next(iter(c.cfg.users.items()))
        # no witness_port: the port comes from the endpoint mapper on the SMB IP (C706 ept_map)
        self.client = WitnessClient(c.lif[lif], NETNAME, user, password, epm_port=c.cfg.port("epm"),
                                    client_name="wclient.test", keepalive=30, call_timeout=60.0)
        self.notes: list[tuple[float, float, Notification]] = []     # (monotonic, wall, note)
        self.registrations: list[str] = []
        self.errors: list[str] = []
        self.cv = threading.Condition()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.client.on("*", self._arrived)

    def _arrived(self, note: Notification) -> None:
        with self.cv:
            self.notes.append((note.received, time.time(), note))
            self.cv.notify_all()

    def register(self) -> str:
        where = self.client.register(share=self.share)
        self.registrations.append(where)
        return where

    def start(self) -> "Watcher":
        self.register()
        self.thread = threading.Thread(target=self._run, daemon=True, name="witness-watcher")
        self.thread.start()
        return self

    def _run(self) -> None:
        for _ in range(1000):                       # bounded: re-registrations
            if self.stop.is_set():
                return
            try:
                if self.client.handle is None:
                    self.register()
                for _note in self.client.notifications(reregister=False):    # MS-SWN 3.2.4.2
                    if self.stop.is_set():
                        return
            except WitnessError as e:
                if e.code == n.ERROR_NOT_FOUND and not self.stop.is_set():
                    self.client.unregister()
                    self.client.close()
                    continue
                self.errors.append(str(e))
            except Exception as e:  # noqa: BLE001 - connection lost: register again
                if self.stop.is_set():
                    return
                self.errors.append(f"{type(e).__name__}: {e}")
                self.client.close()
            self.stop.wait(0.2)

    def wait(self, kind: str, after: float, timeout: float = 30.0, pred=lambda note: True):
        """The first notification of ``kind`` that arrived after monotonic time ``after``."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for mono, wall, note in self.notes:
                    if note.kind == kind and mono >= after and pred(note):
                        return mono, wall, note
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} within {timeout} s: {[x[2] for x in self.notes]} "
                                         f"errors={self.errors}")
                self.cv.wait(left)

    def close(self) -> None:
        self.stop.set()
        dce = self.client._dce
        if dce is not None:
            try:
                dce.get_rpc_transport().get_socket().shutdown(socket.SHUT_RDWR)   # wakes the blocked recv
            except Exception:  # noqa: BLE001
                pass
        if self.thread:
            self.thread.join(10)
        self.client.close()


def wait_witnesses(c: Cluster, timeout: float = 30.0) -> None:
    """The witness processes start beside the nodes: wait until each LIF answers on the endpoint
    mapper and witness ports (each node's witness listens on the LIFs it hosts)."""
    want = [(c.lif[lif], c.cfg.port(k)) for lif in ("lif1", "lif2") for k in ("epm", "witness")]
    deadline = time.monotonic() + timeout
    while want and time.monotonic() < deadline:
        try:
            socket.create_connection(want[0], timeout=1).close()
            want.pop(0)
        except OSError:
            time.sleep(0.1)
    assert not want, f"witness not listening on {want}"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.up()
        wait_witnesses(c)
        yield c
    finally:
        c.down()
    assert "Traceback" not in c.logs, c.logs[-4000:]


def _registered_windows_way(c: Cluster, w: Watcher) -> None:
    # GetInterfaceList on the SMB IP (node1's witness): INTERFACE_WITNESS only on lif2 (3.1.4.1)
    entries = {e.address: e for e in w.client.get_interface_list()}
    assert set(entries) == {c.lif["lif1"], c.lif["lif2"]}
    assert all(e.group == NETNAME and e.state == n.STATE_AVAILABLE for e in entries.values())
    assert not entries[c.lif["lif1"]].flags & n.IF_WITNESS and entries[c.lif["lif2"]].usable
    assert w.registrations == [c.lif["lif2"]] and w.client.witness_address == c.lif["lif2"]
    regs = [r for r in c.status()["witness"] if r["client"] == "wclient.test"]
    assert len(regs) == 1, regs
    r = regs[0]
    assert (r["node"], r["net_name"], r["ip_address"], r["share"], r["version"]) == \
        ("node2", NETNAME, c.lif["lif1"], "vol1", "0x00020000")


def _wait_async_pending(c: Cluster, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["client"] == "wclient.test" and r["async_notify_pending"] for r in c.status()["witness"]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no AsyncNotify pending: {c.status()['witness']}")


def test_lif_migrate_client_move(cluster):
    c = cluster
    h = Holder(c)
    w = Watcher(c).start()
    try:
        _registered_windows_way(c, w)
        _wait_async_pending(c)
        seq = c.last_seq()
        t0 = time.monotonic()
        m = c.post("/v1/lif/migrate", {"lif": "lif1", "node": "node2"})
        mono, wall, note = w.wait("client-move", t0, timeout=30)
        latency = mono - t0
        # CLIENT_MOVE (2.2.2.5 / 3.1.6.2): one IPADDR_INFO_LIST naming lif1's address (now on node2), IPv4, not OFFLINE
        assert note.message_type == n.CLIENT_MOVE and not note.resources
        assert note.addresses == [(c.lif["lif1"], n.IPADDR_V4)] and note.online_addresses() == [c.lif["lif1"]]
        moved = c.wait_event("lif_moved", seq, lif="lif1", to_node="node2")
        assert _placement(c)["lif_node"]["lif1"] == "node2"
        # sent once node2 serves the address (lif_moved), not at the earlier placement commit
        assert wall >= moved["ts"], (wall, moved)
        # the SMB client follows the notification: reconnect to the named address, DH2C, verify, write
        h.addr = note.online_addresses()[0]
        reclaim = h.reclaim()
        h.verify()
        h.close()
        _report("witness CLIENT_MOVE (lif migrate)", command_to_client_move_ms=round(latency * 1000, 1),
                migrate_ms=m["ms"], lif_moved_event_to_notification_ms=round((wall - moved["ts"]) * 1000, 1),
                reclaim_after_notification_s=round(reclaim, 3))
    finally:
        w.close()


def test_kill_resource_change_unavailable(cluster):
    c = cluster
    h = Holder(c)
    w = Watcher(c).start()
    try:
        _registered_windows_way(c, w)
        _wait_async_pending(c)
        seq = c.last_seq()
        t0 = time.monotonic()
        c.post("/v1/fault", {"kind": "kill", "target": "node1"})
        mono, wall, note = w.wait("resource-change", t0, timeout=30, pred=lambda x: x.unavailable)
        # RESOURCE_CHANGE (2.2.2.4): ResourceName = the registered IP (lif1), UNAVAILABLE, from node2's witness
        assert note.message_type == n.RESOURCE_CHANGE
        assert note.resources == [(c.lif["lif1"], n.RESOURCE_STATE_UNAVAILABLE)]
        assert w.client.witness_address == c.lif["lif2"]
        f = c.wait_event("fault", seq, kind="kill", target="node1")
        down = c.wait_event("node_down", seq, node="node1")
        done = c.wait_event("takeover_done", seq, node="node1", planned=False)
        # then AVAILABLE (3.1.6.1) from the same registration: takeover takes < the 5 s forced-unregister delay
        mono2, wall2, _avail = w.wait("resource-change", mono, timeout=30,
                                      pred=lambda x: (c.lif["lif1"], n.RESOURCE_STATE_AVAILABLE) in x.resources)
        moved = c.wait_event("lif_moved", seq, lif="lif1", to_node="node2")
        assert wall2 >= moved["ts"], (wall2, moved)        # AVAILABLE once node2 serves lif1
        detection_s = c.cfg.heartbeat_interval_ms * c.cfg.heartbeat_misses / 1000
        reclaim = h.reclaim()            # same address, now served by node2: DH2C, lock back, data verified
        h.verify()
        h.close()
        _report("witness RESOURCE_CHANGE (kill node1)",
                kill_to_unavailable_ms=round((mono - t0) * 1000, 1),
                fault_event_to_unavailable_ms=round((wall - f["ts"]) * 1000, 1),
                node_down_event_after_kill_ms=round((down["ts"] - f["ts"]) * 1000, 1),
                heartbeat_detection_ms=round(detection_s * 1000),
                unavailable_minus_detection_ms=round((mono - t0 - detection_s) * 1000, 1),
                kill_to_takeover_done_ms=round((done["ts"] - f["ts"]) * 1000, 1),
                kill_to_available_ms=round((mono2 - t0) * 1000, 1),
                reclaim_s=round(reclaim, 3))
    finally:
        w.close()
