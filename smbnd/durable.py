"""Durable, persistent and resilient opens: state that outlives its connection.

MS-SMB2 3.3.5.9.6 / 3.3.5.9.10 (DHnQ / DH2Q: granting), 3.3.5.9.7 / 3.3.5.9.12 (DHnC / DH2C:
reconnecting), 3.3.5.9 (STATUS_FILE_NOT_AVAILABLE while a persistent open is disconnected),
3.3.7.1 and 3.3.5.6 (connection loss and LOGOFF keep such opens, without Session, TreeConnect
and Connection), 3.3.2.2 / 3.3.2.4 (the durable and resilient scavenger timers), 3.3.4.6 /
3.3.4.7 (an oplock or lease break aimed at a disconnected durable open closes it instead) and
3.3.5.15.9 (FSCTL_LMR_REQUEST_RESILIENCY).

Persistent opens (and resilient opens on CA shares) are also written to the share's handle
store before the response that grants them (smbnd.castore); a restarted server rebuilds them
from it, disconnected with a fresh window.

Hooks, each one call from the shared code:
  files.create()          before_create (reconnect answers at once), before_open, grant
  files.close_open()      on_close
  Server.destroy_session  disconnect (instead of closing)
  oplock notifications    break_disconnected
  locks / breaks          castore.persist_locks / castore.persist_caching (acks, timeouts)
"""
from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from typing import Any

from . import status as st
from .errors import SmbError
from .lease import H, R, W
from .parking import cancel, later, soon
from .wire import create as cr
from .wire import header as hd
from .wire import negotiate as ng
from .wire.messages import MessageError

log = logging.getLogger("smbnd.durable")

DHANDLE_FLAG_PERSISTENT = 0x00000002          # 2.2.13.2.11 / 2.2.13.2.12 / 2.2.14.2.12
ZERO_GUID = b"\0" * 16
DHNQ, DHNC = cr.CTX_DURABLE_HANDLE_REQUEST, cr.CTX_DURABLE_HANDLE_RECONNECT
DH2Q, DH2C = cr.CTX_DURABLE_HANDLE_REQUEST_V2, cr.CTX_DURABLE_HANDLE_RECONNECT_V2
_OVERWRITING = (cr.FILE_SUPERSEDE, cr.FILE_OVERWRITE, cr.FILE_OVERWRITE_IF)
CTX_POSIX = bytes.fromhex("93AD25509CB411E7B42383DE968BCD7C")
# what may come along with a reconnect: the lease, and contexts that only ask for information
# (the Linux client sends QFid with its DH2C). Anything that would shape a new open (EAs, security
# descriptor, allocation size, ...) fails it with STATUS_OBJECT_NAME_NOT_FOUND, as Samba does.
_RECONNECT_EXTRAS = {cr.CTX_REQUEST_LEASE, cr.CTX_QUERY_ON_DISK_ID, cr.CTX_QUERY_MAXIMAL_ACCESS, CTX_POSIX}


@dataclass(eq=False)
class DurableRequest:
    """What a CREATE asked for with DHnQ (v2=False) or DH2Q (2.2.13.2.3 / 2.2.13.2.11)."""
    v2: bool
    timeout: int = 0                # ms, 0 = the server's default
    persistent: bool = False
    create_guid: bytes = ZERO_GUID


@dataclass(eq=False)
class DurableInfo:
    """Per-open durable state (Open.dh): MS-SMB2 3.3.1.10 DurableOwner, the disconnect window."""
    owner: tuple[str, str]          # Open.DurableOwner: (user, domain), lower case
    v2: bool = False
    resiliency_ms: int = 0          # Open.ResiliencyTimeout
    disconnected: bool = False      # Open.Session/TreeConnect/Connection are NULL
    deadline: float = 0.0           # time.monotonic() when the scavenger closes it
    timer: Any = None
    store: Any = None               # the share's HandleStore (persistent opens, CA resilient opens)
    saved_caching: Any = None       # (oplock level, lease state, epoch) last written to the store


def _owner(session) -> tuple[str, str]:
    return (session.user or "").lower(), (session.domain or "").lower()


class DurableManager:
    def __init__(self, server):
        self.server = server
        self.by_pid: dict[int, Any] = {}     # FileId.Persistent -> Open (durable/persistent/resilient)
        from .castore import CaStores
        from .pending import PendingOpens
        self.stores = CaStores(server, self)
        self.pending = PendingOpens(server, self.stores)   # loaded store rows not rebuilt yet

    # ------------------------------------------------------------------ configuration
    def default_timeout_ms(self) -> int:
        return int(self.server.config.durable_timeout) * 1000

    def v1_timeout_ms(self) -> int:
        """The window of a DHnQ open: MS-SMB2 3.3.5.9.6 leaves it to the implementation (<Windows:
        16 minutes>), config durable_v1_timeout."""
        return int(getattr(self.server.config, "durable_v1_timeout", 960)) * 1000

    def max_timeout_ms(self) -> int:
        return int(self.server.config.durable_max_timeout) * 1000

    def load(self) -> None:
        """Server start: rebuild the opens recorded in the CA shares' stores (all disconnected)."""
        self.stores.load_all()

    # ------------------------------------------------------------------ CREATE, first look
    def before_create(self, req, r):
        """Before any other CREATE processing: the durable contexts' combinations and sizes; a
        reconnect (DHnC / DH2C) is answered here (no path name validation, 3.3.5.9.7 / 3.3.5.9.12).
        Returns a Reply, a DurableRequest for grant(), or None."""
        tree = req.tree
        if tree is None or tree.share.is_ipc:
            return None                      # no durable handles on IPC$ (as Samba)
        ctx = r.contexts
        v3 = req.conn.dialect >= 0x0300      # DH2Q / DH2C exist in the 3.x dialect family only
        dhnq, dhnc = ctx.get(DHNQ), ctx.get(DHNC)
        dh2q, dh2c = (ctx.get(DH2Q), ctx.get(DH2C)) if v3 else (None, None)
        if dhnq is None and dhnc is None and dh2q is None and dh2c is None:
            return None
        # 3.3.5.9.6 / 3.3.5.9.7 / 3.3.5.9.10: v1 and v2 contexts, and request with reconnect of
        # the same version, exclude each other (DHnQ next to DHnC is ignored)
        if (dhnc is not None and (dh2c is not None or dh2q is not None)) or \
                (dh2q is not None and (dh2c is not None or dhnq is not None)) or \
                (dh2c is not None and dhnq is not None):
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        if dhnc is not None:
            if len(dhnc) != 16:
                raise SmbError(st.STATUS_INVALID_PARAMETER)
            if set(ctx) - {DHNC, DHNQ} - _RECONNECT_EXTRAS:
                raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
            return self._reconnect(req, r, struct.unpack_from("<Q", dhnc, 0)[0], None, 0)
        if dh2c is not None:
            if len(dh2c) != 36:
                raise SmbError(st.STATUS_INVALID_PARAMETER)
            if set(ctx) - {DH2C} - _RECONNECT_EXTRAS:
                raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
            pid, _vid, guid, flags = struct.unpack_from("<QQ16sI", dh2c, 0)
            return self._reconnect(req, r, pid, guid, flags)
        if dh2q is not None:
            if len(dh2q) != 32:
                raise SmbError(st.STATUS_INVALID_PARAMETER)
            timeout, flags, _res, guid = struct.unpack_from("<II8s16s", dh2q, 0)
            if req.hdr.flags & hd.FLAGS_REPLAY_OPERATION:
                self.pending.create_guid(guid, req.conn.client_guid)
                o = next((x for x in self.by_pid.values() if x.create_guid == guid and not x.closed
                          and x.client_guid == req.conn.client_guid and x.dh is not None
                          and x.dh.disconnected), None)
                if o is not None:
                    return self._replay_reclaim(req, r, o)
            return DurableRequest(True, timeout, bool(flags & DHANDLE_FLAG_PERSISTENT), guid)
        if len(dhnq) != 16:
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        return DurableRequest(False)

    # ------------------------------------------------------------------ CREATE, other openers
    def before_open(self, req, r, host: str, stream: str) -> None:
        """3.3.5.9: while a persistent open of the file is disconnected, other CREATEs fail with
        STATUS_FILE_NOT_AVAILABLE (until reclaimed or expired). A disconnected durable open whose
        oplock or lease the new open would break (MS-FSA 2.1.4.12, as OplockManager.check_open
        decides) is closed instead of broken (3.3.4.6 / 3.3.4.7), before the CREATE looks at the
        file: its delete-on-close, share modes and caching are gone for the new open."""
        if not self.by_pid and not self.pending.rows:
            return
        try:
            stt = os.lstat(host)
        except OSError:
            return
        from .handlers.create_ext import state_key
        state = self.server.files.get(state_key(stt, stream))   # pending opens of the file rebuilt
        if state is None:
            return
        disc = [o for o in state.opens if o.dh is not None and o.dh.disconnected and not o.closed]
        if not disc:
            return
        now = time.monotonic()
        for o in disc:
            if o.dh.deadline and now >= o.dh.deadline:
                self._expire(o)
        client_guid = req.conn.client_guid
        lease_key = None
        if r.oplock_level == cr.OPLOCK_LEVEL_LEASE and cr.CTX_REQUEST_LEASE in r.contexts:
            try:
                lease_key = cr.parse_lease(r.contexts[cr.CTX_REQUEST_LEASE]).key
            except MessageError:
                pass
        # The owner itself (same ClientGuid, and the same lease key when the open has a lease) is
        # let through: it is back and opens the file again while some of its handles wait to be
        # reclaimed -- the Linux client does so with handles it had closed lazily ("deferred
        # close") and never reclaims. Its new open shares the old ones' lease and share modes.
        if any(o.persistent and not o.closed and not self._own(o, client_guid, lease_key) for o in disc):
            raise SmbError(st.STATUS_FILE_NOT_AVAILABLE)
        from .handlers.access import map_generic
        access = map_generic(r.desired_access)
        overwrite = r.disposition in _OVERWRITING
        doc = bool(r.options & cr.FILE_DELETE_ON_CLOSE)
        for o in disc:
            if not o.closed and not o.persistent and self._would_break(o, client_guid, access, r.share_access,
                                                  overwrite, doc, lease_key):
                log.info("closing disconnected durable open %s of %s: a new open breaks it", o.name,
                         o.dh.owner[0])
                self._close(o)

    @staticmethod
    def _own(o, client_guid: bytes, lease_key) -> bool:
        if (o.client_guid or b"") != client_guid:
            return False
        return o.lease is None or (lease_key is not None and o.lease.key == lease_key)

    def _would_break(self, e, client_guid, access, share_access, overwrite, doc, lease_key) -> bool:
        """Whether a new open breaks e's caching (the rules of OplockManager.check_open)."""
        from .handlers.access import sharing_conflict
        from .oplock import LEASE_STAT_ACCESS, _stat_open
        el = e.lease
        if el is not None and lease_key is not None and el.client_guid == client_guid and el.key == lease_key:
            return False        # the client's own lease
        e_type = self.server.oplocks.caching(e)
        if not e_type:
            return False
        open_access = access | (cr.FILE_WRITE_DATA if overwrite else 0)
        if _stat_open(open_access) or (el is not None and _stat_open(open_access, LEASE_STAT_ACCESS)):
            return False
        sharing = sharing_conflict([e], access, share_access)
        break_to = e_type & ~((H if sharing else W) | (H if doc else 0))
        if overwrite:
            break_to &= ~(H | R)
        return bool(e_type & ~break_to)

    # ------------------------------------------------------------------ CREATE, the grant
    def grant(self, req, o, dreq: DurableRequest | None, out_ctx: list) -> None:
        """Successful Open Initialization with DHnQ (3.3.5.9.6) or DH2Q (3.3.5.9.10): durable with
        a batch oplock or an H lease; persistent when asked for on a CA share while the server
        advertises PERSISTENT_HANDLES (no caching needed then); never on directories."""
        if o.lease is not None and len(o.lease.opens) > 1:
            # 3.3.5.9.8: this open may have upgraded a lease that stored opens share
            self.stores.persist_caching([x for x in o.lease.opens if x is not o])
        if dreq is None or o.is_directory or o.is_pipe:
            return
        conn = req.conn
        share = req.tree.share
        persistent = (dreq.v2 and dreq.persistent and bool(share.config and share.config.ca)
                      and bool(conn.server_capabilities & ng.CAP_PERSISTENT_HANDLES))
        if not persistent and not self.server.oplocks.caching(o) & H:
            return
        if dreq.v2:
            t = dreq.timeout or self.default_timeout_ms()
            timeout = min(t, self.max_timeout_ms())
        else:
            timeout = self.v1_timeout_ms()     # DHnQ carries no timeout (2.2.13.2.3)
        o.durable = True
        o.persistent = persistent
        o.durable_timeout = timeout
        o.create_guid = dreq.create_guid if dreq.v2 else ZERO_GUID
        if not o.client_guid:
            o.client_guid = conn.client_guid
        o.dh = DurableInfo(_owner(req.session), v2=dreq.v2)
        self.by_pid[o.persistent_id] = o
        if persistent and not self.stores.persist_new(o, share):
            o.persistent = False        # the store failed: durable only (logged)
            persistent = False
        if dreq.v2:
            out_ctx.append((DH2Q, struct.pack("<II", timeout, DHANDLE_FLAG_PERSISTENT if persistent else 0)))
        else:
            out_ctx.append((DHNQ, b"\0" * 8))     # 2.2.14.2.3: 8 reserved bytes

    # ------------------------------------------------------------------ reconnect
    def _reconnect(self, req, r, pid: int, create_guid: bytes | None, flags: int):
        """3.3.5.9.7 (create_guid None, DHnC) / 3.3.5.9.12 (DH2C)."""
        conn, tree = req.conn, req.tree
        want_persistent = bool(flags & DHANDLE_FLAG_PERSISTENT)
        o = self.pending.lookup_pid(pid)
        if o is None and create_guid is not None and want_persistent and tree.share.config.ca \
                and conn.server_capabilities & ng.CAP_PERSISTENT_HANDLES:
            self.pending.create_guid(create_guid)
            o = next((x for x in self.by_pid.values() if x.persistent and x.create_guid == create_guid
                      and not x.closed), None)
        if o is not None and not o.closed and o.dh is not None and o.dh.disconnected and o.dh.deadline \
                and time.monotonic() >= o.dh.deadline:
            self._expire(o)
        lr = None
        if cr.CTX_REQUEST_LEASE in r.contexts and conn.dialect >= 0x0210:
            try:
                lr = cr.parse_lease(r.contexts[cr.CTX_REQUEST_LEASE])
            except MessageError:
                raise SmbError(st.STATUS_INVALID_PARAMETER) from None
        why = self._why_not(o, conn, create_guid, want_persistent, lr)
        if why is not None:
            log.info("%s reconnect of persistent id %#x refused: %s", "DH2C" if create_guid is not None
                     else "DHnC", pid, why)
            raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
        if o.lease is not None and not o.delete_on_close:
            lk = tree.share.fs.lookup(r.name)
            if lk.status != st.STATUS_SUCCESS or lk.host_path != o.host_path \
                    or lk.stream_name.upper() != o.stream.upper():
                raise SmbError(st.STATUS_INVALID_PARAMETER)   # Open.Lease.FileName differs
        if _owner(req.session) != o.dh.owner:
            log.info("reconnect of %s refused: %s is not its DurableOwner", o.name, req.session.user)
            raise SmbError(st.STATUS_ACCESS_DENIED)
        if o.fd is None and not o.is_directory and not self.stores.reopen_fd(o):
            self._close(o)                   # the file is gone or was replaced meanwhile
            raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
        self._attach(req, o)
        log.info("reconnected %s open %s (persistent id %#x)", "persistent" if o.persistent else
                 "durable" if o.durable else "resilient", o.name, o.persistent_id)
        return self._response(req, r, o)

    def _replay_reclaim(self, req, r, o):
        """A replayed DH2Q CREATE (SMB2_FLAGS_REPLAY_OPERATION) whose Open lost its connection:
        the client gets that Open back, as created (3.3.5.9.10 finds it by CreateGuid and
        ClientGuid; smbtorture smb2.replay.replay5)."""
        if o.dh.deadline and time.monotonic() >= o.dh.deadline:
            self._expire(o)
            return DurableRequest(True)     # gone: an ordinary new open
        if _owner(req.session) != o.dh.owner:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        if o.fd is None and not o.is_directory and not self.stores.reopen_fd(o):
            self._close(o)
            raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
        self._attach(req, o)
        log.info("replayed CREATE reclaimed %s (persistent id %#x)", o.name, o.persistent_id)
        try:
            from . import replay
            return replay.replay_response(req, r, o)
        except (ImportError, AttributeError):
            return self._response(req, r, o)

    @staticmethod
    def _why_not(o, conn, create_guid, want_persistent: bool, lr) -> str | None:
        """The STATUS_OBJECT_NAME_NOT_FOUND conditions of 3.3.5.9.7 / 3.3.5.9.12, or None."""
        if o is None or o.closed or o.dh is None:
            return "no such open"
        if o.lease is not None and o.lease.client_guid != conn.client_guid:
            return "another ClientGuid holds its lease"
        if create_guid is not None:
            if o.persistent and not want_persistent:
                return "persistent open reclaimed without SMB2_DHANDLE_FLAG_PERSISTENT"
            if (o.create_guid or ZERO_GUID) != create_guid:
                return "CreateGuid differs"
            if not (o.durable or o.persistent):
                return "neither durable nor persistent"
        elif not (o.durable or o.resilient):
            return "neither durable nor resilient"
        if not o.dh.disconnected:
            return "still connected (Open.Session is not NULL)"
        if (o.lease is None) != (lr is None):
            return "lease context missing" if lr is None else "the open has no lease"
        if lr is not None and lr.key != o.lease.key:
            return "LeaseKey differs"
        return None

    def _attach(self, req, o) -> None:
        server = self.server
        dh = o.dh
        cancel(dh.timer)
        dh.timer, dh.disconnected, dh.deadline = None, False, 0.0
        o.session, o.tree = req.session, req.tree
        req.tree.open_count += 1
        if not o.volatile_id or o.volatile_id in server.opens:
            o.volatile_id = server.new_file_ids()[1]
        server.opens[o.volatile_id] = o
        o.outstanding_requests = 0
        if hasattr(o, "outstanding_pre_requests"):
            o.outstanding_pre_requests = 0
        if req.conn.dialect >= 0x0300:
            o.channel_sequence = req.hdr.channel_sequence

    def _response(self, req, r, o):
        from .connection import Reply
        from .handlers.create_ext import open_info
        out_ctx: list[tuple[bytes, bytes]] = []
        if cr.CTX_QUERY_MAXIMAL_ACCESS in r.contexts:
            out_ctx.append((cr.CTX_QUERY_MAXIMAL_ACCESS, struct.pack("<II", 0, o.tree.maximal_access)))
        if cr.CTX_QUERY_ON_DISK_ID in r.contexts:
            stt = os.stat(o.host_path)
            out_ctx.append((cr.CTX_QUERY_ON_DISK_ID, struct.pack("<QQ16s", stt.st_ino, stt.st_dev, b"")))
        level = o.oplock_level
        if o.lease is not None:
            lease = o.lease
            lflags = cr.LEASE_FLAG_BREAK_IN_PROGRESS if lease.breaking else 0
            out_ctx.append((cr.CTX_REQUEST_LEASE, cr.pack_lease(lease.version, lease.key, lease.state, lflags,
                                                                lease.epoch, lease.parent_key)))
            level = cr.OPLOCK_LEVEL_LEASE
        info = open_info(o.tree.share.fs, o.host_path, o.fd, o.stream)
        req.related_file_id = o.file_id
        times = (info.creation_time, info.last_access_time, info.last_write_time, info.change_time)
        return Reply(cr.pack_create_response(level, 0, cr.FILE_OPENED, times, info.allocation_size,
                                             info.end_of_file, info.attributes, o.file_id, out_ctx))

    # ------------------------------------------------------------------ losing the connection
    def disconnect(self, o) -> bool:
        """Session teardown (3.3.7.1 connection loss, 3.3.5.6 LOGOFF, 3.3.5.5.3 previous session):
        a durable, persistent or resilient open is kept with a timer instead of being closed.
        Returns False when the caller should close it. A durable (not persistent, not resilient)
        open that no longer caches handles is not kept (as Samba)."""
        dh = o.dh
        if dh is None or o.closed or o.is_pipe or dh.disconnected:
            return False
        if not (o.durable or o.persistent or o.resilient):
            return False
        if not (o.persistent or o.resilient):
            if not self.server.oplocks.caching(o) & H:
                return False
            # a break the client can no longer acknowledge: closed, as if the break had found
            # it disconnected (3.3.4.6 / 3.3.4.7), so the opener waiting for it goes on
            if o in getattr(self.server.oplocks, "_oplock_breaks", ()) or (o.lease is not None
                                                                           and o.lease.breaking):
                return False
        server = self.server
        if server.opens.get(o.volatile_id) is o:
            del server.opens[o.volatile_id]
        o.tree.open_count -= 1
        self._start_window(o)
        log.info("%s open %s kept for %d ms after its session went away", "persistent" if o.persistent
                 else "durable" if o.durable else "resilient", o.name, self.window_ms(o))
        return True

    def window_ms(self, o) -> int:
        return max(o.durable_timeout if (o.durable or o.persistent) else 0, o.dh.resiliency_ms)

    def _start_window(self, o, deadline: float | None = None) -> None:
        """The reconnect window: from now, or until `deadline` (a pending row rebuilt late keeps
        the window it got when its store was loaded)."""
        dh = o.dh
        dh.disconnected = True
        now = time.monotonic()
        dh.deadline = now + self.window_ms(o) / 1000.0 if deadline is None else deadline
        cancel(dh.timer)
        dh.timer = later(max(0.0, dh.deadline - now), self._expire, o)

    def _expire(self, o) -> None:
        """3.3.2.2 Durable Open Scavenger Timer / 3.3.2.4 Resilient Open Scavenger Timer: the open
        is closed; its locks and lease go with it."""
        if o.closed or o.dh is None or not o.dh.disconnected:
            return
        o.dh.timer = None
        log.info("reconnect window of %s (persistent id %#x) expired: closing it", o.name, o.persistent_id)
        self._close(o)

    def _close(self, o) -> None:
        from .handlers.files import close_open
        try:
            close_open(self.server, o)
        except Exception:
            log.exception("closing durable open %s", o.name)

    def break_disconnected(self, o) -> bool:
        """3.3.4.6 / 3.3.4.7: an oplock or lease break for a disconnected durable (not persistent)
        open closes it instead (after the current request, which then sees the close as the end
        of the break). Returns True when `o` was such an open."""
        dh = o.dh
        if dh is None or not dh.disconnected or o.persistent or o.closed:
            return False
        soon(self._close_if_disconnected, o)
        return True

    def break_lease_disconnected(self, lease) -> bool:
        """The lease-break form of break_disconnected: True when every open holding the lease is
        a disconnected durable (not persistent) open; they are all closed."""
        opens = [o for o in lease.opens if not o.closed]
        if not opens or not all(o.dh is not None and o.dh.disconnected and not o.persistent for o in opens):
            return False
        for o in opens:
            self.break_disconnected(o)
        return True

    def _close_if_disconnected(self, o) -> None:
        if not o.closed and o.dh is not None and o.dh.disconnected:
            self._close(o)

    # ------------------------------------------------------------------ the end
    def on_close(self, o) -> None:
        """close_open(): drop every trace (index, timer, store row)."""
        dh = o.dh
        if dh is None:
            return
        cancel(dh.timer)
        dh.timer = None
        if self.by_pid.get(o.persistent_id) is o:
            del self.by_pid[o.persistent_id]
        if dh.store is not None:
            self.stores.forget(o)

    # ------------------------------------------------------------------ renames
    def any_under(self, prefix: str) -> bool:
        """A disconnected durable open below directory `prefix` (host path ending in '/')."""
        self.pending.under(prefix)
        return any(o.dh is not None and o.dh.disconnected and o.host_path.startswith(prefix)
                   for o in self.by_pid.values() if not o.closed)

    def on_rename(self, file_key, host_path: str, name: str) -> None:
        """The file of some durable opens was renamed: the disconnected ones follow, and stored
        rows get the new share-relative name (a restart looks the file up by it)."""
        for o in self.by_pid.values():
            if o.file_key != file_key or o.closed:
                continue
            o.host_path, o.name = host_path, name
            if o.dh is not None and o.dh.store is not None:
                try:
                    o.dh.store.update(o.persistent_id, path=name)
                except Exception:
                    log.exception("handle store: renaming %s", name)

    # ------------------------------------------------------------------ resiliency
    def request_resiliency(self, req, o, r):
        """FSCTL_LMR_REQUEST_RESILIENCY (3.3.5.15.9): NETWORK_RESILIENCY_REQUEST {Timeout ms,
        Reserved}; returns (output, status) for ioctl()."""
        if req.conn.dialect == 0x0202:
            raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)
        if len(r.input) < 8:
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        timeout = struct.unpack_from("<I", r.input, 0)[0]
        if timeout > int(getattr(self.server.config, "max_resiliency_timeout", 300_000)):
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        if o.is_directory:
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        o.resilient = True
        if o.dh is None:
            o.dh = DurableInfo(_owner(req.session))
        if not o.client_guid:
            o.client_guid = req.conn.client_guid
        # 0: an implementation-specific default (Windows: 2 minutes; here the durable default)
        o.dh.resiliency_ms = timeout or self.default_timeout_ms()
        self.by_pid[o.persistent_id] = o
        share = o.tree.share
        if share.config is not None and share.config.ca:
            self.stores.persist_new(o, share)     # kept across a server restart too
        return b"", st.STATUS_SUCCESS
