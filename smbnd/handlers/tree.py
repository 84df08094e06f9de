"""TREE_CONNECT (MS-SMB2 3.3.5.7) and TREE_DISCONNECT (3.3.5.8)."""
from __future__ import annotations

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..state import TreeConnect
from ..wire import create as cr
from ..wire import messages as m

READ_ONLY_ACCESS = cr.FILE_GENERIC_READ | cr.FILE_GENERIC_EXECUTE


def share_name_from_path(path: str) -> str | None:
    parts = path.split("\\")
    if len(parts) != 4 or parts[0] or parts[1] or not parts[2] or not parts[3]:
        return None
    return parts[3]


def tree_connect(req) -> Reply:
    conn, server, session = req.conn, req.server, req.session
    _flags, path = m.parse_tree_connect(req.msg, conn.dialect)
    name = share_name_from_path(path)
    if name is None:
        raise SmbError(st.STATUS_BAD_NETWORK_NAME)
    share = server.shares.get(name.lower())
    if share is None:
        raise SmbError(st.STATUS_BAD_NETWORK_NAME)
    cfg = share.config
    encrypt = bool(cfg and cfg.encrypt) or session.encrypt_data
    if encrypt and session.encryptor is None and server.config.reject_unencrypted:
        raise SmbError(st.STATUS_ACCESS_DENIED)   # 3.3.5.7: client cannot encrypt
    if share.is_ipc:
        share_type, caps, access = m.SHARE_TYPE_PIPE, 0, cr.FILE_ALL_ACCESS
        share_flags = 0
    else:
        share_type = m.SHARE_TYPE_DISK
        access = READ_ONLY_ACCESS if cfg.read_only else cr.FILE_ALL_ACCESS
        share_flags = m.SHAREFLAG_MANUAL_CACHING
        caps = 0
        if cfg.ca and conn.dialect >= 0x0300:
            caps |= m.SHARE_CAP_CONTINUOUS_AVAILABILITY
        sc = server.config
        if sc.clustered and conn.dialect >= 0x0300:     # MS-SMB2 2.2.10; witness is used only with CA|CLUSTER
            caps |= m.SHARE_CAP_CLUSTER
            if sc.scale_out:
                caps |= m.SHARE_CAP_SCALEOUT
            if sc.asymmetric and conn.dialect >= 0x0302:
                caps |= m.SHARE_CAP_ASYMMETRIC
    if encrypt and conn.dialect >= 0x0300 and cfg is not None:
        share_flags |= m.SHAREFLAG_ENCRYPT_DATA
    tree = TreeConnect(session.next_tree_id, session, share, access, encrypt_data=encrypt and bool(cfg))
    session.next_tree_id += 1
    session.add_tree(tree)
    reply = Reply(m.pack_tree_connect_response(share_type, share_flags, caps, access))
    reply.tree_id = tree.tree_id
    return reply


def tree_disconnect(req) -> Reply:
    m.check_size(req.msg, 4)
    from .files import close_open
    tree = req.tree
    for o in [o for o in req.server.opens.values() if o.tree is tree]:
        close_open(req.server, o)
    req.session.trees.pop(tree.tree_id, None)
    return Reply(m.EMPTY4)
