"""Heartbeat: the sans-I/O monitor (fake clock) and the asyncio glue over real UDP on loopback."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from smbnd.cluster.faults import PartitionTracker, judge, suspects
from smbnd.cluster.heartbeat import Heartbeat, HeartbeatMonitor, decode, encode


def _pair(interval=200, misses=5, now=0.0):
    a = HeartbeatMonitor("node1", "node2", interval, misses, now, epoch=1)
    b = HeartbeatMonitor("node2", "node1", interval, misses, now, epoch=7)
    return a, b


def test_codec_roundtrip_and_garbage():
    assert decode(encode("n1", 3, 9)) == {"node": "n1", "seq": 3, "epoch": 9}
    for bad in (b"", b"junk", b"SMBNDHB1{", b"SMBNDHB1[]", b"SMBNDHB1" + b'{"node":1,"seq":1,"epoch":1}',
                b"SMBNDHB1" + b"x" * 600):
        assert decode(bad) is None


def test_alive_grace_then_dead_after_interval_times_misses():
    a, _ = _pair()
    assert a.alive(0.0) and a.alive(0.999)
    assert not a.alive(1.0)                       # 200 ms x 5 without a datagram
    assert a.view(1.0)["last_seen_ms_ago"] is None


def test_exchange_keeps_alive_and_loss_kills():
    a, b = _pair()
    t = 0.0
    for _ in range(20):                            # 4 s of regular exchange
        assert b.receive(t, a.next_datagram(t))
        assert a.receive(t, b.next_datagram(t))
        t += 0.2
    assert a.alive(t) and b.alive(t)
    v = a.view(t)
    assert v["sent"] == 20 and v["received"] == 20 and v["partner_alive"] and v["last_seen_ms_ago"] == 200
    # node2 stops sending: node1 declares it dead exactly interval*misses after the last datagram
    last = t - 0.2
    assert a.alive(last + 0.99) and not a.alive(last + 1.01)


def test_rejects_foreign_duplicate_and_reordered():
    a, b = _pair()
    d1, d2 = b.next_datagram(0.0), b.next_datagram(0.2)
    assert a.receive(0.2, d2)
    assert not a.receive(0.3, d1)                 # older seq of the same epoch
    assert not a.receive(0.3, d2)                 # duplicate
    assert not a.receive(0.3, encode("node3", 99, 1))
    assert a.rejected == 3 and a.received == 1
    # a restarted partner (new epoch) starts at seq 1 again and is accepted
    assert a.receive(0.4, encode("node2", 1, 8))


def test_faults_drop_in_and_out():
    a, b = _pair()
    a.set_fault(drop_in=False, drop_out=True)
    assert a.next_datagram(0.0) is None and a.dropped_out == 1 and a.sent == 0
    assert a.view(0.0)["drop_out"] and not a.view(0.0)["drop_in"]
    a.set_fault(drop_in=True, drop_out=False)
    assert not a.receive(0.1, b.next_datagram(0.1)) and a.dropped_in == 1
    assert not a.alive(1.0)
    a.set_fault(False, False)
    assert a.receive(1.1, b.next_datagram(1.1)) and a.alive(1.1)


def test_send_schedule():
    a, _ = _pair()
    assert a.send_due(0.0)
    a.next_datagram(0.0)
    assert not a.send_due(0.1) and a.send_due(0.2)
    assert a.seconds_until_send(0.05) == pytest.approx(0.15)


def test_no_partner_is_never_alive():
    m = HeartbeatMonitor("solo", None, 200, 5, 0.0)
    assert not m.alive(0.0) and m.next_datagram(0.0) is None


def _free_udp_port(host="127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def _wait(pred, limit=5.0, step=0.02) -> float:
    """Seconds until pred() held (bounded); raises on timeout."""
    t0 = time.monotonic()
    for _ in range(int(limit / step)):
        if pred():
            return time.monotonic() - t0
        await asyncio.sleep(step)
    raise AssertionError("condition not reached")


async def test_real_udp_pair_detects_loss_and_partition():
    pa, pb = _free_udp_port(), _free_udp_port()
    a = Heartbeat("node1", ("127.0.0.1", pa), "node2", ("127.0.0.1", pb), 50, 4, epoch=1)
    b = Heartbeat("node2", ("127.0.0.1", pb), "node1", ("127.0.0.1", pa), 50, 4, epoch=1)
    await a.start()
    await b.start()
    try:
        await _wait(lambda: a.view()["received"] >= 3 and b.view()["received"] >= 3)
        assert a.alive() and b.alive()
        # cut node1 -> node2 only: node2 loses node1, node1 still hears node2
        a.set_fault(drop_in=False, drop_out=True)
        took = await _wait(lambda: not b.alive())
        assert a.alive()
        print(f"one-way cut detected after {took * 1000:.0f} ms (timeout 200 ms)")
        a.set_fault(False, False)
        await _wait(lambda: b.alive())
        # node2 stops entirely
        await b.stop()
        await _wait(lambda: not a.alive())
        assert a.view()["partner_alive"] is False and a.view()["last_seen_ms_ago"] >= 200
    finally:
        await a.stop()
        await b.stop()


async def test_garbage_on_the_socket_is_ignored():
    pa = _free_udp_port()
    a = Heartbeat("node1", ("127.0.0.1", pa), "node2", ("127.0.0.1", _free_udp_port()), 50, 4)
    await a.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"hello", b"SMBNDHB1{bad", encode("intruder", 1, 1)):
                s.sendto(junk, ("127.0.0.1", pa))
        await _wait(lambda: a.monitor.rejected == 3)
        assert a.view()["received"] == 0
    finally:
        await a.stop()


# the mediator's decision on what a heartbeat loss means (docs/cluster-design.md)
def test_mediator_decision():
    partners = {"node1": "node2", "node2": "node1"}
    dead = {"partner": "node1", "partner_alive": False}
    alive = {"partner": "node2", "partner_alive": True}
    assert suspects(partners, {"node2": dead, "node1": alive}, set(), {"node1", "node2"}) == [("node1", "node2")]
    assert suspects(partners, {"node2": dead}, set(), set()) == []                 # reporter unreachable
    assert suspects(partners, {"node2": dead}, {"node2"}, {"node2"}) == []         # reporter taken over
    assert suspects(partners, {"node2": None}, set(), {"node2"}) == []
    assert judge(process_exited=True, ping_answered=False) == "down"
    assert judge(process_exited=False, ping_answered=False) == "down"            # hung: fence
    assert judge(process_exited=False, ping_answered=True) == "partition"        # alive: no takeover
    t = PartitionTracker()
    assert t.detected("node2", "node1") and not t.detected("node1", "node2")
    t.healed("node1", "node2")
    assert t.detected("node1", "node2")
