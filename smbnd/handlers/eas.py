"""FileFullEaInformation over QUERY_INFO / SET_INFO (MS-SMB2 3.3.5.20.1 / 3.3.5.21.1,
MS-FSA 2.1.5.11 / 2.1.5.14, MS-FSCC 2.4.15)."""
from __future__ import annotations

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..wire import create as cr
from ..wire import query as q
from ..wire.fscc import FsccError
from ..wire.fscc_ea import decode_full_ea_list, decode_get_ea_list, encode_full_ea_list

# QUERY_INFO Flags for FileFullEaInformation (MS-SMB2 2.2.37)
SL_RESTART_SCAN = 0x1
SL_RETURN_SINGLE_ENTRY = 0x2
SL_INDEX_SPECIFIED = 0x4


def query_eas(o, r) -> Reply:
    """Return the EAs named in the FILE_GET_EA_INFORMATION input (absent ones with an
    empty value), else continue the enumeration kept on the Open."""
    if not o.access & cr.FILE_READ_EA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    fs = o.tree.share.fs
    if not fs.meta.eas_supported:
        raise SmbError(st.STATUS_EAS_NOT_SUPPORTED)
    eas = fs.meta.get_eas(o.host_path)
    if r.input:
        try:
            wanted = decode_get_ea_list(r.input)
        except FsccError as e:
            raise SmbError(e.status) from None
        by_name = {n: (n, v, f) for n, v, f in eas}
        todo = [by_name.get(w.upper(), (w.upper(), b"", 0)) for w in wanted]
        start = 0
    else:
        if not eas:
            raise SmbError(st.STATUS_NO_EAS_ON_FILE)
        start = 0 if r.flags & (SL_RESTART_SCAN | SL_INDEX_SPECIFIED) else o.ea_index
        if start >= len(eas):
            raise SmbError(st.STATUS_NO_MORE_EAS)
        todo = eas[start:]
    if r.flags & SL_RETURN_SINGLE_ENTRY:
        todo = todo[:1]
    data, count = encode_full_ea_list(todo, r.output_length)
    if count == 0:
        raise SmbError(st.STATUS_BUFFER_TOO_SMALL)
    if not r.input:
        o.ea_index = start + count
    if count < len(todo):
        return Reply(q.pack_output_buffer(data), st.STATUS_BUFFER_OVERFLOW)
    return Reply(q.pack_output_buffer(data))


def set_eas(req, o, buf: bytes) -> None:
    """Add, replace or (empty value) delete EAs; MS-FSA 2.1.5.14 FileFullEaInformation."""
    if not o.access & cr.FILE_WRITE_EA:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    try:
        changes = decode_full_ea_list(buf)
    except FsccError as e:
        raise SmbError(e.status) from None
    status = o.tree.share.fs.meta.set_eas(o.host_path, changes)
    if status != st.STATUS_SUCCESS:
        raise SmbError(status)
    # (no CHANGE_NOTIFY report: smbnd.notify has no FILE_NOTIFY_CHANGE_EA kind yet)
