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
        return Reply(m.pack_oplock_break_response(new, o.file_id))
    if req.conn.dialect < 0x0210 or not mgr.leasing:
        raise SmbError(st.STATUS_INVALID_PARAMETER)    # no leases before SMB 2.1
    new = mgr.lease_ack(req, key, state)
    return Reply(m.pack_lease_break_response(key, new))
