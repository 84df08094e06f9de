"""The endpoint mapper (C706 appendix O ept_*, MS-RPCE 2.2.1.2 / 3.3.3.3) over ncacn_ip_tcp.

ept_map (opnum 3) answers the tower of a registered interface: ncacn_ip_tcp, its port, on the
address the client connected to. ept_lookup (2) lists the registrations; ept_lookup_handle_free
(4) closes the (always null) enumeration handle. Towers are C706 appendix L floors.
"""
from __future__ import annotations

import ipaddress
import struct
import uuid as uuidlib
from dataclasses import dataclass
from typing import Callable

from .iface import FAULT_NDR, Interface, RpcFault

EPM_UUID = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"
EPM_VERSION = (3, 0)
NDR_UUID = uuidlib.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860")
# C706 appendix I protocol identifiers (tower floor LHS)
FLOOR_UUID, FLOOR_RPC_CO, FLOOR_TCP, FLOOR_IP = 0x0D, 0x0B, 0x07, 0x09
EPT_S_NOT_REGISTERED = 0x16C9A0D6      # C706 appendix E
RPC_C_EP_ALL_ELTS, RPC_C_EP_MATCH_BY_IF, RPC_C_EP_MATCH_BY_OBJ, RPC_C_EP_MATCH_BY_BOTH = 0, 1, 2, 3
MAX_TOWER = 1024


@dataclass
class Endpoint:
    uuid: str
    version: tuple[int, int]
    annotation: str
    port: Callable[[str], int | None]          # local address -> port (None: not served there)


class _R:
    def __init__(self, data: bytes):
        self.d, self.o = data, 0

    def u32(self) -> int:
        self.o += -self.o % 4
        if self.o + 4 > len(self.d):
            raise RpcFault(FAULT_NDR)
        (v,) = struct.unpack_from("<I", self.d, self.o)
        self.o += 4
        return v

    def raw(self, k: int) -> bytes:
        if k < 0 or self.o + k > len(self.d):
            raise RpcFault(FAULT_NDR)
        b = self.d[self.o:self.o + k]
        self.o += k
        return b


def parse_tower(data: bytes) -> list[tuple[bytes, bytes]]:
    """C706 appendix L: floor count, then (LHS length, LHS, RHS length, RHS), little-endian counts."""
    if len(data) < 2:
        raise RpcFault(FAULT_NDR)
    (count,) = struct.unpack_from("<H", data, 0)
    off, floors = 2, []
    for _ in range(count):
        if off + 2 > len(data):
            raise RpcFault(FAULT_NDR)
        (ll,) = struct.unpack_from("<H", data, off)
        lhs = data[off + 2:off + 2 + ll]
        off += 2 + ll
        if off + 2 > len(data):
            raise RpcFault(FAULT_NDR)
        (rl,) = struct.unpack_from("<H", data, off)
        rhs = data[off + 2:off + 2 + rl]
        off += 2 + rl
        if len(lhs) != ll or len(rhs) != rl:
            raise RpcFault(FAULT_NDR)
        floors.append((lhs, rhs))
    return floors


def _floor(lhs: bytes, rhs: bytes) -> bytes:
    return struct.pack("<H", len(lhs)) + lhs + struct.pack("<H", len(rhs)) + rhs


def build_tower(if_uuid: str, version: tuple[int, int], port: int, address: str) -> bytes:
    """ncacn_ip_tcp tower: interface, NDR 2.0, RPC connection-oriented, TCP port, IP (C706 L.2)."""
    ip = ipaddress.ip_address(address)
    floors = [
        _floor(bytes([FLOOR_UUID]) + uuidlib.UUID(if_uuid).bytes_le + struct.pack("<H", version[0]),
               struct.pack("<H", version[1])),
        _floor(bytes([FLOOR_UUID]) + NDR_UUID.bytes_le + struct.pack("<H", 2), struct.pack("<H", 0)),
        _floor(bytes([FLOOR_RPC_CO]), struct.pack("<H", 0)),
        _floor(bytes([FLOOR_TCP]), struct.pack(">H", port)),
        _floor(bytes([FLOOR_IP]), ip.packed if ip.version == 4 else b"\0\0\0\0"),
    ]
    return struct.pack("<H", len(floors)) + b"".join(floors)


def _twr(tower: bytes) -> bytes:
    """twr_t (conformant struct): max_count, tower_length, octets, padded to 4."""
    out = struct.pack("<II", len(tower), len(tower)) + tower
    return out + b"\0" * (-len(out) % 4)


class EndpointMapper:
    def __init__(self, endpoints: list[Endpoint] | None = None):
        self.endpoints: list[Endpoint] = list(endpoints or [])

    def interface(self) -> Interface:
        return Interface(EPM_UUID, EPM_VERSION, "epmapper", {
            2: self.ept_lookup,
            3: self.ept_map,
            4: self.ept_lookup_handle_free,
        })

    @staticmethod
    def _local(call) -> str:
        return getattr(call.association, "local_address", "") or "0.0.0.0"

    def _match(self, if_uuid: uuidlib.UUID, major: int, minor: int) -> Endpoint | None:
        for e in self.endpoints:
            if uuidlib.UUID(e.uuid) == if_uuid and e.version[0] == major and minor <= max(e.version[1], 1):
                return e
        return None

    def ept_map(self, call, stub: bytes) -> bytes:
        if not call.little_endian:
            raise RpcFault(FAULT_NDR)
        r = _R(stub)
        if r.u32():
            r.raw(16)                                      # object uuid: not used for matching
        tower = b""
        if r.u32():
            max_count, length = r.u32(), r.u32()
            if length > MAX_TOWER or max_count != length:
                raise RpcFault(FAULT_NDR)
            tower = r.raw(length)
        r.raw(20)                                          # entry_handle (context handle)
        max_towers = r.u32()
        found = None
        if tower:
            floors = parse_tower(tower)
            if len(floors) >= 4 and len(floors[0][0]) == 19 and floors[0][0][0] == FLOOR_UUID \
                    and len(floors[0][1]) == 2 and floors[2][0][:1] == bytes([FLOOR_RPC_CO]) \
                    and floors[3][0][:1] == bytes([FLOOR_TCP]):
                if_uuid = uuidlib.UUID(bytes_le=floors[0][0][1:17])
                major = struct.unpack_from("<H", floors[0][0], 17)[0]
                minor = struct.unpack_from("<H", floors[0][1], 0)[0]
                e = self._match(if_uuid, major, minor)
                local = self._local(call)
                port = e.port(local) if e is not None else None
                if e is not None and port:
                    found = build_tower(e.uuid, (major, minor), port, local)
        towers = [found] if found is not None and max_towers >= 1 else []
        out = b"\0" * 20 + struct.pack("<I", len(towers))
        out += struct.pack("<III", max_towers, 0, len(towers))
        out += b"".join(struct.pack("<I", 0x00020000 + 4 * i) for i in range(len(towers)))
        out += b"".join(_twr(t) for t in towers)
        return out + struct.pack("<I", 0 if towers else EPT_S_NOT_REGISTERED)

    def ept_lookup(self, call, stub: bytes) -> bytes:
        if not call.little_endian:
            raise RpcFault(FAULT_NDR)
        r = _R(stub)
        inquiry = r.u32()
        if r.u32():
            r.raw(16)
        if_id = None
        if r.u32():
            u = uuidlib.UUID(bytes_le=r.raw(16))
            vers = r.raw(4)
            major, minor = struct.unpack("<HH", vers)
            if_id = (u, major, minor)
        r.u32()                                            # vers_option
        r.raw(20)
        max_ents = r.u32()
        local = self._local(call)
        entries = []
        for e in self.endpoints:
            port = e.port(local)
            if not port:
                continue
            if inquiry in (RPC_C_EP_MATCH_BY_IF, RPC_C_EP_MATCH_BY_BOTH) and if_id is not None \
                    and uuidlib.UUID(e.uuid) != if_id[0]:
                continue
            entries.append((e, build_tower(e.uuid, e.version, port, local)))
        entries = entries[:max_ents]
        out = b"\0" * 20 + struct.pack("<I", len(entries)) + struct.pack("<III", max_ents, 0, len(entries))
        for i, (e, _t) in enumerate(entries):
            ann = e.annotation.encode()[:63] + b"\0"
            out += b"\0" * 16 + struct.pack("<I", 0x00020000 + 4 * i) + struct.pack("<II", 0, len(ann)) + ann
            out += b"\0" * (-len(out) % 4)
        for _e, t in entries:
            out += _twr(t)
        return out + struct.pack("<I", 0 if entries else EPT_S_NOT_REGISTERED)

    def ept_lookup_handle_free(self, call, stub: bytes) -> bytes:
        return b"\0" * 20 + struct.pack("<I", 0)
