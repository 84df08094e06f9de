"""CREATE request/response and create contexts (MS-SMB2 2.2.13, 2.2.14). Pure codecs."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .header import HEADER_SIZE
from .messages import MessageError

H = HEADER_SIZE

# Oplock levels (2.2.13)
OPLOCK_LEVEL_NONE = 0x00
OPLOCK_LEVEL_II = 0x01
OPLOCK_LEVEL_EXCLUSIVE = 0x08
OPLOCK_LEVEL_BATCH = 0x09
OPLOCK_LEVEL_LEASE = 0xFF

# ShareAccess
FILE_SHARE_READ = 0x1
FILE_SHARE_WRITE = 0x2
FILE_SHARE_DELETE = 0x4

# CreateDisposition
FILE_SUPERSEDE = 0
FILE_OPEN = 1
FILE_CREATE = 2
FILE_OPEN_IF = 3
FILE_OVERWRITE = 4
FILE_OVERWRITE_IF = 5

# CreateOptions
FILE_DIRECTORY_FILE = 0x00000001
FILE_WRITE_THROUGH = 0x00000002
FILE_SEQUENTIAL_ONLY = 0x00000004
FILE_NO_INTERMEDIATE_BUFFERING = 0x00000008
FILE_SYNCHRONOUS_IO_ALERT = 0x00000010
FILE_SYNCHRONOUS_IO_NONALERT = 0x00000020
FILE_NON_DIRECTORY_FILE = 0x00000040
FILE_COMPLETE_IF_OPLOCKED = 0x00000100
FILE_NO_EA_KNOWLEDGE = 0x00000200
FILE_RANDOM_ACCESS = 0x00000800
FILE_DELETE_ON_CLOSE = 0x00001000
FILE_OPEN_BY_FILE_ID = 0x00002000
FILE_OPEN_FOR_BACKUP_INTENT = 0x00004000
FILE_NO_COMPRESSION = 0x00008000
FILE_OPEN_REPARSE_POINT = 0x00200000
FILE_OPEN_NO_RECALL = 0x00400000
FILE_OPEN_FOR_FREE_SPACE_QUERY = 0x00800000
CREATE_OPTIONS_VALID = 0x00FFFFFF
# 3.3.5.9: these MUST be rejected with STATUS_NOT_SUPPORTED
FILE_RESERVE_OPFILTER = 0x00100000  # 3.3.5.9: STATUS_NOT_SUPPORTED

# CreateAction
FILE_SUPERSEDED = 0
FILE_OPENED = 1
FILE_CREATED = 2
FILE_OVERWRITTEN = 3

# Access mask bits (MS-SMB2 2.2.13.1)
FILE_READ_DATA = 0x00000001
FILE_WRITE_DATA = 0x00000002
FILE_APPEND_DATA = 0x00000004
FILE_READ_EA = 0x00000008
FILE_WRITE_EA = 0x00000010
FILE_EXECUTE = 0x00000020
FILE_DELETE_CHILD = 0x00000040
FILE_READ_ATTRIBUTES = 0x00000080
FILE_WRITE_ATTRIBUTES = 0x00000100
DELETE = 0x00010000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000
SYNCHRONIZE = 0x00100000
ACCESS_SYSTEM_SECURITY = 0x01000000
MAXIMUM_ALLOWED = 0x02000000
GENERIC_ALL = 0x10000000
GENERIC_EXECUTE = 0x20000000
GENERIC_WRITE = 0x40000000
GENERIC_READ = 0x80000000
FILE_ALL_ACCESS = 0x001F01FF
FILE_GENERIC_READ = 0x00120089
FILE_GENERIC_WRITE = 0x00120116
FILE_GENERIC_EXECUTE = 0x001200A0

# Create context names
CTX_EA_BUFFER = b"ExtA"
CTX_SD_BUFFER = b"SecD"
CTX_DURABLE_HANDLE_REQUEST = b"DHnQ"
CTX_DURABLE_HANDLE_RECONNECT = b"DHnC"
CTX_ALLOCATION_SIZE = b"AlSi"
CTX_QUERY_MAXIMAL_ACCESS = b"MxAc"
CTX_TIMEWARP_TOKEN = b"TWrp"
CTX_QUERY_ON_DISK_ID = b"QFid"
CTX_REQUEST_LEASE = b"RqLs"
CTX_DURABLE_HANDLE_REQUEST_V2 = b"DH2Q"
CTX_DURABLE_HANDLE_RECONNECT_V2 = b"DH2C"
CTX_APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")
CTX_APP_INSTANCE_VERSION = bytes.fromhex("B982D0B73B56074FA07B524A8116A010")
CTX_SVHDX_OPEN_DEVICE = bytes.fromhex("9CCBCF9E04C1E643980E158DA1F6EC83")

_CREATE_REQ = struct.Struct("<HBBIQQIIIIIHHII")
assert _CREATE_REQ.size == 56


@dataclass(slots=True)
class CreateRequest:
    security_flags: int
    oplock_level: int
    impersonation_level: int
    desired_access: int
    file_attributes: int
    share_access: int
    disposition: int
    options: int
    name: str
    contexts: dict[bytes, bytes] = field(default_factory=dict)
    context_order: list[bytes] = field(default_factory=list)


def parse_create_contexts(buf: bytes) -> tuple[dict[bytes, bytes], list[bytes]]:
    """2.2.13.2 chain. Raises MessageError on any structural error (-> INVALID_PARAMETER)."""
    out: dict[bytes, bytes] = {}
    order: list[bytes] = []
    off = 0
    while True:
        if off + 16 > len(buf):
            raise MessageError("create context truncated")
        nxt, noff, nlen, _res, doff, dlen = struct.unpack_from("<IHHHHI", buf, off)
        if noff + nlen > (nxt or len(buf) - off) or off + noff + nlen > len(buf) or nlen == 0:
            raise MessageError("create context name out of bounds")
        if nlen < 4:   # every defined tag is 4 or 16 bytes; Windows rejects shorter ones (smb2.create.blob)
            raise MessageError("create context name too short")
        name = bytes(buf[off + noff: off + noff + nlen])
        if dlen:
            if off + doff + dlen > len(buf) or (nxt and doff + dlen > nxt):
                raise MessageError("create context data out of bounds")
            data = bytes(buf[off + doff: off + doff + dlen])
        else:
            data = b""
        if name in out:
            raise MessageError("duplicate create context")
        out[name] = data
        order.append(name)
        if nxt == 0:
            break
        if nxt % 8 or nxt < 16:
            raise MessageError("misaligned create context")
        off += nxt
    return out, order


def parse_create(msg) -> CreateRequest:
    if len(msg) < H + 56:
        raise MessageError("short create")
    (size, secflags, oplock, imp, _flags, _res, access, attrs, share, disp, opts,
     noff, nlen, coff, clen) = _CREATE_REQ.unpack_from(msg, H)
    if size != 57:
        raise MessageError("bad size")
    if nlen:
        if noff < H + 56 or noff + nlen > len(msg) or nlen % 2:
            raise MessageError("name out of bounds")
        try:
            name = bytes(msg[noff: noff + nlen]).decode("utf-16-le")
        except UnicodeDecodeError as e:
            raise MessageError("bad name") from e
    else:
        name = ""
    ctx: dict[bytes, bytes] = {}
    order: list[bytes] = []
    if clen:
        if coff < H + 56 or coff + clen > len(msg) or coff % 8:
            raise MessageError("contexts out of bounds")
        ctx, order = parse_create_contexts(bytes(msg[coff: coff + clen]))
    return CreateRequest(secflags, oplock, imp, access, attrs, share, disp, opts, name, ctx, order)


def pack_create_contexts(items: list[tuple[bytes, bytes]]) -> bytes:
    parts = []
    for i, (name, data) in enumerate(items):
        noff = 16
        doff = (noff + len(name) + 7) & ~7 if data else 0
        body = name + b"\0" * ((doff - noff - len(name)) if data else 0) + data
        item_len = 16 + len(body)
        pad = (8 - item_len % 8) % 8 if i != len(items) - 1 else 0
        nxt = item_len + pad if i != len(items) - 1 else 0
        parts.append(struct.pack("<IHHHHI", nxt, noff, len(name), 0, doff, len(data)) + body + b"\0" * pad)
    return b"".join(parts)


_CREATE_RESP = struct.Struct("<HBBIQQQQQQII16sII")
assert _CREATE_RESP.size == 88


def pack_create_response(oplock: int, flags: int, action: int, times, alloc: int, eof: int, attrs: int,
                         file_id: bytes, contexts: list[tuple[bytes, bytes]]) -> bytes:
    blob = pack_create_contexts(contexts) if contexts else b""
    coff = H + 88 if blob else 0
    return _CREATE_RESP.pack(89, oplock, flags, action, times[0], times[1], times[2], times[3], alloc, eof,
                             attrs, 0, file_id, coff, len(blob)) + (blob or b"\0")


# Lease contexts (2.2.13.2.8 / 2.2.13.2.10)
LEASE_READ = 0x1
LEASE_HANDLE = 0x2
LEASE_WRITE = 0x4
LEASE_FLAG_BREAK_IN_PROGRESS = 0x2
LEASE_FLAG_PARENT_LEASE_KEY_SET = 0x4


@dataclass(slots=True)
class LeaseRequest:
    key: bytes
    state: int
    flags: int
    parent_key: bytes | None
    epoch: int
    version: int


def parse_lease(data: bytes) -> LeaseRequest:
    if len(data) == 32:
        key, state, flags, _dur = struct.unpack_from("<16sIIQ", data, 0)
        return LeaseRequest(key, state, flags, None, 0, 1)
    if len(data) == 52:
        key, state, flags, _dur, parent, epoch, _r = struct.unpack_from("<16sIIQ16sHH", data, 0)
        return LeaseRequest(key, state, flags, parent if flags & LEASE_FLAG_PARENT_LEASE_KEY_SET else None,
                            epoch, 2)
    raise MessageError("bad lease context size")


def pack_lease(version: int, key: bytes, state: int, flags: int, epoch: int, parent: bytes | None) -> bytes:
    if version == 1:
        return struct.pack("<16sIIQ", key, state, flags & LEASE_FLAG_BREAK_IN_PROGRESS, 0)
    fl = flags | (LEASE_FLAG_PARENT_LEASE_KEY_SET if parent else 0)
    return struct.pack("<16sIIQ16sHH", key, state, fl, 0, parent or b"\0" * 16, epoch, 0)
