"""SMB2 packet header (MS-SMB2 2.2.1) and TRANSFORM_HEADER (2.2.41). Pure codecs."""
from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_SMB2 = b"\xfeSMB"
PROTOCOL_TRANSFORM = b"\xfdSMB"
PROTOCOL_COMPRESSION = b"\xfcSMB"
PROTOCOL_SMB1 = b"\xffSMB"
HEADER_SIZE = 64
TRANSFORM_SIZE = 52

# Commands (MS-SMB2 2.2.1.2)
NEGOTIATE = 0x00
SESSION_SETUP = 0x01
LOGOFF = 0x02
TREE_CONNECT = 0x03
TREE_DISCONNECT = 0x04
CREATE = 0x05
CLOSE = 0x06
FLUSH = 0x07
READ = 0x08
WRITE = 0x09
LOCK = 0x0A
IOCTL = 0x0B
CANCEL = 0x0C
ECHO = 0x0D
QUERY_DIRECTORY = 0x0E
CHANGE_NOTIFY = 0x0F
QUERY_INFO = 0x10
SET_INFO = 0x11
OPLOCK_BREAK = 0x12
COMMAND_NAMES = {v: k for k, v in list(globals().items()) if isinstance(v, int) and k.isupper()
                 and 0 <= v <= 0x12 and k not in ("HEADER_SIZE", "TRANSFORM_SIZE")}

# Flags (MS-SMB2 2.2.1.2)
FLAGS_SERVER_TO_REDIR = 0x00000001
FLAGS_ASYNC_COMMAND = 0x00000002
FLAGS_RELATED_OPERATIONS = 0x00000004
FLAGS_SIGNED = 0x00000008
FLAGS_PRIORITY_MASK = 0x00000070
FLAGS_DFS_OPERATIONS = 0x10000000
FLAGS_REPLAY_OPERATION = 0x20000000

# ProtocolId, StructureSize, CreditCharge, Status(or ChannelSequence+Reserved), Command,
# Credit(Request/Response), Flags, NextCommand, MessageId, then either
# Reserved(4)+TreeId(4) [sync] or AsyncId(8) [async], SessionId, Signature(16)
_HDR = struct.Struct("<4sHHIHHIIQQQ16s")
_HDR_SYNC_TAIL = struct.Struct("<II")
assert _HDR.size == HEADER_SIZE


@dataclass(slots=True)
class Header:
    credit_charge: int = 0
    status: int = 0                # for requests on 3.x: low 16 bits are ChannelSequence
    command: int = 0
    credits: int = 0               # CreditRequest in requests, CreditResponse in responses
    flags: int = 0
    next_command: int = 0
    message_id: int = 0
    async_id: int = 0              # valid when flags & FLAGS_ASYNC_COMMAND
    tree_id: int = 0               # valid when not async
    session_id: int = 0
    signature: bytes = b"\0" * 16

    @property
    def is_async(self) -> bool:
        return bool(self.flags & FLAGS_ASYNC_COMMAND)

    @property
    def channel_sequence(self) -> int:
        return self.status & 0xFFFF


class HeaderError(ValueError):
    pass


def parse_header(buf, offset: int = 0) -> Header:
    if len(buf) - offset < HEADER_SIZE:
        raise HeaderError("short header")
    (proto, size, charge, status, cmd, credits, flags, nxt, mid, mid_field, sid, sig) = _HDR.unpack_from(buf, offset)
    if proto != PROTOCOL_SMB2 or size != 64:
        raise HeaderError("bad protocol id or structure size")
    if flags & FLAGS_ASYNC_COMMAND:
        return Header(charge, status, cmd, credits, flags, nxt, mid, mid_field, 0, sid, bytes(sig))
    return Header(charge, status, cmd, credits, flags, nxt, mid, 0, mid_field >> 32, sid, bytes(sig))


def pack_header(h: Header) -> bytearray:
    """Header bytes with the signature field as given (normally zero, filled by the signer)."""
    if h.flags & FLAGS_ASYNC_COMMAND:
        f = h.async_id
    else:
        f = (h.tree_id & 0xFFFFFFFF) << 32
    return bytearray(_HDR.pack(PROTOCOL_SMB2, 64, h.credit_charge, h.status, h.command, h.credits,
                               h.flags, h.next_command, h.message_id, f, h.session_id, h.signature))


def set_next_command(buf: bytearray, offset: int, value: int) -> None:
    struct.pack_into("<I", buf, offset + 20, value)


def set_signature(buf, offset: int, sig: bytes) -> None:
    buf[offset + 48: offset + 64] = sig


# TRANSFORM_HEADER: ProtocolId, Signature(16), Nonce(16), OriginalMessageSize, Reserved, Flags, SessionId
_TRANSFORM = struct.Struct("<4s16s16sIHHQ")
assert _TRANSFORM.size == TRANSFORM_SIZE


@dataclass(slots=True)
class TransformHeader:
    signature: bytes
    nonce: bytes
    original_size: int
    flags: int
    session_id: int


def parse_transform(buf) -> TransformHeader:
    if len(buf) < TRANSFORM_SIZE:
        raise HeaderError("short transform header")
    proto, sig, nonce, size, _res, flags, sid = _TRANSFORM.unpack_from(buf, 0)
    if proto != PROTOCOL_TRANSFORM:
        raise HeaderError("bad transform protocol id")
    return TransformHeader(bytes(sig), bytes(nonce), size, flags, sid)


def pack_transform(sig: bytes, nonce: bytes, size: int, session_id: int, flags: int = 1) -> bytes:
    return _TRANSFORM.pack(PROTOCOL_TRANSFORM, sig, nonce.ljust(16, b"\0"), size, 0, flags, session_id)


def transform_aad(nonce: bytes, size: int, session_id: int, flags: int = 1) -> bytes:
    """The 32 bytes from Nonce onward (MS-SMB2 3.1.4.3)."""
    return struct.pack("<16sIHHQ", nonce.ljust(16, b"\0"), size, 0, flags, session_id)
