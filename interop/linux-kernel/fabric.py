"""The qemu guest on a netns cluster's fabric bridge (cluster mode of run.py).

``FabricNet(fabric_ns, server_ip, guest_ip, prefix)`` gives run.py what its private ``Netns`` gives:
a tap device -- here attached to the bridge ``br0`` of the cluster's fabric namespace
(smbnd.cluster.lif.NetnsFabric) -- so the guest is one more host on the cluster's subnet and sees a
LIF's address move from one node namespace to the other (gratuitous ARP). ``server_ip`` is the LIF
address the guest mounts. Stdlib only.
"""
from __future__ import annotations

import subprocess


def _sh(args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


class FabricNet:
    def __init__(self, fabric_ns: str, server_ip: str, guest_ip: str, prefix: int = 24, tap: str = "smbkt0"):
        self.name = fabric_ns
        self.host_ip = server_ip
        self.guest_ip = guest_ip
        self.prefix = prefix
        self.tap = tap
        self.created = False

    def create(self) -> None:
        _sh(["ip", "-n", self.name, "link", "del", self.tap], check=False)
        _sh(["ip", "-n", self.name, "tuntap", "add", "dev", self.tap, "mode", "tap"])
        _sh(["ip", "-n", self.name, "link", "set", self.tap, "master", "br0", "up"])
        self.created = True

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def delete(self) -> None:
        if self.created:
            _sh(["ip", "-n", self.name, "link", "del", self.tap], check=False)
            self.created = False
