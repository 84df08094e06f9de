"""Request replay: ChannelSequence verification (MS-SMB2 3.3.5.2.10) and replayed CREATEs found by
their CreateGuid (MS-SMB2 3.3.5.9.10).

Hooks (each a one-line call from the shared request pipeline):

* ``on_open_resolved(req, o)`` -- connection.Request.open(), for every command that carries a FileId:
  verifies the ChannelSequence, counts the request as outstanding on the Open and clears
  Open.IsReplayEligible (every command section, e.g. 3.3.5.14 / 3.3.5.21: "If Open.IsPersistent is
  FALSE and Open.IsReplayEligible is TRUE, the server MUST set Open.IsReplayEligible to FALSE").
* ``request_done(holder)`` -- when the final response of a counted request goes out (3.3.4.1:
  Open.OutstandingRequestCount or Open.OutstandingPreRequestCount is decremented).
* ``check_create(req, r)`` -- early in CREATE: a replayed DH2Q create answers with the Open it
  created (3.3.5.9.10); a non-replayed one with a CreateGuid in use fails with
  STATUS_DUPLICATE_OBJECTID.
* ``create_parked(req, r, sharing_violation)`` -- a CREATE that waits for oplock/lease breaks.
* ``on_created(req, r, o, action)`` -- a new Open exists: ChannelSequence, CreateAction, the
  CreateGuid index.

The CreateGuid index is ``ReplayTable.by_guid`` ((ClientGuid, CreateGuid) -> Open, weak values, so
closed Opens fall out by themselves). The durable-handle code can call ``lookup_create_guid`` and
``replay_response`` instead of keeping its own index.
"""
from __future__ import annotations

import os
import struct
import weakref

from . import status as st
from .errors import SmbError
from .wire import create as cr
from .wire import header as hd

# 3.3.5.2.10: a stale ChannelSequence fails only these (Samba's "modify" calls are the same three)
MODIFYING_COMMANDS = frozenset((hd.WRITE, hd.SET_INFO, hd.IOCTL))
# commands that leave Open.IsReplayEligible alone: CLOSE ends the Open anyway, and an oplock break
# acknowledgment (3.3.5.22.1) is the server's own round trip, not the application using the handle
_KEEPS_ELIGIBLE = frozenset((hd.CLOSE, hd.OPLOCK_BREAK))
DHANDLE_FLAG_PERSISTENT = 0x2
_PENDING_SWEEP = 256


class ReplayTable:
    """Server-wide replay state (GlobalOpenTable lookups by CreateGuid)."""

    def __init__(self):
        self.by_guid: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.pending: dict[tuple[bytes, bytes], tuple] = {}    # key -> (Request, sharing_violation)


def table(server) -> ReplayTable:
    t = getattr(server, "replay_table", None)
    if t is None:
        t = server.replay_table = ReplayTable()
    return t


# ------------------------------------------------------------------ 3.3.5.2.10 ChannelSequence
def on_open_resolved(req, o) -> None:
    """Verify the request's ChannelSequence against the Open; raises STATUS_FILE_NOT_AVAILABLE for
    a stale WRITE, SET_INFO or IOCTL. A request resolves its Open once (later calls are no-ops)."""
    if req.chan_open is not None:
        return
    req.chan_open = ()      # resolved; a tuple once counted
    if req.hdr.command not in _KEEPS_ELIGIBLE and not o.persistent:
        o.replay_eligible = False
    if req.conn.dialect < 0x0300:
        return      # 2.0.2 / 2.1: the section is skipped
    csn = req.hdr.channel_sequence
    modify = req.hdr.command in MODIFYING_COMMANDS
    diff = (csn - o.channel_sequence) & 0xFFFF
    if not req.hdr.flags & hd.FLAGS_REPLAY_OPERATION:
        if diff == 0:
            o.outstanding_requests += 1
        elif diff <= 0x7FFF:
            _advance(o, csn)
            o.outstanding_requests = 1
        else:
            _stale(modify)
            return
    elif diff == 0:
        if o.outstanding_pre_requests:
            _stale(modify)
            return
        o.outstanding_requests += 1
    elif diff <= 0x7FFF:
        # the SHOULD of 3.3.5.2.10: advance, but with requests of an older sequence outstanding
        # the replay is not counted and a modifying one fails
        _advance(o, csn)
        if o.outstanding_pre_requests:
            o.outstanding_requests = 0
            _stale(modify)
            return
        o.outstanding_requests = 1
    else:
        _stale(modify)
        return
    req.chan_open = (o, o.channel_sequence, o.channel_generation)


def _advance(o, csn: int) -> None:
    o.outstanding_pre_requests += o.outstanding_requests
    o.channel_sequence = csn
    o.channel_generation += 1


def _stale(modify: bool) -> None:
    if modify:
        raise SmbError(st.STATUS_FILE_NOT_AVAILABLE)


def request_done(holder) -> None:
    """The final response of a counted request is sent (3.3.4.1): a request counted under the
    Open's current ChannelSequence leaves OutstandingRequestCount, an older one
    OutstandingPreRequestCount. The generation tells a sequence number that came back after a
    wrap from the one the request was counted under (smbtorture smb2.replay.replay7)."""
    counted = holder.chan_open
    if not counted:
        return
    holder.chan_open = None
    o, csn, generation = counted
    if o.channel_sequence == csn and o.channel_generation == generation:
        o.outstanding_requests = max(0, o.outstanding_requests - 1)
    else:
        o.outstanding_pre_requests = max(0, o.outstanding_pre_requests - 1)


def reset_counts(o) -> None:
    """Requests outstanding on a connection that went away never complete (for a durable Open that
    survives the disconnect, call this when it is reconnected)."""
    o.outstanding_requests = 0
    o.outstanding_pre_requests = 0


# ------------------------------------------------------------------ 3.3.5.9.10 replayed CREATE
def create_guid_of(req, r) -> bytes | None:
    """The CreateGuid of a 3.x CREATE with a well-formed SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2
    (2.2.13.2.11) and no other durable context (those combinations are the durable code's to fail)."""
    if req.conn.dialect < 0x0300:
        return None
    dh2q = r.contexts.get(cr.CTX_DURABLE_HANDLE_REQUEST_V2)
    if dh2q is None or len(dh2q) != 32:
        return None
    if any(c in r.contexts for c in (cr.CTX_DURABLE_HANDLE_REQUEST, cr.CTX_DURABLE_HANDLE_RECONNECT,
                                     cr.CTX_DURABLE_HANDLE_RECONNECT_V2)):
        return None
    return dh2q[16:32]


def lookup_create_guid(server, client_guid: bytes, create_guid: bytes):
    """The Open where Open.IsReplayEligible is TRUE, Open.CreateGuid and Open.ClientGuid match."""
    server.durable.pending.create_guid(create_guid, client_guid)   # a restored one, rebuilt first
    o = table(server).by_guid.get((client_guid, create_guid))
    if o is None or o.closed or not o.replay_eligible:
        return None
    return o


def check_create(req, r):
    """Before a CREATE runs (3.3.5.9.10): returns the Reply for a replayed create of an existing
    Open, raises for a CreateGuid already in use, or returns None to go on with a new open.

    A re-run of a CREATE that waited for oplock/lease breaks is the original request, not a
    replay (Samba: open_was_deferred). A replay that arrives while the original still waits:
    Windows fails it with STATUS_ACCESS_DENIED when the wait is for a break that would let the
    open succeed, and treats it as a new open when the wait is for handle-caching holders to
    resolve a sharing violation (smbtorture smb2.replay.dhv2-pending1*-windows; Samba answers
    STATUS_FILE_NOT_AVAILABLE in both cases, the "-sane" variants)."""
    guid = create_guid_of(req, r)
    if guid is None or req.server.oplocks.parking.is_parked(req):
        return None
    server = req.server
    key = (req.conn.client_guid, guid)
    replay = bool(req.hdr.flags & hd.FLAGS_REPLAY_OPERATION)
    o = lookup_create_guid(server, *key)
    if o is not None:
        if not replay:
            raise SmbError(st.STATUS_DUPLICATE_OBJECTID)
        if o.dh is not None and o.dh.disconnected:
            return _replay_reconnect(req, r, o)
        if o.session is req.session and o.tree is req.tree:
            return replay_response(req, r, o)
        return None     # another session's Open: a new open
    pend = table(server).pending.get(key)
    if pend is not None:
        preq, sharing_violation = pend
        if preq is req or not server.oplocks.parking.is_parked(preq):
            table(server).pending.pop(key, None)
        elif replay and not sharing_violation:
            raise SmbError(st.STATUS_ACCESS_DENIED)
    return None


def _replay_reconnect(req, r, o):
    """A replayed CREATE for an Open whose connection is gone (a persistent open after failover,
    smbtorture smb2.replay.replay5): the Open is reattached with the checks of a DH2C reconnect
    (3.3.5.9.12: lease, persistence, DurableOwner) and answered as the original create."""
    flags = struct.unpack_from("<I", r.contexts[cr.CTX_DURABLE_HANDLE_REQUEST_V2], 4)[0]
    req.server.durable._reconnect(req, r, o.persistent_id, o.create_guid, flags)
    return replay_response(req, r, o)


def create_parked(req, r, sharing_violation: bool) -> None:
    """A CREATE waits for breaks (interim STATUS_PENDING); remember it for replays meanwhile."""
    guid = create_guid_of(req, r)
    if guid is None:
        return
    pending = table(req.server).pending
    if len(pending) >= _PENDING_SWEEP:      # drop the entries of creates that ended with an error
        parking = req.server.oplocks.parking
        for k in [k for k, (preq, _sv) in pending.items() if not parking.is_parked(preq)]:
            del pending[k]
    pending[(req.conn.client_guid, guid)] = (req, sharing_violation)


def on_created(req, r, o, action: int) -> None:
    """A new Open (3.3.5.9 "Successful Open Initialization"): its ChannelSequence starts at the
    CREATE's, the CreateAction is kept for replays, and with a CreateGuid it becomes replay
    eligible (Open.CreateGuid is set for every DH2Q create, durable or not: a replay of a
    non-durable DH2Q open finds it on Windows and Samba, smb2.replay.dhv2-pending1n-*)."""
    o.create_action = action
    o.client_guid = req.conn.client_guid
    if req.conn.dialect >= 0x0300:
        o.channel_sequence = req.hdr.channel_sequence
    guid = create_guid_of(req, r)
    if guid is None:
        return
    t = table(req.server)
    key = (req.conn.client_guid, guid)
    t.pending.pop(key, None)
    o.create_guid = guid
    o.replay_eligible = True
    t.by_guid[key] = o


def register(server, client_guid: bytes, o) -> None:
    """Index an Open rebuilt from the handle store: a persistent open stays replay eligible (only
    a non-persistent Open loses IsReplayEligible when it is used)."""
    if o.create_guid:
        o.client_guid = client_guid
        o.replay_eligible = o.replay_eligible or bool(o.persistent)
        table(server).by_guid[(client_guid, o.create_guid)] = o


def replay_response(req, r, o):
    """The CREATE response for a replay of the create that made `o` (as Samba's replay path does):
    the original CreateAction, the requested oplock level (a lease only if `o` holds one with the
    same key, else STATUS_ACCESS_DENIED), the lease's current state, DH2Q when the open is durable
    and the replay could have been granted durability, and the file's current attributes."""
    from .connection import Reply
    from .handlers import create_ext as cx
    dh2q = r.contexts[cr.CTX_DURABLE_HANDLE_REQUEST_V2]
    if o.persistent and not struct.unpack_from("<I", dh2q, 4)[0] & DHANDLE_FLAG_PERSISTENT:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    server, tree = req.server, req.tree
    level = r.oplock_level
    out_ctx: list[tuple[bytes, bytes]] = []
    lease_ctx = None
    lr = server.oplocks.lease_request(req, r)
    if lr is not None:
        lease = o.lease
        if lease is None or lease.key != lr.key:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        flags = cr.LEASE_FLAG_BREAK_IN_PROGRESS if lease.breaking else 0
        lease_ctx = cr.pack_lease(lease.version, lease.key, lease.state, flags, lease.epoch, lease.parent_key)
    elif level == cr.OPLOCK_LEVEL_LEASE:
        level = cr.OPLOCK_LEVEL_NONE
    if cr.CTX_QUERY_MAXIMAL_ACCESS in r.contexts:
        out_ctx.append((cr.CTX_QUERY_MAXIMAL_ACCESS, struct.pack("<II", 0, tree.maximal_access)))
    fs = tree.share.fs
    if cr.CTX_QUERY_ON_DISK_ID in r.contexts:
        stt = os.stat(o.host_path)
        out_ctx.append((cr.CTX_QUERY_ON_DISK_ID, struct.pack("<QQ16s", stt.st_ino, stt.st_dev, b"")))
    if lease_ctx is not None:
        out_ctx.append((cr.CTX_REQUEST_LEASE, lease_ctx))
    if o.durable and (o.persistent or level in (cr.OPLOCK_LEVEL_BATCH, cr.OPLOCK_LEVEL_LEASE)):
        out_ctx.append((cr.CTX_DURABLE_HANDLE_REQUEST_V2,
                        struct.pack("<II", o.durable_timeout, DHANDLE_FLAG_PERSISTENT if o.persistent else 0)))
    info = cx.open_info(fs, o.host_path, o.fd, o.stream)
    req.related_file_id = o.file_id
    times = (info.creation_time, info.last_access_time, info.last_write_time, info.change_time)
    return Reply(cr.pack_create_response(level, 0, o.create_action, times, info.allocation_size,
                                         info.end_of_file, info.attributes, o.file_id, out_ctx))
