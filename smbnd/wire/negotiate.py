"""NEGOTIATE request/response and negotiate contexts (MS-SMB2 2.2.3, 2.2.4). Pure codecs."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .header import HEADER_SIZE

DIALECT_202 = 0x0202
DIALECT_210 = 0x0210
DIALECT_300 = 0x0300
DIALECT_302 = 0x0302
DIALECT_311 = 0x0311
DIALECT_WILDCARD = 0x02FF
DIALECT_NAMES = {DIALECT_202: "2.0.2", DIALECT_210: "2.1", DIALECT_300: "3.0", DIALECT_302: "3.0.2",
                 DIALECT_311: "3.1.1"}

# SecurityMode
SIGNING_ENABLED = 0x1
SIGNING_REQUIRED = 0x2

# Global capabilities (MS-SMB2 2.2.4)
CAP_DFS = 0x01
CAP_LEASING = 0x02
CAP_LARGE_MTU = 0x04
CAP_MULTI_CHANNEL = 0x08
CAP_PERSISTENT_HANDLES = 0x10
CAP_DIRECTORY_LEASING = 0x20
CAP_ENCRYPTION = 0x40

# Negotiate context types (MS-SMB2 2.2.3.1)
PREAUTH_INTEGRITY_CAPABILITIES = 1
ENCRYPTION_CAPABILITIES = 2
COMPRESSION_CAPABILITIES = 3
NETNAME_NEGOTIATE_CONTEXT_ID = 5
TRANSPORT_CAPABILITIES = 6
RDMA_TRANSFORM_CAPABILITIES = 7
SIGNING_CAPABILITIES = 8
HASH_SHA512 = 1


class NegotiateError(ValueError):
    """Malformed NEGOTIATE request: caller answers STATUS_INVALID_PARAMETER."""


@dataclass(slots=True)
class NegotiateContext:
    type: int
    data: bytes


@dataclass(slots=True)
class NegotiateRequest:
    security_mode: int
    capabilities: int
    client_guid: bytes
    dialects: list[int]
    contexts: list[NegotiateContext] = field(default_factory=list)


_REQ = struct.Struct("<HHHHI16sIHH")   # StructureSize..NegotiateContextCount (36 bytes)


def parse_negotiate_request(msg) -> NegotiateRequest:
    body = HEADER_SIZE
    if len(msg) < body + 36:
        raise NegotiateError("short negotiate")
    (size, count, secmode, _res, caps, guid, ctx_off, ctx_count, _res2) = _REQ.unpack_from(msg, body)
    if size != 36 or count == 0:
        raise NegotiateError("bad structure size or no dialects")
    d_off = body + 36
    if len(msg) < d_off + 2 * count:
        raise NegotiateError("dialects truncated")
    dialects = list(struct.unpack_from(f"<{count}H", msg, d_off))
    contexts: list[NegotiateContext] = []
    if DIALECT_311 in dialects and ctx_count:
        off = ctx_off  # relative to the start of the SMB2 header
        for i in range(ctx_count):
            if i:
                off = (off + 7) & ~7
            if off + 8 > len(msg):
                raise NegotiateError("context truncated")
            ctype, clen, _ = struct.unpack_from("<HHI", msg, off)
            if off + 8 + clen > len(msg):
                raise NegotiateError("context data truncated")
            contexts.append(NegotiateContext(ctype, bytes(msg[off + 8: off + 8 + clen])))
            off += 8 + clen
    return NegotiateRequest(secmode, caps, bytes(guid), dialects, contexts)


def parse_preauth(data: bytes) -> tuple[list[int], bytes]:
    if len(data) < 4:
        raise NegotiateError("preauth context short")
    n, salt_len = struct.unpack_from("<HH", data, 0)
    if n == 0 or len(data) < 4 + 2 * n + salt_len:
        raise NegotiateError("preauth context bad")
    return list(struct.unpack_from(f"<{n}H", data, 4)), data[4 + 2 * n: 4 + 2 * n + salt_len]


def parse_id_list(data: bytes, what: str) -> list[int]:
    """Encryption and signing contexts: Count(2) then ids(2 each)."""
    if len(data) < 2:
        raise NegotiateError(f"{what} context short")
    (n,) = struct.unpack_from("<H", data, 0)
    if n == 0 or len(data) < 2 + 2 * n:
        raise NegotiateError(f"{what} context bad")
    return list(struct.unpack_from(f"<{n}H", data, 2))


def pack_preauth(salt: bytes) -> bytes:
    return struct.pack("<HHH", 1, len(salt), HASH_SHA512) + salt


def pack_id_list(ids: list[int]) -> bytes:
    return struct.pack(f"<H{len(ids)}H", len(ids), *ids)


@dataclass(slots=True)
class NegotiateResponse:
    security_mode: int
    dialect: int
    server_guid: bytes
    capabilities: int
    max_transact: int
    max_read: int
    max_write: int
    system_time: int
    start_time: int
    security_buffer: bytes
    contexts: list[NegotiateContext] = field(default_factory=list)


_RESP = struct.Struct("<HHHH16sIIIIQQHHI")   # 64 bytes fixed


def pack_negotiate_response(r: NegotiateResponse) -> bytes:
    sec_off = HEADER_SIZE + 64
    sec_len = len(r.security_buffer)
    ctx_off = 0
    ctx_blob = b""
    if r.dialect == DIALECT_311 and r.contexts:
        ctx_off = (sec_off + sec_len + 7) & ~7
        parts = []
        for i, c in enumerate(r.contexts):
            item = struct.pack("<HHI", c.type, len(c.data), 0) + c.data
            if i != len(r.contexts) - 1:
                item += b"\0" * ((8 - len(item) % 8) % 8)
            parts.append(item)
        ctx_blob = b"".join(parts)
    fixed = _RESP.pack(65, r.security_mode, r.dialect, len(r.contexts) if ctx_off else 0, r.server_guid,
                       r.capabilities, r.max_transact, r.max_read, r.max_write, r.system_time, r.start_time,
                       sec_off if sec_len else 0, sec_len, ctx_off)
    out = fixed + r.security_buffer
    if ctx_off:
        out += b"\0" * (ctx_off - HEADER_SIZE - len(out)) + ctx_blob
    return out


def smb1_negotiate_dialects(frame: bytes) -> list[str]:
    """Dialect strings of an SMB1 SMB_COM_NEGOTIATE (MS-SMB2 3.3.5.3.1); [] if not one."""
    if len(frame) < 35 or frame[:4] != b"\xffSMB" or frame[4] != 0x72:
        return []
    wct = frame[32]
    off = 33 + 2 * wct
    if off + 2 > len(frame):
        return []
    (bcc,) = struct.unpack_from("<H", frame, off)
    data = frame[off + 2: off + 2 + bcc]
    out = []
    for part in data.split(b"\0"):
        if part[:1] == b"\x02":
            out.append(part[1:].decode("ascii", "replace"))
    return out
