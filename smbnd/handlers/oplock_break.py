"""OPLOCK_BREAK acknowledgments (MS-SMB2 3.3.5.22)."""
from __future__ import annotations

from .. import status as st
from ..errors import SmbError
from ..wire import messages as m


def oplock_break(req):
    kind, level, key, state = m.parse_break_ack(req.msg)
    if kind == "oplock":
        req.open(key)   # validates the FileId
    # no oplock or lease is ever granted by this server slice, so no break is outstanding
    raise SmbError(st.STATUS_INVALID_OPLOCK_PROTOCOL if kind == "oplock" else st.STATUS_OBJECT_NAME_NOT_FOUND)
