"""SMB2_CREATE_APP_INSTANCE_ID and SMB2_CREATE_APP_INSTANCE_VERSION (MS-SMB2 2.2.13.2.13,
2.2.13.2.15, 3.3.5.9.13).

A clustered application that fails over to another node opens its files again with the same
AppInstanceId from a client with a different ClientGuid; the server then closes the old node's
Open (connected or a disconnected durable/persistent one) so that the new open does not run into
its share modes or its caching. With a version (3.1.1), an older instance can't close a newer one.

Hooks: ``before_open(req, r, host, stream)`` in CREATE once the target is resolved, before the
sharing and caching checks; ``on_created(req, r, o)`` once the new Open exists.
"""
from __future__ import annotations

import logging
import struct
import weakref

from . import status as st
from .errors import SmbError
from .wire import create as cr

log = logging.getLogger("smbnd.appinstance")

DIALECT_311 = 0x0311
# "the maximal access includes GENERIC_READ": the specific rights GENERIC_READ maps to on files
# (MS-SMB2 2.2.13.1.1), SYNCHRONIZE aside (a security descriptor need not grant it)
READ_RIGHTS = cr.FILE_READ_DATA | cr.FILE_READ_EA | cr.FILE_READ_ATTRIBUTES | cr.READ_CONTROL


class AppInstanceTable:
    """AppInstanceId -> the Opens that carry it (weak: closed Opens fall out by themselves)."""

    def __init__(self):
        self.by_id: dict[bytes, weakref.WeakSet] = {}

    def add(self, app_id: bytes, o) -> None:
        self.by_id.setdefault(app_id, weakref.WeakSet()).add(o)

    def opens(self, app_id: bytes) -> list:
        ws = self.by_id.get(app_id)
        if ws is None:
            return []
        live = [o for o in ws if not o.closed]
        if not live:
            del self.by_id[app_id]
        return live


def table(server) -> AppInstanceTable:
    t = getattr(server, "app_instance_table", None)
    if t is None:
        t = server.app_instance_table = AppInstanceTable()
    return t


def parse_app_instance_id(data: bytes) -> bytes:
    """2.2.13.2.13: StructureSize (20), Reserved, AppInstanceId (16)."""
    if len(data) < 20 or struct.unpack_from("<H", data, 0)[0] != 20:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    return bytes(data[4:20])


def parse_app_instance_version(data: bytes) -> tuple[int, int]:
    """2.2.13.2.15: StructureSize (24), Reserved, Padding, AppInstanceVersionHigh, ...Low."""
    if len(data) < 24 or struct.unpack_from("<H", data, 0)[0] != 24:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    return struct.unpack_from("<QQ", data, 8)


def request_ids(req, r) -> tuple[bytes | None, tuple[int, int] | None]:
    """(AppInstanceId, version) of a CREATE; (None, None) when the section does not apply: before
    3.x, without the context, or with a DH2C (3.3.5.9.13: the reconnect is processed instead).
    The version context is only valid on 3.1.1 (2.2.13.2.15) and is ignored elsewhere."""
    data = r.contexts.get(cr.CTX_APP_INSTANCE_ID)
    if data is None or req.conn.dialect < 0x0300 or cr.CTX_DURABLE_HANDLE_RECONNECT_V2 in r.contexts:
        return None, None
    app_id = parse_app_instance_id(data)
    vdata = r.contexts.get(cr.CTX_APP_INSTANCE_VERSION)
    version = parse_app_instance_version(vdata) if vdata is not None and req.conn.dialect >= DIALECT_311 \
        else None
    return app_id, version


def _client_guid(o) -> bytes:
    if o.client_guid:
        return o.client_guid
    sess = o.session
    conn = getattr(sess, "connection", None) if sess is not None else None
    return getattr(conn, "client_guid", b"") if conn is not None else b""


def before_open(req, r, host: str, stream: str) -> None:
    """3.3.5.9.13: find the Opens with the same AppInstanceId, path and share and another
    ClientGuid. A newer-or-equal version held by them fails this CREATE with
    STATUS_FILE_FORCED_CLOSED; otherwise, when the caller's maximal access on the file includes
    GENERIC_READ, they are closed (3.3.4.17) before the create goes on: their holders then get
    STATUS_FILE_CLOSED, a disconnected durable or persistent holder can no longer reconnect."""
    app_id, version = request_ids(req, r)
    if app_id is None:
        return
    server, tree = req.server, req.tree
    server.durable.pending.app_instance(app_id)     # restored opens with this id, rebuilt first
    me = req.conn.client_guid
    victims = [o for o in table(server).opens(app_id)
               if o.tree.share is tree.share and o.host_path == host and o.stream == stream
               and _client_guid(o) != me]
    if not victims:
        return
    for o in victims:
        old = o.app_instance_version
        if old is None:
            continue
        # "Open.ApplicationInstanceVersionHigh/Low are not empty": a request without a version
        # can't replace a versioned instance; nor can an older or equal version
        if version is None or old[0] > version[0] or (old[0] == version[0] and old[1] >= version[1]):
            raise SmbError(st.STATUS_FILE_FORCED_CLOSED)
    if not _may_read(req, r, host):
        return
    from .handlers.files import close_open
    for o in victims:
        if o.closed:
            continue
        log.info("app instance %s: closing open %#x of %s for a new instance", app_id.hex(),
                 o.persistent_id, o.name)
        close_open(server, o)   # also drops a disconnected durable/persistent open's stored state


def _may_read(req, r, host: str) -> bool:
    """The maximal access the caller has on the file (share and security descriptor) includes
    GENERIC_READ (3.3.5.9.13; computed as for SMB2_CREATE_QUERY_MAXIMAL_ACCESS)."""
    from .handlers import create_ext as cx
    tree = req.tree
    if tree.maximal_access & READ_RIGHTS != READ_RIGHTS:
        return False
    try:
        granted = cx.check_existing_access(req, tree.share.fs, host, cr.MAXIMUM_ALLOWED,
                                           tree.share.config.read_only)
    except (SmbError, OSError):
        return False
    return granted & READ_RIGHTS == READ_RIGHTS


def on_created(req, r, o) -> None:
    """Open.AppInstanceId and Open.ApplicationInstanceVersionHigh/Low of the new Open."""
    app_id, version = request_ids(req, r)
    if app_id is None:
        return
    o.app_instance_id = app_id
    o.app_instance_version = version
    table(req.server).add(app_id, o)


def register(server, o) -> None:
    """Index an Open rebuilt from the handle store (version 0/0 there means "empty")."""
    if o.app_instance_id:
        table(server).add(o.app_instance_id, o)
