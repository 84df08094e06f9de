"""Oplocks and leases: grant, break, acknowledge, wait.

MS-SMB2 3.3.5.9.8 / 3.3.5.9.11 (lease contexts on CREATE), 3.3.4.6 / 3.3.4.7 (break
notifications), 3.3.5.22 (acknowledgments); MS-FSA 2.1.4.12 (when an operation breaks what),
2.1.5.17-18 (granting and acknowledging). Where the specs leave room we behave as Windows does
per the smbtorture smb2.oplock / smb2.lease suites.

Every open has a *caching* state, a combination of R/W/H: a lease's LeaseState, or its oplock
level mapped (batch = RWH, exclusive = RW, level II = R). A conflicting operation computes what
each other open may keep (`break_to`), sends the break, and waits (asynchronously, re-running the
whole request on every state change of the file) while a caching it cannot coexist with is being
given up. Persistent state lives in plain objects (Open.oplock_level, Open.lease -> lease.Lease in
`self.leases`); only timers and parked requests are kept here.
"""
from __future__ import annotations

import logging
import os

from . import status as st
from .errors import SmbError
from .state import SESSION_VALID
from .lease import GRANTABLE, H, R, RWH, W, Lease, LeaseTable, caching_oplock, oplock_caching, state_str
from .parking import Parking, cancel, later, soon
from .wire import create as cr
from .wire import header as hd
from .wire import messages as m
from .wire.messages import MessageError

log = logging.getLogger("smbnd.oplock")

# "stat opens" never break nor get oplocks on existing files (MS-FSA 2.1.4.12 case OPEN; Windows
# also lets READ_CONTROL-only opens keep leases unbroken)
STAT_ACCESS = cr.SYNCHRONIZE | cr.FILE_READ_ATTRIBUTES | cr.FILE_WRITE_ATTRIBUTES
LEASE_STAT_ACCESS = STAT_ACCESS | cr.READ_CONTROL

ACK_REQUIRED = 0x01          # SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED (2.2.23.2)


def _stat_open(access: int, bits: int = STAT_ACCESS) -> bool:
    return bool(access & bits) and not access & ~bits


class Grant:
    """What the other opens of a file allow a new open to cache (filled in by check_open)."""
    __slots__ = ("lease_req", "have_other", "got_oplock", "got_handle")

    def __init__(self, lease_req):
        self.lease_req = lease_req
        self.have_other = False     # any other (non-stat) open: nobody else may cache writes
        self.got_oplock = False     # another open without a lease: leases get no H
        self.got_handle = False     # another open caches handles: oplocks get nothing


class OplockManager:
    leasing = True
    directory_leasing = True     # SMB2_GLOBAL_CAP_DIRECTORY_LEASING on 3.x

    def __init__(self, server):
        self.server = server
        self.leases = LeaseTable()
        self._oplock_breaks: dict = {}   # Open -> [level sent, timer]  (Open.OplockState Breaking)
        self._lease_timers: dict = {}    # Lease -> timer of the outstanding acknowledgment
        self.parking = Parking(server)   # requests waiting for breaks to finish
        self._client_conns: dict = {}    # ClientGuid -> [Connection] that took leases, oldest first
        self._dir_leases: set = set()    # Lease objects on directories
        self._modified: set = set()      # Opens that changed their file (a close breaks the parent)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def caching(o) -> int:
        return o.lease.state if o.lease is not None else oplock_caching(o.oplock_level)

    @property
    def timeout(self) -> float:
        return float(self.server.config.oplock_break_timeout)

    def _file_opens(self, file_key) -> list:
        state = self.server.files.get(file_key)
        return [o for o in state.opens if not o.closed] if state is not None else []

    # ------------------------------------------------------------------ CREATE: lease context
    def lease_request(self, req, r):
        """MS-SMB2 3.3.5.9.8 / 3.3.5.9.11: the lease context counts only with RequestedOplockLevel
        LEASE, on 2.1 (v1 only) and 3.x (v1 or v2)."""
        if r.oplock_level != cr.OPLOCK_LEVEL_LEASE or not self.leasing:
            return None
        data = r.contexts.get(cr.CTX_REQUEST_LEASE)
        dialect = req.conn.dialect
        if data is None or dialect < 0x0210 or (len(data) == 52 and dialect < 0x0300):
            return None
        try:
            return cr.parse_lease(data)
        except MessageError:
            raise SmbError(st.STATUS_INVALID_PARAMETER) from None

    def check_lease_key(self, req, lr, file_key) -> None:
        """3.3.5.9.8: a lease key already in use by this client for another file fails the CREATE
        (file_key is None when the target does not exist yet)."""
        if lr is None:
            return
        lease = self.leases.get(req.conn.client_guid, lr.key)
        if lease is not None and lease.opens and lease.file_key != file_key:
            raise SmbError(st.STATUS_INVALID_PARAMETER)

    # ------------------------------------------------------------------ CREATE: breaks
    def check_open(self, req, state, access: int, lr, sharing_violation: bool, overwrite: bool,
                   delete_on_close: bool = False):
        """MS-FSA 2.1.5.1.2 / 2.1.4.12 (case OPEN) for a new open of an existing file: break what the
        other opens cache and the new open conflicts with. Returns (must_wait, Grant).

        A sharing violation lets the holders keep everything but H (they may close their handles to
        resolve it, so we wait for H); otherwise they keep everything but W (we wait for the
        flush). An overwriting disposition takes R and H as well; a delete-on-close open takes H
        (the holders must let go of their handles for the delete, as Windows does: smbtorture
        smb2.lease.unlink)."""
        client_guid = req.conn.client_guid
        first = not self.parking.is_parked(req)
        open_access = access | (cr.FILE_WRITE_DATA if overwrite else 0)
        stat = _stat_open(open_access)
        lease_stat = _stat_open(open_access, LEASE_STAT_ACCESS)
        delay_mask = (H if sharing_violation else W) | (H if delete_on_close else 0)
        g = Grant(lr)
        wait = False
        for e in list(state.opens):
            if e.closed or e.is_pipe:
                continue
            el = e.lease
            if lr is not None and el is not None and el.client_guid == client_guid and el.key == lr.key:
                continue        # our own lease is never broken by us
            e_type = self.caching(e)
            if el is None and not e_type and _stat_open(e.access):
                continue        # stat opens without oplock neither break nor restrict anything
            g.have_other = True
            g.got_oplock |= el is None
            g.got_handle |= bool(e_type & H)
            if stat or (el is not None and lease_stat):
                continue
            breaking = el is not None and el.breaking
            break_to = e_type & ~delay_mask
            if overwrite:
                break_to &= ~(H | R)
            if not e_type & ~break_to:
                wait |= breaking    # a lease still breaking for someone else: let it finish
                continue
            if overwrite:
                break_to = 0        # we break anyway: straight to none
            if el is None:
                break_to &= R       # oplocks only break to level II or none
            self.break_open(e, break_to)
            if e_type & delay_mask or (breaking and not first):
                wait = True
        return wait, g

    def grant(self, req, o, r, g: Grant, existed: bool, overwrite: bool, brlocks: bool):
        """MS-SMB2 3.3.5.9 step "oplock" / 3.3.5.9.8: what the new open gets. Returns
        (OplockLevel for the response, lease response context bytes or None)."""
        lr = g.lease_req
        if not existed or overwrite:
            # MS-FSA 2.1.5.1.1: a new (or overwritten) entry changes its directory
            self.break_parent(o, lr.parent_key if lr is not None else None)
        if o.is_pipe or o.is_directory and (lr is None or req.conn.dialect < 0x0300
                                            or not self.directory_leasing):
            return cr.OPLOCK_LEVEL_NONE, None       # directories: leases only, and only on 3.x
        if lr is None:
            level = r.oplock_level if r.oplock_level in (cr.OPLOCK_LEVEL_II, cr.OPLOCK_LEVEL_EXCLUSIVE,
                                                         cr.OPLOCK_LEVEL_BATCH) else cr.OPLOCK_LEVEL_NONE
            open_access = o.access | (cr.FILE_WRITE_DATA if overwrite else 0)
            if existed and _stat_open(open_access):
                level = cr.OPLOCK_LEVEL_NONE
            granted = self._restrict(oplock_caching(level), g, brlocks)
            if g.got_handle:
                granted = 0     # MS-FSA 2.1.5.18.2: no oplock next to a handle-caching lease
            o.oplock_level = caching_oplock(granted)
            return o.oplock_level, None
        requested = lr.state & (R | H) if o.is_directory else lr.state    # directories cache no writes
        granted = self._restrict(requested & RWH if requested & RWH in GRANTABLE else 0, g, brlocks)
        if g.got_oplock:
            granted &= ~H
        client_guid = req.conn.client_guid
        lease = self.leases.get(client_guid, lr.key)
        if lease is None:
            lease = Lease(client_guid, lr.key, o.file_key, version=lr.version, state=granted,
                          epoch=(lr.epoch + 1) & 0xFFFF,
                          parent_key=lr.parent_key if lr.version == 2 else None, is_dir=o.is_directory)
            self.leases.add(lease)
            if lease.is_dir:
                self._dir_leases.add(lease)
        elif (lease.state & requested) == lease.state and granted != lease.state and granted == requested \
                and not lease.breaking:
            # 3.3.5.9.8: an uncontended strict upgrade of the client's own lease
            lease.state = granted
            lease.epoch = (lease.epoch + 1) & 0xFFFF
        lease.opens.append(o)
        o.lease = lease
        conns = self._client_conns.setdefault(client_guid, [])
        if req.conn not in conns:
            conns[:] = [c for c in conns if not c.closed] + [req.conn]
        o.oplock_level = cr.OPLOCK_LEVEL_LEASE
        flags = cr.LEASE_FLAG_BREAK_IN_PROGRESS if lease.breaking else 0
        return cr.OPLOCK_LEVEL_LEASE, cr.pack_lease(lease.version, lease.key, lease.state, flags, lease.epoch,
                                                    lease.parent_key)

    @staticmethod
    def _restrict(granted: int, g: Grant, brlocks: bool) -> int:
        if brlocks:
            granted &= ~R   # MS-FSA 2.1.5.18.2: no read caching over byte-range locks
        if g.have_other:
            granted &= ~W   # only one open may cache writes
        return granted if granted in GRANTABLE else 0

    # ------------------------------------------------------------------ other operations
    def on_write(self, o) -> None:
        """MS-FSA 2.1.4.12 WRITE / SET_INFORMATION (EOF, allocation)."""
        self.modified(o)
        self._break_read_caching(o)

    def on_truncate(self, o) -> None:
        self.on_write(o)

    def on_lock(self, o) -> None:
        """MS-FSA 2.1.4.12 LOCK (byte-range locks)."""
        self._break_read_caching(o)

    def _break_read_caching(self, o) -> None:
        """Level II oplocks (the acting open's own included) and the R caching of other leases
        break to none, without waiting."""
        if o.is_pipe or self.caching(o) & W:
            return
        seen = set()
        for e in self._file_opens(o.file_key):
            el = e.lease
            if el is not None:
                if el in seen or el is o.lease or not el.state & R:
                    continue
                seen.add(el)
                self._break_lease(el, 0)
            elif e.oplock_level != cr.OPLOCK_LEVEL_NONE:
                self._break_oplock(e, 0)

    def modified(self, o) -> None:
        """The open changed its file's data: closing it breaks the directory's leases."""
        if self._dir_leases and not o.is_pipe:
            self._modified.add(o)

    def break_parent(self, o, parent_key: bytes | None) -> None:
        """MS-FSA 2.1.4.12 with PARENT_OBJECT: a change inside a directory breaks the directory's
        leases (R and W go; H alone is no lease state, so to none), without waiting; a lease the
        changing open named as its ParentLeaseKey (same client) is spared (MS-SMB2 3.3.5.9.11)."""
        if not self._dir_leases or o.is_pipe:
            return
        try:
            stt = os.stat(os.path.dirname(o.host_path.rstrip("/")))
        except OSError:
            return
        conn = o.session.connection
        client_guid = conn.client_guid if conn is not None else b""
        seen = set()
        for e in self._file_opens((stt.st_dev, stt.st_ino)):
            el = e.lease
            if el is None or el in seen or not el.is_dir:
                continue
            seen.add(el)
            if parent_key is not None and el.client_guid == client_guid and el.key == parent_key:
                continue
            self._break_lease(el, 0)

    def rename_wait(self, req, o, retry):
        """MS-FSA 2.1.5.14.11 / 2.1.4.12 (SET_INFORMATION rename): other opens give up handle
        caching before the rename proceeds. Returns a Reply to send instead (interim / still waiting)
        or None to go ahead."""
        parked = self.handle_caching_wait(req, o, retry)
        if parked is None:
            self.break_parent(o, o.lease.parent_key if o.lease is not None else None)
        return parked

    def handle_caching_wait(self, req, o, retry):
        """Break the H caching of the other opens (other lease keys) and wait for it: before a
        rename or setting a delete disposition (MS-FSA 2.1.4.12 SET_INFORMATION)."""
        wait = False
        for e in self._file_opens(o.file_key):
            if e is o or (e.lease is not None and e.lease is o.lease):
                continue
            e_type = self.caching(e)
            if e_type & H:
                wait = True
                self.break_open(e, (e_type & ~H) if e.lease is not None else e_type & R)
        return self.park(req, o.file_key, retry) if wait else None

    # ------------------------------------------------------------------ breaking
    def break_open(self, e, break_to: int) -> None:
        if e.lease is not None:
            self._break_lease(e.lease, break_to)
        else:
            self._break_oplock(e, break_to)

    def _break_oplock(self, o, break_to: int) -> None:
        """MS-SMB2 3.3.4.6: exclusive/batch break to level II or none and wait for the ack; level II
        breaks to none at once (no ack, 2.2.24.1)."""
        if o in self._oplock_breaks:
            return          # already breaking; the acknowledgment settles it
        cur = oplock_caching(o.oplock_level)
        if not cur or cur == break_to:
            return
        level = cr.OPLOCK_LEVEL_II if break_to & R else cr.OPLOCK_LEVEL_NONE
        self._notify_oplock(o, level)
        if cur == R:
            o.oplock_level = cr.OPLOCK_LEVEL_NONE
            self._persist([o])      # no acknowledgment comes (2.2.23.1)
            self.parking.wake(o.file_key)
            return
        timer = later(self.timeout, self._oplock_timeout, o)
        self._oplock_breaks[o] = [level, timer]

    def _break_lease(self, lease: Lease, break_to: int) -> None:
        """MS-SMB2 3.3.4.7: a break of a lease not yet breaking increments the epoch and needs an
        ack unless only R is lost; a lease already breaking only lowers what it must reach."""
        break_to &= lease.state
        if lease.breaking:
            lease.breaking_to_required &= break_to
            return
        if lease.state == break_to:
            return
        old = lease.state
        lease.epoch = (lease.epoch + 1) & 0xFFFF
        if old == R:
            lease.state = 0
            self._persist(lease.opens)      # no acknowledgment comes (2.2.23.2)
            self._notify_lease(lease, old, 0, 0)
            self.parking.wake(lease.file_key)
            return
        lease.breaking = True
        lease.breaking_to_requested = lease.breaking_to_required = break_to
        self._notify_lease(lease, old, break_to, ACK_REQUIRED)
        self._restart_lease_timer(lease)

    def _restart_lease_timer(self, lease: Lease) -> None:
        cancel(self._lease_timers.pop(lease, None))
        t = later(self.timeout, self._lease_timeout, lease)
        if t is not None:
            self._lease_timers[lease] = t

    def _notify_oplock(self, o, level: int) -> None:
        if self.server.durable.break_disconnected(o):
            return      # MS-SMB2 3.3.4.6: a disconnected durable open is closed instead
        conn = o.session.connection
        if conn is None or conn.closed:
            return
        log.debug("oplock break %s -> %d on %s", o.name, level, conn.peer)
        conn.send_notification(hd.OPLOCK_BREAK, m.pack_oplock_break_notification(level, o.file_id),
                               o.session, tree=o.tree, with_session_id=True)
        self._sent(conn, lambda: self._resend_oplock(o, level))

    def _notify_lease(self, lease: Lease, cur: int, new: int, flags: int) -> None:
        """3.3.4.7: a lease belongs to the client (ClientGuid), not to one connection: like Windows
        (smbtorture smb2.lease.v2_complex1) we use the client's first connection still alive that
        took leases, else any connection of an open with this lease."""
        if self.server.durable.break_lease_disconnected(lease):
            return      # MS-SMB2 3.3.4.7: only disconnected durable opens hold it: they are closed
        epoch = lease.epoch if lease.version == 2 else 0
        body = m.pack_lease_break_notification(epoch, flags, lease.key, cur, new)
        log.debug("lease break %s %s -> %s", lease.key.hex(), state_str(cur), state_str(new))
        # encrypt if any open of the lease is on a tree that requires it (3.3.4.1.4)
        enc_tree = next((o.tree for o in lease.opens if o.tree.encrypt_data), None)
        conns = self._client_conns.get(lease.client_guid, [])
        conns[:] = [c for c in conns if not c.closed]
        for conn in conns:
            sessions = [s for s in conn.sessions.values() if s.state == SESSION_VALID]
            mine = [o.session for o in lease.opens if o.session in sessions]
            session = mine[0] if mine else sessions[0] if sessions else None
            if session is not None:
                conn.send_notification(hd.OPLOCK_BREAK, body, session, tree=enc_tree)
                self._sent(conn, lambda: self._resend_lease(lease, cur, new, flags))
                return
        for o in lease.opens:
            conn = o.session.connection
            if conn is not None and not conn.closed:
                conn.send_notification(hd.OPLOCK_BREAK, body, o.session, tree=enc_tree)
                self._sent(conn, lambda: self._resend_lease(lease, cur, new, flags))
                return

    @staticmethod
    def _sent(conn, resend=None) -> None:
        """A break notification whose transport acknowledgment never comes means the client is gone
        from that channel: drop the connection after a few retransmission timeouts, as Samba does,
        and send the break again on another channel of the session (MS-SMB2 3.3.4.6 / 3.3.4.7:
        any channel; smbtorture smb2.multichannel.leases.test2). Only simulated, for smbtorture's
        FORCE_UNACKED_TIMEOUT FSCTL."""
        if conn.force_unacked_timeout:
            def _gone():
                conn.close()
                if resend is not None:
                    resend()
            later(1.0, _gone)

    def _resend_oplock(self, o, level: int) -> None:
        if not o.closed and self.server.opens.get(o.volatile_id) is o \
                and (o in self._oplock_breaks or level == cr.OPLOCK_LEVEL_NONE):
            self._notify_oplock(o, level)

    def _resend_lease(self, lease: Lease, cur: int, new: int, flags: int) -> None:
        if lease.opens and (lease.breaking or not flags & ACK_REQUIRED):
            self._notify_lease(lease, cur, new, flags)

    # ------------------------------------------------------------------ acknowledgments
    def oplock_ack(self, o, level: int) -> int:
        """MS-SMB2 3.3.5.22.1. Returns the resulting oplock level."""
        b = self._oplock_breaks.get(o)
        if b is None:
            # no break outstanding: Windows answers INVALID_OPLOCK_PROTOCOL for an (unexpected) ack
            # of a level II break (smbtorture levelii500); otherwise 3.3.5.22.1 INVALID_DEVICE_STATE
            if o.oplock_level in (cr.OPLOCK_LEVEL_NONE, cr.OPLOCK_LEVEL_II):
                raise SmbError(st.STATUS_INVALID_OPLOCK_PROTOCOL)
            raise SmbError(st.STATUS_INVALID_DEVICE_STATE)
        sent = b[0]
        if level == cr.OPLOCK_LEVEL_LEASE or level not in (cr.OPLOCK_LEVEL_NONE, cr.OPLOCK_LEVEL_II):
            self._end_oplock_break(o, cr.OPLOCK_LEVEL_NONE)
            raise SmbError(st.STATUS_INVALID_PARAMETER if level == cr.OPLOCK_LEVEL_LEASE
                           else st.STATUS_INVALID_OPLOCK_PROTOCOL)
        new = cr.OPLOCK_LEVEL_II if level == cr.OPLOCK_LEVEL_II and sent == cr.OPLOCK_LEVEL_II \
            else cr.OPLOCK_LEVEL_NONE
        self._end_oplock_break(o, new)
        return new

    def _end_oplock_break(self, o, level: int) -> None:
        b = self._oplock_breaks.pop(o, None)
        if b is not None:
            cancel(b[1])
        o.oplock_level = level
        self.parking.wake(o.file_key)

    def _oplock_timeout(self, o) -> None:
        """MS-SMB2 3.3.2.1 Oplock Break Acknowledgment Timer: the break completes with none."""
        if o in self._oplock_breaks:
            log.info("oplock break on %s not acknowledged in %.0f s", o.name, self.timeout)
            self._oplock_breaks[o][1] = None
            self._end_oplock_break(o, cr.OPLOCK_LEVEL_NONE)
            self._persist([o])

    def lease_ack(self, req, key: bytes, state: int) -> int:
        """MS-SMB2 3.3.5.22.2. Returns the LeaseState for the response."""
        lease = self.leases.get(req.conn.client_guid, key)
        if lease is None or not lease.opens:
            raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
        if not lease.breaking:
            raise SmbError(st.STATUS_UNSUCCESSFUL)
        if state & ~lease.breaking_to_requested:
            raise SmbError(st.STATUS_REQUEST_NOT_ACCEPTED)
        self._lease_downgrade(lease, state)
        return state

    def _lease_downgrade(self, lease: Lease, state: int) -> None:
        lease.state = state
        required = lease.breaking_to_required
        if state & ~required:
            # not yet where the conflicts need it: break again, in steps as Windows does (RH -> R -> none)
            nxt = required | (R if state & (W | H) else 0)
            lease.breaking_to_requested = nxt
            if state & (W | H):
                self._restart_lease_timer(lease)
                soon(self._notify_lease, lease, state, nxt, ACK_REQUIRED)
            else:
                self._end_lease_break(lease, 0)
                soon(self._notify_lease, lease, state, 0, 0)
        else:
            self._end_lease_break(lease, state)
        self.parking.wake(lease.file_key)

    def _end_lease_break(self, lease: Lease, state: int) -> None:
        lease.state = state
        lease.breaking = False
        lease.breaking_to_requested = lease.breaking_to_required = 0
        cancel(self._lease_timers.pop(lease, None))

    def _lease_timeout(self, lease: Lease) -> None:
        """3.3.2.5 Lease Break Acknowledgment Timer: the lease drops to none."""
        self._lease_timers.pop(lease, None)
        if lease.breaking:
            log.info("lease break %s not acknowledged in %.0f s", lease.key.hex(), self.timeout)
            self._end_lease_break(lease, 0)
            self._persist(lease.opens)
            self.parking.wake(lease.file_key)

    def _persist(self, opens) -> None:
        """Caching state that changed without an acknowledgment (a timed-out break, a break that
        needs none) goes to the handle store of persistent opens too (the ack handler does it
        for acknowledged breaks, smbnd.handlers.oplock_break)."""
        self.server.durable.stores.persist_caching(list(opens))

    # ------------------------------------------------------------------ close
    def on_close(self, o) -> None:
        """Release the open's oplock / its share of the lease (MS-SMB2 3.3.4.17, 3.3.5.10)."""
        b = self._oplock_breaks.pop(o, None)
        if b is not None:
            cancel(b[1])
        lease = o.lease
        if o in self._modified or (self._dir_leases and (o.delete_on_close or self._delete_pending(o))):
            self._modified.discard(o)
            self.break_parent(o, lease.parent_key if lease is not None else None)
        if lease is not None:
            if o in lease.opens:
                lease.opens.remove(o)
            if not lease.opens:
                self.leases.remove(lease)
                self._dir_leases.discard(lease)
                cancel(self._lease_timers.pop(lease, None))
        if not o.is_pipe and o.file_key is not None:
            self.parking.wake(o.file_key)

    def _delete_pending(self, o) -> bool:
        state = self.server.files.get(o.file_key)
        return state is not None and state.delete_pending

    # ------------------------------------------------------------------ parked requests
    def park(self, req, file_key, retry):
        """Let `req` wait for the breaks it caused (see smbnd.parking); twice the break timeout at
        most, as the holders' acknowledgment timers settle every break within one."""
        return self.parking.park(req, file_key, retry, 2 * self.timeout)
