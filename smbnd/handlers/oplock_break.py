"""OPLOCK_BREAK acknowledgments (MS-SMB2 3.3.5.22): oplock (3.3.5.22.1) and lease (3.3.5.22.2)."""
from __future__ import annotations

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..wire import messages as m


def oplock_break(req) -> Reply:
    kind, level, key, state = m.parse_break_ack(req.msg)
    mgr = req.server.oplocks
    if kind == "oplock":
        o = req.open(key)           # 3.3.5.22.1: unknown FileId -> STATUS_FILE_CLOSED
        new = mgr.oplock_ack(o, level)
        req.server.durable.stores.persist_caching([o])     # persistent opens: the store first
        return Reply(m.pack_oplock_break_response(new, o.file_id))
    if req.conn.dialect < 0x0210 or not mgr.leasing:
        raise SmbError(st.STATUS_INVALID_PARAMETER)    # no leases before SMB 2.1
    new = mgr.lease_ack(req, key, state)
    lease = mgr.leases.get(req.conn.client_guid, key)
    if lease is not None:
        req.server.durable.stores.persist_caching(lease.opens)   # persistent opens: the store first
    return Reply(m.pack_lease_break_response(key, new))


# smbtorture's test-only FSCTL (Samba libcli/smb/smb_constants.h, enabled by config torture_fsctls):
# from now on this connection "never TCP-acknowledges" the break notifications it is sent, so the
# server gives the connection up (smbtorture smb2.oplock.batch22b; see OplockManager._sent)
FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT = 0x83848003


def torture_force_unacked(req) -> Reply | None:
    from ..wire import query as q
    try:
        r = q.parse_ioctl(req.msg)
    except Exception:
        return None
    if r.ctl_code != FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT:
        return None
    if r.input or r.flags != q.IOCTL_IS_FSCTL:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    req.conn.force_unacked_timeout = True
    return Reply(q.pack_ioctl_response(r.ctl_code, r.file_id, b""))
