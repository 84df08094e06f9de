"""NDR (C706 chapter 14, MS-RPCE 2.2.5) codecs of the MS-SWN operations and the notification
message layouts. Pure functions, little-endian NDR32 only.

Request stubs are decoded strictly: a malformed stub raises ``NdrError`` (the service answers
RPC_X_BAD_STUB_DATA). Responses are built to the MS-SWN IDL (section 6), byte for byte.
"""
from __future__ import annotations

import ipaddress
import struct
import uuid as uuidlib
from dataclasses import dataclass

# MS-SWN 1.7 protocol versions
WITNESS_V1 = 0x00010001
WITNESS_V2 = 0x00020000
WITNESS_UNSPECIFIED_VERSION = 0xFFFFFFFF

# MS-SWN 2.2.2.5 WITNESS_INTERFACE_INFO State / Flags
STATE_UNKNOWN, STATE_AVAILABLE, STATE_UNAVAILABLE = 0x0000, 0x0001, 0x00FF
IF_IPV4, IF_IPV6, IF_WITNESS = 0x1, 0x2, 0x4
# MS-SWN 2.2.2.4 MessageType
RESOURCE_CHANGE, CLIENT_MOVE, SHARE_MOVE, IP_CHANGE = 1, 2, 3, 4
MESSAGE_TYPES = {"resource-change": RESOURCE_CHANGE, "client-move": CLIENT_MOVE,
                 "share-move": SHARE_MOVE, "ip-change": IP_CHANGE}
# MS-SWN 2.2.2.3 ChangeType
RESOURCE_STATE_UNKNOWN, RESOURCE_STATE_AVAILABLE, RESOURCE_STATE_UNAVAILABLE = 0x0, 0x1, 0xFF
# MS-SWN 2.2.2.1 IPADDR_INFO Flags
IPADDR_V4, IPADDR_V6, IPADDR_ONLINE, IPADDR_OFFLINE = 0x01, 0x02, 0x08, 0x10
# MS-SWN 3.1.4.5 RegisterEx Flags
REGISTER_NONE, REGISTER_IP_NOTIFICATION = 0x0, 0x1

# Win32 error codes (MS-ERREF 2.2) the witness returns
ERROR_SUCCESS = 0x0
ERROR_ACCESS_DENIED = 0x5
ERROR_INVALID_PARAMETER = 0x57
ERROR_NO_MORE_ITEMS = 0x103
ERROR_NOT_FOUND = 0x490
ERROR_REVISION_MISMATCH = 0x51A
ERROR_NO_SYSTEM_RESOURCES = 0x5AA
ERROR_TIMEOUT = 0x5B4
ERROR_NOT_AUTHENTICATED = 0x4DC
ERROR_INVALID_STATE = 0x139F

INTERFACE_INFO_SIZE = 552          # MS-SWN 2.2.2.5 in NDR: 520 + 4 + 2 (+2 pad) + 4 + 16 + 4
GROUP_NAME_CHARS = 260


class NdrError(ValueError):
    pass


# ------------------------------------------------------------------------------------- reading
class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.off = 0

    def align(self, n: int) -> None:
        self.off += -self.off % n

    def u32(self) -> int:
        self.align(4)
        if self.off + 4 > len(self.data):
            raise NdrError("stub too short")
        (v,) = struct.unpack_from("<I", self.data, self.off)
        self.off += 4
        return v

    def raw(self, n: int) -> bytes:
        if n < 0 or self.off + n > len(self.data):
            raise NdrError("stub too short")
        b = self.data[self.off:self.off + n]
        self.off += n
        return b

    def unique_wstring(self) -> str | None:
        """[unique, string] wchar_t* (NDR 14.3.4 conformant varying string, 14.3.10 pointers)."""
        if self.u32() == 0:
            return None
        max_count, offset, actual = self.u32(), self.u32(), self.u32()
        if offset != 0 or actual > max_count or actual == 0 or actual > 0x8000:
            raise NdrError("bad string header")
        b = self.raw(2 * actual)
        if b[-2:] != b"\0\0":
            raise NdrError("string not NUL-terminated")
        try:
            return b[:-2].decode("utf-16-le")
        except UnicodeDecodeError:
            raise NdrError("bad UTF-16") from None

    def handle(self) -> bytes:
        """policy_handle / context handle: attributes (4) + uuid (16) (MS-RPCE 2.2.5.1? C706 14.3.12)."""
        self.align(4)
        return self.raw(20)

    def end(self) -> None:
        if len(self.data) - self.off > 7:       # trailing alignment padding only
            raise NdrError("trailing bytes in stub")


@dataclass
class RegisterArgs:
    version: int
    net_name: str | None
    share_name: str | None
    ip_address: str | None
    client_name: str | None
    flags: int = 0
    keepalive: int | None = None          # seconds; None: v1 Register (no AsyncNotify pending timer)


def parse_register(stub: bytes) -> RegisterArgs:
    """WitnessrRegister (MS-SWN 3.1.4.2) [in] parameters."""
    r = Reader(stub)
    version = r.u32()
    net, ip, client = r.unique_wstring(), r.unique_wstring(), r.unique_wstring()
    r.end()
    return RegisterArgs(version, net, None, ip, client)


def parse_register_ex(stub: bytes) -> RegisterArgs:
    """WitnessrRegisterEx (MS-SWN 3.1.4.5) [in] parameters."""
    r = Reader(stub)
    version = r.u32()
    net, share, ip, client = r.unique_wstring(), r.unique_wstring(), r.unique_wstring(), r.unique_wstring()
    flags, keepalive = r.u32(), r.u32()
    r.end()
    return RegisterArgs(version, net, share, ip, client, flags, keepalive)


def parse_handle(stub: bytes) -> bytes:
    """UnRegister / AsyncNotify: a single [in] context handle (MS-SWN 2.2.1.1)."""
    r = Reader(stub)
    h = r.handle()
    r.end()
    return h


# ------------------------------------------------------------------------------------- writing
def pack_handle(key: uuidlib.UUID | None) -> bytes:
    """Context handle on the wire: attributes 0 + the registration UUID (MS-SWN 2.2.1.2)."""
    return struct.pack("<I", 0) + (key.bytes_le if key is not None else b"\0" * 16)


def handle_key(raw: bytes) -> uuidlib.UUID:
    return uuidlib.UUID(bytes_le=raw[4:20])


def ip_fields(address: str) -> tuple[int, bytes, bytes]:
    """(IPADDR v4/v6 kind, 4-byte IPv4, 16-byte IPv6), both in network byte order (notes A)."""
    a = ipaddress.ip_address(address)
    if a.version == 4:
        return 4, a.packed, b"\0" * 16
    return 6, b"\0" * 4, a.packed


@dataclass
class InterfaceInfo:
    group_name: str
    state: int
    address: str
    witness: bool
    version: int = WITNESS_UNSPECIFIED_VERSION     # 2012 R2 and later (notes A; MS-SWN 4.1)

    def pack(self) -> bytes:
        kind, v4, v6 = ip_fields(self.address)
        flags = (IF_IPV4 if kind == 4 else IF_IPV6) | (IF_WITNESS if self.witness else 0)
        name = self.group_name[:GROUP_NAME_CHARS - 1].encode("utf-16-le")
        name += b"\0" * (2 * GROUP_NAME_CHARS - len(name))
        return name + struct.pack("<IHH", self.version, self.state, 0) + v4 + v6 + struct.pack("<I", flags)


def pack_interface_list(infos: list[InterfaceInfo], error: int = ERROR_SUCCESS) -> bytes:
    """WitnessrGetInterfaceList response (MS-SWN 2.2.2.6): unique ptr -> {count, unique ptr ->
    conformant array}, then the DWORD result."""
    if error != ERROR_SUCCESS:
        return struct.pack("<II", 0, error)
    body = struct.pack("<IIII", 0x00020000, len(infos), 0x00020004, len(infos))
    return body + b"".join(i.pack() for i in infos) + struct.pack("<I", ERROR_SUCCESS)


def pack_register_response(key: uuidlib.UUID | None, error: int) -> bytes:
    return pack_handle(key) + struct.pack("<I", error)


def pack_status(error: int) -> bytes:
    return struct.pack("<I", error)


def pack_async_notify(msg_type: int, messages: list[bytes], error: int = ERROR_SUCCESS) -> bytes:
    """WitnessrAsyncNotify response: unique ptr -> RESP_ASYNC_NOTIFY (MS-SWN 2.2.2.4) whose
    MessageBuffer is a unique ptr to a conformant byte array, then the DWORD result."""
    if not messages:
        return struct.pack("<II", 0, error)
    buf = b"".join(messages)
    out = struct.pack("<IIIIII", 0x00020000, msg_type, len(buf), len(messages), 0x00020004, len(buf)) + buf
    out += b"\0" * (-len(out) % 4)
    return out + struct.pack("<I", error)


def resource_change(name: str, change_type: int) -> bytes:
    """RESOURCE_CHANGE (MS-SWN 2.2.2.3): raw little-endian, unaligned; Length covers the record."""
    n = (name + "\0").encode("utf-16-le")
    return struct.pack("<II", 8 + len(n), change_type) + n


def ipaddr_info(address: str, flags: int) -> bytes:
    """IPADDR_INFO (MS-SWN 2.2.2.1): Flags, IPV4 and IPV6 big-endian ([S-IDL])."""
    kind, v4, v6 = ip_fields(address)
    return struct.pack("<I", flags | (IPADDR_V4 if kind == 4 else IPADDR_V6)) + v4 + v6


def ipaddr_info_list(entries: list[tuple[str, int]]) -> bytes:
    """IPADDR_INFO_LIST (MS-SWN 2.2.2.2): Length = 12 + 24 n, Reserved 0, IPAddrInstances."""
    body = b"".join(ipaddr_info(a, f) for a, f in entries)
    return struct.pack("<III", 12 + len(body), 0, len(entries)) + body


# ------------------------------------------------------------------------- decoding (clients)
def parse_resource_changes(buf: bytes, count: int) -> list[tuple[str, int]]:
    out, off = [], 0
    for _ in range(count):
        length, ctype = struct.unpack_from("<II", buf, off)
        if length < 10 or off + length > len(buf):
            raise NdrError("bad RESOURCE_CHANGE length")
        out.append((buf[off + 8:off + length].decode("utf-16-le").rstrip("\0"), ctype))
        off += length
    return out


def parse_ipaddr_info_list(buf: bytes) -> list[tuple[str, int]]:
    length, _res, n = struct.unpack_from("<III", buf, 0)
    if length != 12 + 24 * n or len(buf) < length:
        raise NdrError("bad IPADDR_INFO_LIST length")
    out = []
    for i in range(n):
        off = 12 + 24 * i
        (flags,) = struct.unpack_from("<I", buf, off)
        if flags & IPADDR_V6:
            addr = str(ipaddress.IPv6Address(buf[off + 8:off + 24]))
        else:
            addr = str(ipaddress.IPv4Address(buf[off + 4:off + 8]))
        out.append((addr, flags))
    return out
