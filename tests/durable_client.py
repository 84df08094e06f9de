"""A small smbprotocol-based client for durable/persistent handle tests: CREATE with raw create
contexts (DHnQ, DHnC, DH2Q, DH2C, RqLs v2) and a parsed response, without raising on errors."""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from smbprotocol.connection import Connection, Dialects
from smbprotocol.create_contexts import SMB2CreateContextRequest
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (CreateDisposition, FilePipePrinterAccessMask, ImpersonationLevel, Open,
                              ShareAccess)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from smbnd_server import PASSWORD, USER

RW = FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE
SHARE_ALL = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
NONE, LEVEL_II, EXCLUSIVE, BATCH, LEASE = 0x00, 0x01, 0x08, 0x09, 0xFF
R, H, W = 1, 2, 4
PERSISTENT = 0x2
DHNQ, DHNC, DH2Q, DH2C, RQLS = b"DHnQ", b"DHnC", b"DH2Q", b"DH2C", b"RqLs"
FILE_OPENED, FILE_CREATED = 1, 2


def dhnq() -> tuple[bytes, bytes]:
    return DHNQ, bytes(16)


def dhnc(file_id: bytes) -> tuple[bytes, bytes]:
    return DHNC, file_id


def dh2q(create_guid: bytes, timeout_ms: int = 0, persistent: bool = False) -> tuple[bytes, bytes]:
    return DH2Q, struct.pack("<II8s16s", timeout_ms, PERSISTENT if persistent else 0, b"", create_guid)


def dh2c(file_id: bytes, create_guid: bytes, persistent: bool = False) -> tuple[bytes, bytes]:
    return DH2C, file_id + create_guid + struct.pack("<I", PERSISTENT if persistent else 0)


def lease_v2(key: bytes, state: int, epoch: int = 0) -> tuple[bytes, bytes]:
    return RQLS, struct.pack("<16sIIQ16sHH", key, state, 0, 0, bytes(16), epoch, 0)


def lease_v1(key: bytes, state: int) -> tuple[bytes, bytes]:
    return RQLS, struct.pack("<16sIIQ", key, state, 0, 0)


@dataclass
class CreateResult:
    status: int
    oplock: int = 0
    action: int = 0
    eof: int = 0
    file_id: bytes = b""
    contexts: dict = field(default_factory=dict)
    open: Open | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0

    def dh2q(self):
        """(Timeout, Flags) of the DH2Q response, or None."""
        b = self.contexts.get(DH2Q)
        return struct.unpack("<II", b[:8]) if b is not None else None

    def lease(self):
        """(key, state, flags, epoch) of the lease response, or None."""
        b = self.contexts.get(RQLS)
        if b is None:
            return None
        key, state, flags = struct.unpack_from("<16sII", b, 0)
        epoch = struct.unpack_from("<H", b, 48)[0] if len(b) >= 52 else None
        return key, state, flags, epoch


class RawRequest:
    """A request smbprotocol does not model (or models too strictly): OPLOCK_BREAK acks, raw IOCTLs."""

    def __init__(self, command: int, body: bytes):
        self.COMMAND = command
        self.body = body

    def pack(self) -> bytes:
        return self.body

    def __len__(self) -> int:
        return len(self.body)

    def __getitem__(self, key):   # what smbprotocol's credit charge looks at (IOCTL): one credit
        class _V(bytes):
            def get_value(self):
                return 0
        return _V()


LOCK_SHARED, LOCK_EXCLUSIVE, LOCK_UNLOCK, LOCK_FAIL_IMMEDIATELY = 0x1, 0x2, 0x4, 0x10


def _parse_contexts(buf: bytes) -> dict:
    out, off = {}, 0
    while buf and off + 16 <= len(buf):
        nxt, noff, nlen, _r, doff, dlen = struct.unpack_from("<IHHHHI", buf, off)
        out[bytes(buf[off + noff: off + noff + nlen])] = bytes(buf[off + doff: off + doff + dlen])
        if not nxt:
            break
        off += nxt
    return out


class Cli:
    def __init__(self, host: str, port: int, share: str, guid: uuid.UUID | None = None,
                 user: str = USER, password: str = PASSWORD, dialect=Dialects.SMB_3_1_1):
        self.guid = guid or uuid.uuid4()
        self.conn = Connection(self.guid, host, port, require_signing=False)
        self.conn.connect(dialect, timeout=15)
        self.sess = Session(self.conn, user, password, require_encryption=False)
        self.sess.connect()
        self.tree = TreeConnect(self.sess, rf"\\{host}\{share}")
        self.tree.connect()

    @property
    def server_caps(self) -> int:
        return int(self.conn.server_capabilities.get_value())

    @property
    def is_ca(self) -> bool:
        return bool(self.tree.is_ca_share)

    def create(self, name: str, contexts=(), oplock: int = NONE, access: int = RW, share: int = SHARE_ALL,
               disposition: int = CreateDisposition.FILE_OPEN_IF, options: int = 0) -> CreateResult:
        o = Open(self.tree, name)
        ctxs = []
        for cname, data in contexts:
            c = SMB2CreateContextRequest()
            c["buffer_name"] = cname
            c["buffer_data"] = data
            ctxs.append(c)
        msg, _recv = o.create(ImpersonationLevel.Impersonation, access, 0, share, disposition, options,
                              create_contexts=ctxs or None, oplock_level=oplock, send=False)
        req = self.conn.send(msg, self.sess.session_id, self.tree.tree_connect_id)
        try:
            resp = self.conn.receive(req)
        except SMBResponseException as e:
            return CreateResult(e.status)
        body = bytes(resp["data"].get_value())
        oplock_level, _flags, action = struct.unpack_from("<BBI", body, 2)
        eof = struct.unpack_from("<Q", body, 48)[0]
        fid = body[64:80]
        coff, clen = struct.unpack_from("<II", body, 80)
        ctx = _parse_contexts(body[coff - 64: coff - 64 + clen]) if clen else {}
        o.file_id = fid
        o._connected = True
        self.sess.open_table[fid] = o
        return CreateResult(0, oplock_level, action, eof, fid, ctx, o)

    def raw(self, command: int, body: bytes) -> tuple[int, bytes]:
        req = self.conn.send(RawRequest(command, body), self.sess.session_id, self.tree.tree_connect_id)
        try:
            resp = self.conn.receive(req)
        except SMBResponseException as e:
            return e.status, b""
        return 0, bytes(resp["data"].get_value())

    def ioctl(self, ctl: int, file_id: bytes, data: bytes = b"", max_out: int = 0) -> int:
        """FSCTL on a handle; returns the status (2.2.31: IOCTL request, input right after it)."""
        body = struct.pack("<HHI16sIIIIIIII", 57, 0, ctl, file_id, 120 if data else 0, len(data), 0, 0, 0,
                           max_out, 1, 0) + data
        return self.raw(0x0B, body)[0]

    def lock(self, file_id: bytes, offset: int, length: int, flags: int) -> int:
        """One-element LOCK (2.2.26); returns the status."""
        body = struct.pack("<HHI16sQQII", 48, 1, 0, file_id, offset, length, flags, 0)
        return self.raw(0x0A, body)[0]

    def rename(self, file_id: bytes, new_name: str) -> int:
        """SET_INFO FileRenameInformation (2.2.39, MS-FSCC 2.4.37.2); returns the status."""
        n = new_name.encode("utf-16-le")
        info = struct.pack("<B7sQI", 0, b"", 0, len(n)) + n
        body = struct.pack("<HBBIHHI16s", 33, 1, 10, len(info), 96, 0, 0, file_id) + info
        return self.raw(0x11, body)[0]

    def close(self) -> None:
        try:
            self.conn.disconnect(True, timeout=10)
        except Exception:
            try:
                self.conn.disconnect(False)
            except Exception:
                pass

    def drop(self) -> None:
        """Lose the TCP connection without LOGOFF (as a network failure does)."""
        try:
            self.conn.disconnect(False)
        except Exception:
            pass
