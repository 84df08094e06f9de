"""FSCTL_QUERY_NETWORK_INTERFACE_INFO (MS-SMB2 3.3.5.15.11): NETWORK_INTERFACE_INFO entries
(2.2.32.5) from the [[network_interface]] config, or else the host addresses we listen on."""
from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass

from .. import status as st
from ..errors import SmbError

RSS_CAPABLE = 0x1
ENTRY_SIZE = 152
SIOCGIFADDR = 0x8915
DEFAULT_SPEED = 1_000_000_000     # bits/s when the link does not say


@dataclass
class _Itf:
    address: str
    if_index: int
    speed: int
    rss: bool = False


def _sockaddr(address: str) -> bytes:
    """SOCKADDR_STORAGE (2.2.32.5.1): family, port 0, then SOCKADDR_IN / SOCKADDR_IN6 fields."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        sa = struct.pack("<HHI16sI", 0x17, 0, 0, ip.packed, 0)   # InterNetworkV6
    else:
        sa = struct.pack("<HH4s", 0x2, 0, ip.packed)
    return sa.ljust(128, b"\0")


def _link_speed(name: str) -> int:
    try:
        with open(f"/sys/class/net/{name}/speed") as f:
            mbps = int(f.read().strip())
        return mbps * 1_000_000 if mbps > 0 else DEFAULT_SPEED
    except (OSError, ValueError):
        return DEFAULT_SPEED


def _host_addresses() -> list[tuple[str, int, str]]:
    """(address, if_index, if_name) of every local IPv4/IPv6 address (Linux)."""
    out: list[tuple[str, int, str]] = []
    try:
        names = socket.if_nameindex()
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in names:
            try:
                ifr = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            out.append((socket.inet_ntoa(ifr[20:24]), index, name))
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, idx, _plen, _scope, _flags, name = line.split()
                out.append((str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))), int(idx, 16), name))
    except (OSError, ValueError):
        pass
    return out


def _from_listen(cfg) -> list[_Itf]:
    """The listening addresses: a specific one as is, a wildcard as every non-loopback,
    non-link-local address of its family."""
    found: list[_Itf] = []
    host = _host_addresses()
    for lhost, _port in cfg.listen:
        try:
            want = ipaddress.ip_address(lhost)
        except ValueError:
            continue
        for addr, index, name in host:
            ip = ipaddress.ip_address(addr)
            if want.is_unspecified:
                if ip.is_loopback or ip.is_link_local or (want.version == 4 and ip.version != 4):
                    continue
            elif ip != want:
                continue
            if index and all(i.address != addr for i in found):
                found.append(_Itf(addr, index, _link_speed(name)))
    return found


def network_interfaces(req, r) -> bytes:
    """MS-SMB2 3.3.5.15.11; 2.x connections: STATUS_NOT_SUPPORTED (the FSCTL is SMB 3.x only).
    Answered whether or not multichannel is advertised (the server MAY fail it then)."""
    if req.conn.dialect < 0x0300:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    cfg = req.server.config
    itfs = [_Itf(i.address, i.if_index, i.speed, i.rss) for i in cfg.interfaces] or _from_listen(cfg)
    itfs = [i for i in itfs if i.if_index]    # IfIndex 0 MUST NOT be reported
    if not itfs:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    entries = []
    for n, itf in enumerate(itfs):
        nxt = ENTRY_SIZE if n != len(itfs) - 1 else 0
        entries.append(struct.pack("<IIIIQ", nxt, itf.if_index, RSS_CAPABLE if itf.rss else 0, 0, itf.speed)
                       + _sockaddr(itf.address))
    out = b"".join(entries)
    if len(out) > r.max_output_response:
        raise SmbError(st.STATUS_BUFFER_TOO_SMALL)
    return out
