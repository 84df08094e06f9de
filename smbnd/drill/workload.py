"""The built-in drill client: an smbprotocol writer/verifier holding a persistent handle.

It behaves like a Hyper-V/SQL Server host on a continuously available share (MS-SMB2 3.2.4.3: a
CREATE with SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2, flag SMB2_DHANDLE_FLAG_PERSISTENT, and an RWH
lease v2, 2.2.13.2.11 / 2.2.13.2.10): it writes fixed-size blocks with SMB2_WRITEFLAG_WRITE_THROUGH
(2.2.21) at a rate and periodically reads blocks back and compares them. When the connection is
lost (or a request gets no answer within ``io_timeout``) it reconnects to the same address with
backoff and reclaims the open as 3.2.4.4 / 3.2.7.1 describe: a new Connection with the same
ClientGuid, a new session and tree connect, and a CREATE carrying
SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2 (2.2.13.2.12) with the same FileId and CreateGuid plus the
lease key; then it retries the interrupted I/O. Every logical I/O is one record (start, end,
status, attempts); reconnects are records too (op "reconnect", ``reclaimed``).
"""
from __future__ import annotations

import logging
import random
import struct
import threading
import time
import uuid

from smbprotocol.connection import Connection, Dialects
from smbprotocol.create_contexts import SMB2CreateContextRequest
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (CreateDisposition, FilePipePrinterAccessMask, ImpersonationLevel, Open,
                              SMB2ReadResponse, SMB2WriteResponse)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

logging.getLogger("smbprotocol").setLevel(logging.CRITICAL)   # the worker logs every lost connection

STATUS_OK = 0
# statuses that mean "this connection/session/tree is gone" -> reconnect and reclaim (3.2.5.1.x)
RECONNECT_STATUSES = {0xC00000C9, 0xC0000203, 0xC000035C, 0xC0000128, 0xC0000008, 0xC000020C}
# DH2C answers worth retrying inside the reconnect window (the new owner may still be loading its
# stores): FILE_NOT_AVAILABLE 3.3.5.9, OBJECT_NAME_NOT_FOUND 3.3.5.9.12, BAD_NETWORK_NAME, INVALID_PARAMETER
RECLAIM_RETRY = {0xC0000467, 0xC0000034, 0xC00000CC, 0xC000000D}
LEASE, R, H, W = 0xFF, 1, 2, 4
DH2_PERSISTENT = 0x2
FILE_WRITE_THROUGH = 0x2
SHARE_RW = 0x3
RW = FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE


class Clock:
    """Drill time: seconds since t0 (monotonic), convertible from the wall clock of event records."""

    def __init__(self):
        self.t0_mono = time.monotonic()
        self.t0_wall = time.time()

    def now(self) -> float:
        return time.monotonic() - self.t0_mono

    def from_wall(self, ts: float) -> float:
        return ts - self.t0_wall


class IoFailed(Exception):
    """An I/O that completed with a result the application sees as an error (no reconnect)."""


def block_bytes(tag: bytes, seq: int, slot: int, size: int) -> bytes:
    """Content of write number ``seq`` (at block ``slot``): a self-describing header + seeded noise."""
    head = struct.pack("<16sQQ", tag, seq, slot)
    if size <= len(head):
        return head[:size]
    return head + random.Random(int.from_bytes(tag[:8], "little") * 1_000_003 + seq).randbytes(size - len(head))


def _ctx(name: bytes, data: bytes) -> SMB2CreateContextRequest:
    c = SMB2CreateContextRequest()
    c["buffer_name"] = name
    c["buffer_data"] = data
    return c


def _parse_contexts(buf: bytes) -> dict:
    out, off = {}, 0
    while buf and off + 16 <= len(buf):
        nxt, noff, nlen, _r, doff, dlen = struct.unpack_from("<IHHHHI", buf, off)
        out[bytes(buf[off + noff: off + noff + nlen])] = bytes(buf[off + doff: off + doff + dlen])
        if not nxt:
            break
        off += nxt
    return out


class SmbChannel:
    """One Connection + Session + TreeConnect (smbprotocol), requests with a timeout."""

    def __init__(self, address: str, port: int, unc_host: str, share: str, user: str, password: str,
                 client_guid: uuid.UUID, timeout: float):
        self.timeout = timeout
        self.conn = Connection(client_guid, address, port, require_signing=False)
        try:
            self.conn.connect(Dialects.SMB_3_1_1, timeout=max(1, int(timeout)))
            self.sess = Session(self.conn, user, password, require_encryption=False)
            self.sess.connect()
            self.tree = TreeConnect(self.sess, rf"\\{unc_host}\{share}")
            self.tree.connect()
        except BaseException:
            self.drop()             # no half-built connection (socket + receive thread) left behind
            raise

    def call(self, msg):
        req = self.conn.send(msg, self.sess.session_id, self.tree.tree_connect_id)
        return self.conn.receive(req, timeout=self.timeout)

    def create(self, name: str, contexts: list, disposition: int, options: int):
        """CREATE (2.2.13) with raw contexts -> (Open, response contexts)."""
        o = Open(self.tree, name)
        msg, _ = o.create(ImpersonationLevel.Impersonation, RW, 0, SHARE_RW, disposition, options,
                          create_contexts=[_ctx(n, d) for n, d in contexts], oplock_level=LEASE, send=False)
        body = bytes(self.call(msg)["data"].get_value())
        fid = body[64:80]
        coff, clen = struct.unpack_from("<II", body, 80)
        o.file_id = fid
        o._connected = True
        self.sess.open_table[fid] = o
        return o, _parse_contexts(body[coff - 64: coff - 64 + clen]) if clen else {}

    def drop(self) -> None:
        try:
            self.conn.disconnect(False)
        except Exception:
            pass

    def close(self) -> None:
        try:
            self.conn.disconnect(True, timeout=5)
        except Exception:
            self.drop()


class WriterVerifier:
    """One drill client: persistent handle + RWH lease, paced write-through writes, read-back checks."""

    def __init__(self, name: str, address: str, port: int, share: str, user: str, password: str,
                 clock: Clock, unc_host: str = "", file: str = "", block_size: int = 65536, blocks: int = 64,
                 rate: float = 20.0, verify_every: int = 8, io_timeout: float = 30.0,
                 reconnect_timeout: float = 120.0, max_ios: int = 1_000_000):
        self.name, self.address, self.port, self.share = name, address, port, share
        self.unc_host = unc_host or address
        self.user, self.password, self.clock = user, password, clock
        self.file = file or f"drill-{name}.bin"
        self.block_size, self.blocks, self.rate = block_size, blocks, rate
        self.verify_every, self.io_timeout, self.reconnect_timeout = verify_every, io_timeout, reconnect_timeout
        self.max_ios = max_ios
        self.client_guid = uuid.uuid4()
        self.create_guid = uuid.uuid4().bytes
        self.lease_key = uuid.uuid4().bytes
        self.tag = self.create_guid
        self.records: list[dict] = []
        self.notes: list[str] = []
        self.stop = threading.Event()
        self.chan: SmbChannel | None = None
        self.open: Open | None = None
        self.file_id = b""
        self.acked: dict[int, int] = {}             # slot -> seq of the last acknowledged write
        self.maybe: dict[int, set[int]] = {}        # slot -> seqs of writes that failed (content unknown)
        self.verify_failures = 0
        self.final_verified: bool | None = None
        self.handle_lost = False
        self._move_to: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.kick = threading.Event()   # a witness notification cuts the reconnect backoff short

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "WriterVerifier":
        self._thread = threading.Thread(target=self._run, name=f"drill-{self.name}", daemon=True)
        self._thread.start()
        return self

    def finish(self, timeout: float = 180.0) -> None:
        self.stop.set()
        if self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.notes.append(f"client thread still running after {timeout:.0f} s")

    def move_to(self, address: str) -> None:
        """Witness CLIENT_MOVE (MS-SWN 3.2.4.1): reconnect to ``address`` before the next I/O - unless
        the writer already reconnected to that address in the last 2 s (the move is then done)."""
        recent = [r for r in self.records[-20:] if r["op"] == "reconnect" and r["ok"]]
        if recent and recent[-1]["address"] == address and self.clock.now() - recent[-1]["end"] < 2.0:
            self.notes.append(f"witness move to {address} at t={self.clock.now():.3f}: already reconnected")
            return
        with self._lock:
            self._move_to = address
        self.kick.set()

    def _record(self, op: str, start: float, status: int | str, **kw) -> dict:
        rec = {"client": self.name, "op": op, "start": round(start, 4), "end": round(self.clock.now(), 4),
               "status": status if isinstance(status, str) else f"0x{status:08X}", "ok": status == STATUS_OK}
        rec.update(kw)
        self.records.append(rec)
        return rec

    def _run(self) -> None:
        t = self.clock.now()
        try:
            self.chan = SmbChannel(self.address, self.port, self.unc_host, self.share, self.user, self.password,
                                   self.client_guid, self.io_timeout)
            self.open, ctx = self.chan.create(
                self.file, [(b"DH2Q", struct.pack("<II8s16s", 0, DH2_PERSISTENT, b"", self.create_guid)),
                            (b"RqLs", struct.pack("<16sIIQ16sHH", self.lease_key, R | W | H, 0, 0, bytes(16), 0, 0))],
                CreateDisposition.FILE_OVERWRITE_IF, FILE_WRITE_THROUGH)
        except SMBResponseException as e:
            self._record("open", t, e.status, error=str(e)[:200])
            self.handle_lost = True
            return
        except Exception as e:
            self._record("open", t, "CONNECT_FAILED", error=repr(e)[:200])
            self.handle_lost = True
            return
        self.file_id = self.open.file_id
        dh2q = ctx.get(b"DH2Q")
        lease = ctx.get(b"RqLs")
        persistent = bool(dh2q and struct.unpack_from("<I", dh2q, 4)[0] & DH2_PERSISTENT)
        lease_state = struct.unpack_from("<I", lease, 16)[0] if lease and len(lease) >= 20 else 0
        self._record("open", t, STATUS_OK, persistent=persistent, lease=lease_state, address=self.address)
        if not persistent:
            self.notes.append("server did not grant a persistent handle (DH2Q response without PERSISTENT)")
        try:
            self._loop()
            self._final_verify()
        finally:
            try:
                if self.open is not None and not self.handle_lost:
                    t = self.clock.now()
                    self._io("close", lambda: self.chan.call(self.open.close(send=False)[0]), t_start=t)
            finally:
                if self.chan:
                    self.chan.close()

    # ------------------------------------------------------------------ I/O with transparent failover
    def _io(self, op: str, fn, t_start: float | None = None, **kw):
        """One logical I/O: retried across reconnects until it completes or the handle is lost."""
        start = self.clock.now() if t_start is None else t_start
        attempts, reconnects = 0, 0
        while attempts < 50:
            attempts += 1
            if self._move_to:
                with self._lock:
                    addr, self._move_to = self._move_to, None
                self.address = addr
                if not self._reconnect("witness_move"):
                    break
                reconnects += 1
            try:
                result = fn()
                self._record(op, start, STATUS_OK, attempts=attempts, reconnects=reconnects, **kw)
                return result
            except IoFailed as e:
                self._record(op, start, str(e), attempts=attempts, reconnects=reconnects, **kw)
                return None
            except SMBResponseException as e:
                if e.status not in RECONNECT_STATUSES:
                    self._record(op, start, e.status, attempts=attempts, reconnects=reconnects, **kw)
                    return None
                reason = f"status 0x{e.status:08X}"
            except Exception as e:     # connection closed/reset, request timeout, worker died
                reason = type(e).__name__
            if self.handle_lost or not self._reconnect(reason):
                break
            reconnects += 1
        self._record(op, start, "HANDLE_LOST" if self.handle_lost else "GAVE_UP", attempts=attempts,
                     reconnects=reconnects, **kw)
        return None

    def _reconnect(self, reason: str) -> bool:
        """Reconnect + reclaim (MS-SMB2 3.2.4.4: DH2C with FileId and CreateGuid). Backoff 0.05..0.5 s."""
        start = self.clock.now()
        if self.chan:
            self.chan.drop()
            self.chan = None
        delay, tries, last = 0.05, 0, ""
        deadline = time.monotonic() + self.reconnect_timeout
        while time.monotonic() < deadline and tries < 10_000:
            tries += 1
            self.kick.clear()
            with self._lock:            # a witness move that came in during the backoff applies now
                if self._move_to:
                    self.address, self._move_to = self._move_to, None
            chan = None
            try:
                chan = SmbChannel(self.address, self.port, self.unc_host, self.share, self.user, self.password,
                                  self.client_guid, min(self.io_timeout, 10.0))
                dh2c = self.file_id + self.create_guid + struct.pack("<I", DH2_PERSISTENT)
                lease = struct.pack("<16sIIQ16sHH", self.lease_key, R | W | H, 0, 0, bytes(16), 0, 0)
                self.open, ctx = chan.create(self.file, [(b"DH2C", dh2c), (b"RqLs", lease)],
                                             CreateDisposition.FILE_OPEN, 0)
                chan.timeout = self.io_timeout
                self.chan = chan
                reclaimed = self.open.file_id[:8] == self.file_id[:8]
                self._record("reconnect", start, STATUS_OK, reason=reason, tries=tries, reclaimed=reclaimed,
                             address=self.address, file_id_changed=self.open.file_id != self.file_id)
                self.file_id = self.open.file_id
                return True
            except SMBResponseException as e:
                last = f"0x{e.status:08X}"
                if e.status not in RECLAIM_RETRY and e.status not in RECONNECT_STATUSES:
                    if chan:
                        chan.close()
                    self.handle_lost = True
                    self._record("reconnect", start, e.status, reason=reason, tries=tries, reclaimed=False,
                                 address=self.address)
                    return False
            except Exception as e:
                last = type(e).__name__
            if chan:
                chan.drop()
            self.kick.wait(delay)
            delay = min(delay * 2, 0.5)
        self.handle_lost = True
        self._record("reconnect", start, "RECONNECT_TIMEOUT", reason=reason, tries=tries, reclaimed=False,
                     address=self.address, last=last)
        return False

    # ------------------------------------------------------------------ the workload
    def _write(self, seq: int, slot: int) -> None:
        data = block_bytes(self.tag, seq, slot, self.block_size)

        def op():
            msg = self.open.write(data, slot * self.block_size, write_through=True, send=False)[0]
            resp = SMB2WriteResponse()
            resp.unpack(self.chan.call(msg)["data"].get_value())
            n = resp["count"].get_value()
            if n != len(data):
                raise IoFailed("SHORT_WRITE")
            return n

        self.maybe.setdefault(slot, set()).add(seq)
        if self._io("write", op, offset=slot * self.block_size, length=self.block_size, seq=seq) is not None:
            self.acked[slot] = seq
            self.maybe[slot] = set()

    def _read(self, slot: int) -> bytes | None:
        def op():
            msg = self.open.read(slot * self.block_size, self.block_size, send=False)[0]
            resp = SMB2ReadResponse()
            resp.unpack(self.chan.call(msg)["data"].get_value())
            return bytes(resp["buffer"].get_value())
        return self._io("read", op, offset=slot * self.block_size, length=self.block_size)

    def _verify_slot(self, slot: int, final: bool = False) -> bool:
        data = self._read(slot)
        if data is None:
            return False
        want = {s for s in self.maybe.get(slot, set())}
        if slot in self.acked:
            want.add(self.acked[slot])
        ok = any(data == block_bytes(self.tag, s, slot, self.block_size) for s in want)
        if not ok:
            self.verify_failures += 1
            got = struct.unpack_from("<16sQQ", data, 0) if len(data) >= 32 else None
            self._record("verify", self.clock.now(), "DATA_MISMATCH", slot=slot, final=final,
                         expected_seq=sorted(want), got_seq=got[1] if got and got[0] == self.tag else None)
        return ok

    def _loop(self) -> None:
        seq, n_since_verify = 0, 0
        rng = random.Random(self.tag)
        next_due = time.monotonic()
        while not self.stop.is_set() and seq < self.max_ios and not self.handle_lost:
            slot = seq % self.blocks
            self._write(seq, slot)
            seq += 1
            n_since_verify += 1
            if self.verify_every and n_since_verify >= self.verify_every and self.acked and not self.handle_lost:
                n_since_verify = 0
                self._verify_slot(rng.choice(sorted(self.acked)))
            next_due = max(next_due + 1.0 / self.rate, time.monotonic())
            self.stop.wait(max(0.0, next_due - time.monotonic()))

    def _final_verify(self) -> None:
        if self.handle_lost:
            self.final_verified = False
            return
        ok = True
        for slot in sorted(set(self.acked) | set(self.maybe)):
            if not self._verify_slot(slot, final=True):
                ok = False
            if self.handle_lost:
                ok = False
                break
        self.final_verified = ok

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        recs = self.records
        recon = [r for r in recs if r["op"] == "reconnect"]
        errors = [r for r in recs if not r["ok"]]
        return {"client": self.name, "kind": "writer", "address": self.address, "share": self.share,
                "file": self.file, "ios": sum(1 for r in recs if r["op"] in ("write", "read")),
                "writes_acked": sum(1 for r in recs if r["op"] == "write" and r["ok"]),
                "reconnects": len(recon), "reclaimed": sum(1 for r in recon if r["ok"] and r.get("reclaimed")),
                "handle_lost": self.handle_lost, "errors": len(errors),
                "data_verified": bool(self.final_verified) and self.verify_failures == 0,
                "verify_failures": self.verify_failures, "notes": list(self.notes)}
