"""Connection-oriented DCE/RPC PDU codecs (C706 12.6, MS-RPCE 2.2.2). Pure functions, no state.

Every integer in a PDU, the common header included, is in the byte order named by the sender's
data representation label (C706 12.6.3.1 / 14.1); ``Header.e`` is the matching ``struct`` prefix.
Parsers raise ``PduError`` on anything malformed; the association turns that into a fault,
a bind_nak or a disconnect.
"""
from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass, field

# PTYPE (C706 12.6.4)
REQUEST, PING, RESPONSE, FAULT, WORKING, NOCALL, REJECT, ACK, CL_CANCEL, FACK, CANCEL_ACK = range(11)
BIND, BIND_ACK, BIND_NAK, ALTER_CONTEXT, ALTER_CONTEXT_RESP, AUTH3, SHUTDOWN, CO_CANCEL, ORPHANED = range(11, 20)

# pfc_flags (C706 12.6.3.1, MS-RPCE 2.2.2.3)
PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
PFC_PENDING_CANCEL = 0x04
PFC_SUPPORT_HEADER_SIGN = 0x04      # same bit, in bind / alter_context and their acks
PFC_RESERVED_1 = 0x08
PFC_CONC_MPX = 0x10
PFC_DID_NOT_EXECUTE = 0x20
PFC_MAYBE = 0x40
PFC_OBJECT_UUID = 0x80

DREP_LE = 0x10                       # integer representation little-endian, ASCII, IEEE floats
NDR_DREP = bytes([DREP_LE, 0, 0, 0])
HEADER_SIZE = 16
REQUEST_HEADER_SIZE = 24
RESPONSE_HEADER_SIZE = 24
SEC_TRAILER_SIZE = 8

# p_cont_def_result_t / p_provider_reason_t (C706 12.6.3.1, MS-RPCE 2.2.2.4 negotiate_ack)
ACCEPTANCE, USER_REJECTION, PROVIDER_REJECTION, NEGOTIATE_ACK = 0, 1, 2, 3
REASON_NOT_SPECIFIED = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2
LOCAL_LIMIT_EXCEEDED = 3

# bind_nak reject reasons (C706 12.6.3.1 p_reject_reason_t, MS-RPCE 2.2.2.5)
NAK_NOT_SPECIFIED = 0
NAK_TEMPORARY_CONGESTION = 1
NAK_LOCAL_LIMIT_EXCEEDED = 2
NAK_PROTOCOL_VERSION_NOT_SUPPORTED = 4
NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED = 8
NAK_INVALID_CHECKSUM = 9

# auth types and levels (MS-RPCE 2.2.1.1.7 / 2.2.1.1.8)
AUTHN_NONE = 0
AUTHN_GSS_NEGOTIATE = 9
AUTHN_WINNT = 10
AUTHN_GSS_KERBEROS = 16
AUTHN_NETLOGON = 68
LEVEL_DEFAULT = 0
LEVEL_NONE = 1
LEVEL_CONNECT = 2
LEVEL_CALL = 3
LEVEL_PKT = 4
LEVEL_PKT_INTEGRITY = 5
LEVEL_PKT_PRIVACY = 6

# bind time feature negotiation bits (MS-RPCE 2.2.2.14)
BTFN_SECURITY_CONTEXT_MULTIPLEXING = 0x01
BTFN_KEEP_CONNECTION_ON_ORPHAN = 0x02
_BTFN_PREFIX = uuidlib.UUID("6cb71c2c-9812-4540-0000-000000000000").bytes[:8]

# verification trailer (MS-RPCE 2.2.2.13)
VT_MAGIC = bytes.fromhex("8ae3137102f43671")
VT_BITMASK_1, VT_PCONTEXT, VT_HEADER2 = 1, 2, 3
VT_COMMAND_END = 0x4000
VT_MUST_PROCESS = 0x8000
VT_CLIENT_SUPPORTS_HEADER_SIGNING = 0x1


class PduError(ValueError):
    """A PDU that cannot be parsed (C706 nca_proto_error territory)."""


@dataclass(frozen=True, slots=True)
class SyntaxId:
    """p_syntax_id_t: interface UUID and a 32-bit version, major in the low 16 bits."""
    uuid: uuidlib.UUID
    version: int

    @classmethod
    def of(cls, text: str, major: int, minor: int = 0) -> "SyntaxId":
        return cls(uuidlib.UUID(text), (minor << 16) | major)

    def pack(self, e: str = "<") -> bytes:
        return (self.uuid.bytes_le if e == "<" else self.uuid.bytes) + struct.pack(e + "I", self.version)

    @classmethod
    def unpack(cls, buf, off: int, e: str = "<") -> "SyntaxId":
        raw = bytes(buf[off:off + 16])
        u = uuidlib.UUID(bytes_le=raw) if e == "<" else uuidlib.UUID(bytes=raw)
        return cls(u, struct.unpack_from(e + "I", buf, off + 16)[0])

    def __str__(self) -> str:
        return f"{self.uuid}/{self.version & 0xFFFF}.{self.version >> 16}"


NULL_SYNTAX = SyntaxId(uuidlib.UUID(int=0), 0)
NDR_SYNTAX = SyntaxId.of("8a885d04-1ceb-11c9-9fe8-08002b104860", 2)      # C706 appendix I
NDR64_SYNTAX = SyntaxId.of("71710533-beba-4937-8319-b5dbef9ccc36", 1)    # MS-RPCE 2.2.5


def btfn_bitmask(s: SyntaxId) -> int | None:
    """MS-RPCE 3.3.1.5.3: a transfer syntax 6CB71C2C-9812-4540-<bitmask> v1.0 asks for bind time
    feature negotiation; returns the requested bits, or None for an ordinary syntax."""
    b = s.uuid.bytes
    if b[:8] != _BTFN_PREFIX or s.version != 1:
        return None
    return int.from_bytes(b[8:16], "little")


def btfn_syntax(bits: int) -> SyntaxId:
    return SyntaxId(uuidlib.UUID(bytes=_BTFN_PREFIX + bits.to_bytes(8, "little")), 1)


# ---- common header (C706 12.6.3.1) -----------------------------------------------------------

@dataclass(slots=True)
class Header:
    rpc_vers: int
    rpc_vers_minor: int
    ptype: int
    pfc_flags: int
    drep: bytes
    frag_length: int
    auth_length: int
    call_id: int

    @property
    def e(self) -> str:
        return "<" if self.drep[0] & DREP_LE else ">"


def peek_frag_length(buf) -> int | None:
    """Fragment length of the PDU at the start of ``buf`` (None until 10 bytes are there)."""
    if len(buf) < 10:
        return None
    return struct.unpack_from("<H" if buf[4] & DREP_LE else ">H", buf, 8)[0]


def parse_header(buf) -> Header:
    if len(buf) < HEADER_SIZE:
        raise PduError("short PDU header")
    vers, minor, ptype, flags = buf[0], buf[1], buf[2], buf[3]
    drep = bytes(buf[4:8])
    e = "<" if drep[0] & DREP_LE else ">"
    frag_length, auth_length, call_id = struct.unpack_from(e + "HHI", buf, 8)
    if vers != 5 or minor > 1:
        raise PduError(f"RPC version {vers}.{minor}")
    if drep[0] & 0xEF or drep[1] != 0:   # EBCDIC / non-IEEE floats: not supported (Samba: same)
        raise PduError("unsupported data representation")
    if frag_length < HEADER_SIZE or frag_length > len(buf):
        raise PduError("bad frag_length")
    return Header(vers, minor, ptype, flags, drep, frag_length, auth_length, call_id)


def pack_header(ptype: int, flags: int, call_id: int, frag_length: int, auth_length: int = 0,
                drep: bytes = NDR_DREP) -> bytes:
    e = "<" if drep[0] & DREP_LE else ">"
    return bytes((5, 0, ptype, flags)) + drep + struct.pack(e + "HHI", frag_length, auth_length, call_id)


# ---- auth verifier (C706 13.2.6.1 / MS-RPCE 2.2.2.11) ----------------------------------------

@dataclass(slots=True)
class SecTrailer:
    auth_type: int
    auth_level: int
    auth_pad_length: int
    auth_context_id: int
    auth_value: bytes = b""
    offset: int = 0                 # where the sec_trailer starts in the PDU

    def pack(self, e: str = "<") -> bytes:
        return struct.pack(e + "BBBBI", self.auth_type, self.auth_level, self.auth_pad_length, 0,
                           self.auth_context_id)


def split_auth(buf, hdr: Header, body_start: int) -> tuple[int, SecTrailer | None]:
    """Locate the auth verifier: it ends the PDU, sec_trailer first (MS-RPCE 2.2.2.11).
    Returns (end of the body, trailer or None)."""
    if hdr.auth_length == 0:
        return hdr.frag_length, None
    start = hdr.frag_length - hdr.auth_length - SEC_TRAILER_SIZE
    if start < body_start:
        raise PduError("auth_length larger than the PDU body")
    t, lvl, pad, _r, ctx = struct.unpack_from(hdr.e + "BBBBI", buf, start)
    return start, SecTrailer(t, lvl, pad, ctx, bytes(buf[start + SEC_TRAILER_SIZE:hdr.frag_length]), start)


def auth_pad(stub_len: int, align: int = 16) -> int:
    """Pad the stub to a 16-byte multiple before the sec_trailer (MS-RPCE 2.2.2.11; what
    Windows sends, relative to the start of the stub)."""
    return -stub_len % align


# ---- bind / alter_context (C706 12.6.4.3, 12.6.4.1) ------------------------------------------

@dataclass(slots=True)
class ContextElem:
    context_id: int
    abstract: SyntaxId
    transfer: list[SyntaxId]


@dataclass(slots=True)
class Bind:
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    contexts: list[ContextElem]
    auth: SecTrailer | None = None


def parse_bind(buf, hdr: Header) -> Bind:
    """bind and alter_context share one layout."""
    e = hdr.e
    end, auth = split_auth(buf, hdr, HEADER_SIZE + 12)
    if end < HEADER_SIZE + 12:
        raise PduError("short bind")
    xmit, recv, group, n = struct.unpack_from(e + "HHIB", buf, HEADER_SIZE)
    off = HEADER_SIZE + 12
    contexts = []
    for _ in range(n):
        if off + 24 > end:
            raise PduError("bind context list truncated")
        cid, nts = struct.unpack_from(e + "HB", buf, off)
        abstract = SyntaxId.unpack(buf, off + 4, e)
        off += 24
        if off + 20 * nts > end:
            raise PduError("bind transfer syntaxes truncated")
        ts = [SyntaxId.unpack(buf, off + 20 * i, e) for i in range(nts)]
        off += 20 * nts
        contexts.append(ContextElem(cid, abstract, ts))
    return Bind(xmit, recv, group, contexts, auth)


def pack_bind(contexts: list[ContextElem], *, call_id: int = 1, ptype: int = BIND, max_xmit: int = 5840,
              max_recv: int = 5840, assoc_group: int = 0, flags: int = PFC_FIRST_FRAG | PFC_LAST_FRAG,
              auth: SecTrailer | None = None) -> bytes:
    """Client side (tests, fuzz seeds)."""
    body = struct.pack("<HHIBxH", max_xmit, max_recv, assoc_group, len(contexts), 0)
    for c in contexts:
        body += struct.pack("<HBx", c.context_id, len(c.transfer)) + c.abstract.pack()
        body += b"".join(t.pack() for t in c.transfer)
    return _assemble(ptype, flags, call_id, body, auth)


@dataclass(slots=True)
class ContextResult:
    result: int
    reason: int
    transfer: SyntaxId = NULL_SYNTAX


def pack_bind_ack(call_id: int, results: list[ContextResult], *, max_xmit: int, max_recv: int,
                  assoc_group: int, secondary_address: str = "", ptype: int = BIND_ACK,
                  flags: int = PFC_FIRST_FRAG | PFC_LAST_FRAG, auth: SecTrailer | None = None) -> bytes:
    """bind_ack (C706 12.6.4.4) / alter_context_resp (12.6.4.2)."""
    addr = secondary_address.encode("ascii") + b"\0" if secondary_address else b""
    body = struct.pack("<HHIH", max_xmit, max_recv, assoc_group, len(addr)) + addr
    body += b"\0" * (-(HEADER_SIZE + len(body)) % 4)      # p_result_list is 4-byte aligned
    body += struct.pack("<BxH", len(results), 0)
    for r in results:
        body += struct.pack("<HH", r.result, r.reason) + r.transfer.pack()
    return _assemble(ptype, flags, call_id, body, auth)


@dataclass(slots=True)
class BindAck:
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    secondary_address: str
    results: list[ContextResult]
    auth: SecTrailer | None = None


def parse_bind_ack(buf, hdr: Header) -> BindAck:
    e = hdr.e
    end, auth = split_auth(buf, hdr, HEADER_SIZE + 10)
    if end < HEADER_SIZE + 10:
        raise PduError("short bind_ack")
    xmit, recv, group, alen = struct.unpack_from(e + "HHIH", buf, HEADER_SIZE)
    off = HEADER_SIZE + 10
    addr = bytes(buf[off:off + alen]).rstrip(b"\0").decode("ascii", "replace")
    off += alen
    off += -off % 4
    if off + 4 > end:
        raise PduError("bind_ack result list truncated")
    n = buf[off]
    off += 4
    results = []
    for _ in range(n):
        if off + 24 > end:
            raise PduError("bind_ack results truncated")
        res, reason = struct.unpack_from(e + "HH", buf, off)
        results.append(ContextResult(res, reason, SyntaxId.unpack(buf, off + 4, e)))
        off += 24
    return BindAck(xmit, recv, group, addr, results, auth)


def pack_bind_nak(call_id: int, reason: int) -> bytes:
    """bind_nak (C706 12.6.4.5): reject reason and the one protocol version we speak (5.0)."""
    body = struct.pack("<HBBB", reason, 1, 5, 0) + b"\0" * 3
    return _assemble(BIND_NAK, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id, body, None)


# ---- request / response / fault (C706 12.6.4.9, 12.6.4.10, 12.6.4.7) -------------------------

@dataclass(slots=True)
class Request:
    alloc_hint: int
    context_id: int
    opnum: int
    object: uuidlib.UUID | None
    stub_offset: int
    stub_end: int                   # start of the sec_trailer (auth padding still included)
    auth: SecTrailer | None = None


def parse_request(buf, hdr: Header) -> Request:
    e = hdr.e
    start = REQUEST_HEADER_SIZE + (16 if hdr.pfc_flags & PFC_OBJECT_UUID else 0)
    if hdr.frag_length < start:
        raise PduError("short request")
    end, auth = split_auth(buf, hdr, start)
    alloc_hint, ctx, opnum = struct.unpack_from(e + "IHH", buf, HEADER_SIZE)
    obj = None
    if hdr.pfc_flags & PFC_OBJECT_UUID:
        raw = bytes(buf[24:40])
        obj = uuidlib.UUID(bytes_le=raw) if e == "<" else uuidlib.UUID(bytes=raw)
    return Request(alloc_hint, ctx, opnum, obj, start, end, auth)


def pack_request(context_id: int, opnum: int, stub: bytes, *, call_id: int = 1,
                 flags: int = PFC_FIRST_FRAG | PFC_LAST_FRAG, alloc_hint: int | None = None,
                 object_uuid: uuidlib.UUID | None = None, auth: SecTrailer | None = None) -> bytes:
    """Client side (tests, fuzz seeds): one unauthenticated or pre-padded request fragment."""
    if object_uuid is not None:
        flags |= PFC_OBJECT_UUID
    body = struct.pack("<IHH", len(stub) if alloc_hint is None else alloc_hint, context_id, opnum)
    if object_uuid is not None:
        body += object_uuid.bytes_le
    return _assemble(REQUEST, flags, call_id, body + stub, auth)


def response_prefix(alloc_hint: int, context_id: int, cancel_count: int = 0) -> bytes:
    return struct.pack("<IHBx", alloc_hint, context_id, cancel_count)


@dataclass(slots=True)
class Response:
    alloc_hint: int
    context_id: int
    stub: bytes
    auth: SecTrailer | None = None


def parse_response(buf, hdr: Header) -> Response:
    """Client side: the stub still carries auth padding when there is a verifier."""
    if hdr.frag_length < RESPONSE_HEADER_SIZE:
        raise PduError("short response")
    end, auth = split_auth(buf, hdr, RESPONSE_HEADER_SIZE)
    hint, ctx = struct.unpack_from(hdr.e + "IH", buf, HEADER_SIZE)
    return Response(hint, ctx, bytes(buf[RESPONSE_HEADER_SIZE:end]), auth)


def pack_fault(call_id: int, status: int, *, context_id: int = 0, flags: int = 0) -> bytes:
    """fault (C706 12.6.4.7): alloc_hint, p_cont_id, cancel_count, reserved, status, reserved."""
    body = struct.pack("<IHBxII", 24, context_id, 0, status, 0)   # alloc_hint as Samba
    return _assemble(FAULT, PFC_FIRST_FRAG | PFC_LAST_FRAG | flags, call_id, body, None)


def parse_fault_status(buf, hdr: Header) -> int:
    if hdr.frag_length < 28:
        raise PduError("short fault")
    return struct.unpack_from(hdr.e + "I", buf, 24)[0]


def pack_shutdown(call_id: int = 0) -> bytes:
    """shutdown (C706 12.6.4.11): server to client, header only."""
    return pack_header(SHUTDOWN, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id, HEADER_SIZE)


def pack_auth3(call_id: int, auth: SecTrailer) -> bytes:
    """rpc_auth_3 (MS-RPCE 2.2.2.10): four bytes of pad, then the verifier. Client side."""
    return _assemble(AUTH3, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id, b"\0" * 4, auth)


def _assemble(ptype: int, flags: int, call_id: int, body: bytes, auth: SecTrailer | None) -> bytes:
    if auth is None:
        return pack_header(ptype, flags, call_id, HEADER_SIZE + len(body)) + body
    pad = b"\0" * auth.auth_pad_length
    n = HEADER_SIZE + len(body) + len(pad) + SEC_TRAILER_SIZE + len(auth.auth_value)
    return (pack_header(ptype, flags, call_id, n, len(auth.auth_value)) + body + pad + auth.pack()
            + auth.auth_value)


# ---- verification trailer (MS-RPCE 2.2.2.13) -------------------------------------------------

@dataclass(slots=True)
class VerificationTrailer:
    offset: int                                   # where it starts in the stub (alignment pad first)
    bitmask1: int | None = None
    pcontext: tuple[SyntaxId, SyntaxId] | None = None
    header2: tuple[int, bytes, int, int, int] | None = None   # ptype, drep, call_id, ctx, opnum
    unknown_must_process: bool = False
    commands: list[int] = field(default_factory=list)


def find_verification_trailer(stub: bytes) -> VerificationTrailer | None:
    """The trailer ends the stub: 4-byte aligned magic, then commands until one flagged END, which
    must end exactly at the end of the stub. Anything else is ordinary stub data."""
    pos = stub.rfind(VT_MAGIC)
    while pos >= 0:
        vt = _parse_vt(stub, pos) if pos % 4 == 0 else None
        if vt is not None:
            return vt
        pos = stub.rfind(VT_MAGIC, 0, pos)
    return None


def _parse_vt(stub: bytes, pos: int) -> VerificationTrailer | None:
    vt = VerificationTrailer(offset=pos)
    off = pos + 8
    n = len(stub)
    while off + 4 <= n:
        cmd, length = struct.unpack_from("<HH", stub, off)
        off += 4
        if off + length > n:
            return None
        data = stub[off:off + length]
        off += length
        kind = cmd & 0x3FFF
        vt.commands.append(kind)
        if kind == VT_BITMASK_1 and length == 4:
            vt.bitmask1 = struct.unpack("<I", data)[0]
        elif kind == VT_PCONTEXT and length == 40:
            vt.pcontext = (SyntaxId.unpack(data, 0), SyntaxId.unpack(data, 20))
        elif kind == VT_HEADER2 and length == 16:
            ptype, _r1, _r2, drep, call_id, ctx, opnum = struct.unpack("<BBH4sIHH", data)
            vt.header2 = (ptype, drep, call_id, ctx, opnum)
        elif cmd & VT_MUST_PROCESS:
            vt.unknown_must_process = True
        if cmd & VT_COMMAND_END:
            return vt if off == n else None
    return None


def pack_verification_trailer(stub_len: int, *, bitmask1: int | None = None,
                              pcontext: tuple[SyntaxId, SyntaxId] | None = None) -> bytes:
    """Client side (tests): alignment pad, magic and the commands."""
    cmds = []
    if bitmask1 is not None:
        cmds.append((VT_BITMASK_1, struct.pack("<I", bitmask1)))
    if pcontext is not None:
        cmds.append((VT_PCONTEXT, pcontext[0].pack() + pcontext[1].pack()))
    out = b"\0" * (-stub_len % 4) + VT_MAGIC
    for i, (c, d) in enumerate(cmds):
        out += struct.pack("<HH", c | (VT_COMMAND_END if i == len(cmds) - 1 else 0), len(d)) + d
    return out
