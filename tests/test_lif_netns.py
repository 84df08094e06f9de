"""netns LIF backend: a real IP move between two node namespaces, seen from a client namespace."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from smbnd.cluster.lif import NetnsFabric
from smbnd.cluster.model import LifDef

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip")
                                 and not os.path.exists("/usr/bin/ip"), reason="needs root and iproute2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIF = LifDef(name="lif1", address="192.168.81.11", home="n1", prefix_len=24)

# a one-line TCP server inside a node namespace: answers its node name; IP_FREEBIND so it can bind
# the LIF address before the address is plumbed
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_IP, 15, 1); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[2].encode()); c.close()
"""
LIFCTL = ("import sys; sys.path.insert(0, %r); from smbnd.cluster.lif import NetnsLifs; "
          "from smbnd.cluster.model import LifDef; "
          "getattr(NetnsLifs(), sys.argv[1])(LifDef('lif1', %r, 'n1', 24))") % (ROOT, LIF.address)

PROBE = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 7000), timeout=1.0); print(s.recv(16).decode())
except OSError as e:
    print("ERR", e.__class__.__name__)
"""


@pytest.fixture
def fabric():
    f = NetnsFabric(f"t{os.getpid() % 10000}", {"n1": "192.168.81.1", "n2": "192.168.81.2"})
    procs = []
    try:
        f.up()
        client = f.add_client("c", "192.168.81.100")
        yield f, client, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        f.down()


def _lifctl(f, node, verb):
    subprocess.run(f.exec_prefix(node) + [sys.executable, "-c", LIFCTL, verb], check=True, timeout=20)


def _probe(client) -> str:
    return subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", PROBE, LIF.address],
                          capture_output=True, text=True, timeout=20).stdout.strip()


def test_lif_moves_between_node_namespaces(fabric):
    f, client, procs = fabric
    for node in ("n1", "n2"):
        p = subprocess.Popen(f.exec_prefix(node) + [sys.executable, "-c", SERVER, LIF.address, node],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
    assert _probe(client).startswith("ERR")          # not plumbed anywhere: nobody answers
    _lifctl(f, "n1", "plumb")
    assert _probe(client) == "n1"
    # the move: node 1 lets go, node 2 takes the address and announces it (gratuitous ARP)
    t0 = time.monotonic()
    _lifctl(f, "n1", "unplumb")
    _lifctl(f, "n2", "plumb")
    assert _probe(client) == "n2"                    # the client's ARP cache followed the move
    moved_s = time.monotonic() - t0
    print(f"LIF move + first answer from the new node: {moved_s * 1000:.0f} ms")
    # the old node no longer has the address
    out = subprocess.run(["ip", "-n", f.ns("n1"), "-o", "addr", "show", "dev", "eth0"],
                         capture_output=True, text=True).stdout
    assert LIF.address not in out
    _lifctl(f, "n2", "plumb")                        # idempotent
    _lifctl(f, "n1", "unplumb")                      # idempotent
    assert _probe(client) == "n2"
