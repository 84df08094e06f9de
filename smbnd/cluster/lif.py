"""LIF backends: how a data LIF's address appears on (and disappears from) a node.

``loopback``: every 127.0.0.0/8 address always answers on this host, so a LIF is "on" a node when that
node's process listens on it; moving it = the old node stops listening and closes its connections,
the new node starts listening. Nothing to plumb.

``netns``: a real IP move. ``NetnsFabric`` (run by the supervisor, as root) builds one network
namespace per node plus a fabric namespace holding a Linux bridge; each node namespace is joined to
the bridge by a veth pair (``eth0`` inside, with the node's interconnect address). A node process
runs inside its namespace (``exec_prefix``) and ``NetnsLifs.plumb`` adds the LIF address to its
``eth0`` (pyroute2) and announces it with gratuitous ARP, so peers on the bridge -- a client
namespace, or a qemu guest on a tap attached to the bridge -- send to the new node at once;
``unplumb`` deletes it. To let a Windows VM on the LAN reach the LIFs, attach a host NIC (or the
VM's tap) to the fabric bridge: see README "Cluster: netns backend".
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import subprocess

log = logging.getLogger("smbnd.cluster.lif")

ETH_P_ARP = 0x0806


def _sh(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def gratuitous_arp(ifname: str, address: str) -> None:
    """Broadcast an ARP request for our own address (RFC 5227 2.4 'ARP announcement')."""
    mac = open(f"/sys/class/net/{ifname}/address").read().strip()
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = socket.inet_aton(address)
    frame = (b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + ip + b"\0" * 6 + ip)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for _ in range(2):
            s.send(frame)


class LoopbackLifs:
    name = "loopback"

    def plumb(self, lif) -> None:           # 127/8 always answers
        pass

    def unplumb(self, lif) -> None:
        pass


class NetnsLifs:
    """Node side (inside the node's namespace): add / remove LIF addresses on ``eth0``."""
    name = "netns"

    def __init__(self, ifname: str = "eth0"):
        self.ifname = ifname

    @staticmethod
    def _off_loop(fn):
        """pyroute2 >= 0.8 runs its own asyncio loop inside the sync IPRoute: call it from a thread
        with no running loop (a few ms; the node's loop waits)."""
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(fn).result()

    def _ipr(self):
        from pyroute2 import IPRoute
        return IPRoute()

    def plumb(self, lif) -> None:
        self._off_loop(lambda: self._plumb(lif))
        try:
            gratuitous_arp(self.ifname, lif.address)
        except OSError as e:
            log.warning("gratuitous ARP for %s: %s", lif.address, e)

    def unplumb(self, lif) -> None:
        self._off_loop(lambda: self._unplumb(lif))

    def _plumb(self, lif) -> None:
        with self._ipr() as ipr:
            idx = ipr.link_lookup(ifname=self.ifname)[0]
            try:
                ipr.addr("add", index=idx, address=lif.address, prefixlen=lif.prefix_len)
            except Exception as e:      # NetlinkError 17: already there (idempotent)
                if getattr(e, "code", None) != 17:
                    raise

    def _unplumb(self, lif) -> None:
        with self._ipr() as ipr:
            idx = ipr.link_lookup(ifname=self.ifname)[0]
            try:
                ipr.addr("del", index=idx, address=lif.address, prefixlen=lif.prefix_len)
            except Exception as e:      # NetlinkError 99: not there
                if getattr(e, "code", None) not in (99, 2):
                    raise


def backend_for(kind: str):
    return NetnsLifs() if kind == "netns" else LoopbackLifs()


class NetnsFabric:
    """Root side: the namespaces and the bridge of a netns cluster (created by the supervisor)."""

    def __init__(self, tag: str, nodes: dict[str, str], prefix_len: int = 24):
        """nodes: node name -> interconnect address (on the fabric subnet)."""
        self.tag = tag
        self.nodes = dict(nodes)
        self.prefix_len = prefix_len
        self.fabric = f"snd-{tag}-fab"
        self.extra: list[str] = []

    def ns(self, node: str) -> str:
        return f"snd-{self.tag}-{node}"

    def exec_prefix(self, node: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(node)]

    def _veth_into(self, ns: str, host_end: str, address: str | None) -> None:
        fab = ["ip", "-n", self.fabric]
        _sh(fab + ["link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _sh(fab + ["link", "set", host_end, "master", "br0", "up"])
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        _sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        if address:
            _sh(["ip", "-n", ns, "addr", "add", f"{address}/{self.prefix_len}", "dev", "eth0"])

    def up(self) -> None:
        self.down()
        _sh(["ip", "netns", "add", self.fabric])
        _sh(["ip", "-n", self.fabric, "link", "add", "br0", "type", "bridge"])
        _sh(["ip", "-n", self.fabric, "link", "set", "br0", "up"])
        for i, (node, addr) in enumerate(sorted(self.nodes.items())):
            _sh(["ip", "netns", "add", self.ns(node)])
            self._veth_into(self.ns(node), f"vn{i}", addr)

    def release_address(self, node: str, lif) -> None:
        """Fencing: take a LIF's address off a dead (or fenced) node's namespace before the partner
        plumbs it, so the dead node's kernel can't answer ARP or reset connections for it."""
        _sh(["ip", "-n", self.ns(node), "addr", "del", f"{lif.address}/{lif.prefix_len}", "dev", "eth0"],
            check=False)

    def add_client(self, name: str, address: str) -> str:
        """A client namespace on the fabric (tests, drills); returns its name."""
        ns = f"snd-{self.tag}-c-{name}"
        _sh(["ip", "netns", "del", ns], check=False)
        _sh(["ip", "netns", "add", ns])
        self.extra.append(ns)
        self._veth_into(ns, f"vc{len(self.extra)}", address)
        return ns

    def add_tap(self, tap: str) -> None:
        """A tap device on the bridge, for a qemu guest (`ip netns exec <fabric> qemu ... -netdev tap`)."""
        _sh(["ip", "-n", self.fabric, "tuntap", "add", "dev", tap, "mode", "tap"])
        _sh(["ip", "-n", self.fabric, "link", "set", tap, "master", "br0", "up"])

    def down(self) -> None:
        for ns in [self.ns(n) for n in self.nodes] + self.extra + [self.fabric]:
            _sh(["ip", "netns", "del", ns], check=False)
        self.extra.clear()


def fabric_for(cluster) -> NetnsFabric:
    """The fabric of a netns ClusterConfig: node interconnect addresses are the nodes' eth0 addresses."""
    nodes = {}
    for name, nd in cluster.nodes.items():
        host = nd.interconnect.rpartition(":")[0]
        ipaddress.ip_address(host)
        nodes[name] = host
    prefix = next(iter(cluster.lifs.values())).prefix_len if cluster.lifs else 24
    return NetnsFabric(cluster.name[:8], nodes, prefix)
