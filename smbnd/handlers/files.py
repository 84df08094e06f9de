"""CREATE (MS-SMB2 3.3.5.9), CLOSE (3.3.5.10), FLUSH (3.3.5.11), READ (3.3.5.12), WRITE (3.3.5.13)."""
from __future__ import annotations

import errno
import logging
import os
import stat as stmod
import struct

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..state import Open
from ..vfs import VfsError
from ..wire import create as cr
from ..wire import messages as m
from . import access as ac

log = logging.getLogger("smbnd.files")


def _times(info):
    return (info.creation_time, info.last_access_time, info.last_write_time, info.change_time)


def create(req) -> Reply:
    r = cr.parse_create(req.msg)
    server, tree = req.server, req.tree
    # 3.3.5.9 parameter validation
    if r.impersonation_level > 3:
        raise SmbError(st.STATUS_BAD_IMPERSONATION_LEVEL)
    if r.disposition > cr.FILE_OVERWRITE_IF or r.options & ~cr.CREATE_OPTIONS_VALID \
            or r.file_attributes & ~0x7FB7 or r.share_access & ~0x7:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.options & cr.FILE_RESERVE_OPFILTER:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if (r.options & cr.FILE_DIRECTORY_FILE) and (r.options & cr.FILE_NON_DIRECTORY_FILE):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.desired_access & ~ac.VALID_ACCESS_MASK:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if r.oplock_level not in (0, 1, 8, 9, 0xFF):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if tree.share.is_ipc:
        from .pipes import pipe_create
        return pipe_create(req, r)
    if r.name.startswith("\\"):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.options & cr.FILE_OPEN_BY_FILE_ID:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    # contexts that change the open (others are parsed and ignored per 3.3.5.9)
    if cr.CTX_TIMEWARP_TOKEN in r.contexts:
        raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)   # no snapshots on this share
    if cr.CTX_EA_BUFFER in r.contexts:
        raise SmbError(st.STATUS_EAS_NOT_SUPPORTED)
    fs = tree.share.fs
    status, host = fs.resolve(r.name, for_create=True)
    if status != st.STATUS_SUCCESS:
        raise SmbError(status)
    try:
        existing = os.lstat(host)
    except FileNotFoundError:
        existing = None
    except OSError as e:
        raise SmbError(fs.map_oserror(e)) from None
    read_only_share = tree.share.config.read_only
    access = ac.map_generic(r.desired_access, read_only=read_only_share)
    is_dir_req = bool(r.options & cr.FILE_DIRECTORY_FILE)
    action = cr.FILE_OPENED
    disp = r.disposition
    if existing is not None:
        is_dir = stmod.S_ISDIR(existing.st_mode)
        state = server.file_state((existing.st_dev, existing.st_ino), create=False)
        if state is not None and state.delete_pending:
            raise SmbError(st.STATUS_DELETE_PENDING)
        if disp == cr.FILE_CREATE:
            raise SmbError(st.STATUS_OBJECT_NAME_COLLISION)
        if is_dir and r.options & cr.FILE_NON_DIRECTORY_FILE:
            raise SmbError(st.STATUS_FILE_IS_A_DIRECTORY)
        if not is_dir and is_dir_req:
            raise SmbError(st.STATUS_NOT_A_DIRECTORY)
        if is_dir and disp in (cr.FILE_OVERWRITE, cr.FILE_OVERWRITE_IF, cr.FILE_SUPERSEDE):
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        if read_only_share and (access & ac.WRITE_LIKE or disp in (cr.FILE_OVERWRITE, cr.FILE_OVERWRITE_IF,
                                                                    cr.FILE_SUPERSEDE)):
            raise SmbError(st.STATUS_ACCESS_DENIED)
        attrs = fs.stat(host).attributes
        if attrs & ac.FILE_ATTRIBUTE_READONLY and not is_dir:
            if access & (cr.FILE_WRITE_DATA | cr.FILE_APPEND_DATA) or disp in (
                    cr.FILE_OVERWRITE, cr.FILE_OVERWRITE_IF, cr.FILE_SUPERSEDE):
                raise SmbError(st.STATUS_ACCESS_DENIED)
            if r.options & cr.FILE_DELETE_ON_CLOSE:
                raise SmbError(st.STATUS_CANNOT_DELETE)
        if disp in (cr.FILE_OVERWRITE, cr.FILE_OVERWRITE_IF):
            action = cr.FILE_OVERWRITTEN
        elif disp == cr.FILE_SUPERSEDE:
            action = cr.FILE_SUPERSEDED
    else:
        if disp in (cr.FILE_OPEN, cr.FILE_OVERWRITE):
            raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
        if read_only_share:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        is_dir = is_dir_req
        if is_dir and r.file_attributes & ac.FILE_ATTRIBUTE_TEMPORARY:
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        action = cr.FILE_CREATED
    if r.options & cr.FILE_DELETE_ON_CLOSE and not (access & cr.DELETE):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    # create or open the object
    created = action == cr.FILE_CREATED
    try:
        if created:
            if is_dir:
                os.mkdir(host, 0o777)
                fd = None
            else:
                fd = os.open(host, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        elif is_dir:
            fd = None
        else:
            flags = os.O_RDWR if (access & ac.WRITE_LIKE or action != cr.FILE_OPENED) and not read_only_share \
                else os.O_RDONLY
            fd = os.open(host, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise SmbError(st.STATUS_OBJECT_NAME_COLLISION) from None
        raise SmbError(fs.map_oserror(e)) from None
    stt = os.fstat(fd) if fd is not None else os.stat(host)
    key = (stt.st_dev, stt.st_ino)
    state = server.file_state(key, create=True, path=host)
    # share modes (MS-FSA 2.1.5.1.2 / 2.1.5.1.2.1)
    conflict = ac.sharing_conflict(state.opens, access, r.share_access)
    if conflict:
        if fd is not None:
            os.close(fd)
        if created:
            _undo_create(host, is_dir)
        server.release_file_state(state)
        raise SmbError(st.STATUS_SHARING_VIOLATION)
    if action in (cr.FILE_OVERWRITTEN, cr.FILE_SUPERSEDED):
        os.ftruncate(fd, 0)
    if created:
        fs.init_metadata(host, r.file_attributes & ~ac.FILE_ATTRIBUTE_DIRECTORY)
    elif action in (cr.FILE_OVERWRITTEN, cr.FILE_SUPERSEDED):
        fs.set_attributes(host, (r.file_attributes | ac.FILE_ATTRIBUTE_ARCHIVE) & ~ac.FILE_ATTRIBUTE_DIRECTORY)
    pid, vid = server.new_file_ids()
    o = Open(persistent_id=pid, volatile_id=vid, tree=tree, session=req.session, name=r.name, host_path=host,
             is_directory=is_dir, access=access, share_access=r.share_access, create_options=r.options, fd=fd,
             write_through=bool(r.options & cr.FILE_WRITE_THROUGH))
    o.file_key = key
    if r.options & cr.FILE_DELETE_ON_CLOSE:
        o.delete_on_close = True
    state.opens.append(o)
    server.opens[vid] = o
    tree.open_count += 1
    req.related_file_id = o.file_id
    out_ctx: list[tuple[bytes, bytes]] = []
    if cr.CTX_QUERY_MAXIMAL_ACCESS in r.contexts:
        out_ctx.append((cr.CTX_QUERY_MAXIMAL_ACCESS, struct.pack("<II", 0, tree.maximal_access)))
    if cr.CTX_QUERY_ON_DISK_ID in r.contexts:
        out_ctx.append((cr.CTX_QUERY_ON_DISK_ID, struct.pack("<QQ16s", stt.st_ino, stt.st_dev, b"")))
    oplock_level, lease_ctx = server.oplocks.on_create(req, o, r)
    if lease_ctx:
        out_ctx.append((cr.CTX_REQUEST_LEASE, lease_ctx))
    if created:
        server.notify.report(host, "added", is_dir)
    elif action != cr.FILE_OPENED:
        server.notify.report(host, "modified", is_dir)
    info = fs.stat(host)
    return Reply(cr.pack_create_response(oplock_level, 0, action, _times(info), info.allocation_size,
                                         info.end_of_file, info.attributes, o.file_id, out_ctx))


def _undo_create(host: str, is_dir: bool) -> None:
    try:
        os.rmdir(host) if is_dir else os.unlink(host)
    except OSError:
        pass


def close_open(server, o: Open) -> None:
    """Tear down one Open: locks, oplock/lease, delete-on-close (MS-FSA 2.1.5.4)."""
    if o.closed:
        return
    o.closed = True
    server.opens.pop(o.volatile_id, None)
    o.tree.open_count -= 1
    server.oplocks.on_close(o)
    server.notify.on_close(o)
    if o.is_pipe:
        return
    state = server.file_state(o.file_key, create=False)
    o.close_fd()
    if state is None:
        return
    if o in state.opens:
        state.opens.remove(o)
    server.locks.on_close(state, o)
    if o.delete_on_close:
        state.delete_pending = True
    if not state.opens:
        if state.delete_pending:
            try:
                if o.is_directory:
                    os.rmdir(state.path)
                else:
                    os.unlink(state.path)
                server.notify.report(state.path, "removed", o.is_directory)
            except OSError as e:
                log.info("delete on close of %s failed: %s", state.path, e.strerror)
        server.release_file_state(state)


def close(req) -> Reply:
    flags, fid = m.parse_close(req.msg)
    o = req.open(fid)
    post = None
    if flags & m.CLOSE_FLAG_POSTQUERY_ATTRIB and not o.is_pipe:
        try:
            post = o.tree.share.fs.stat(o.host_path)
        except VfsError:
            post = None
    close_open(req.server, o)
    if post is not None and not os.path.lexists(o.host_path):
        post = None   # deleted on close
    if post is None:
        return Reply(m.pack_close_response(0))
    return Reply(m.pack_close_response(m.CLOSE_FLAG_POSTQUERY_ATTRIB, _times(post), post.allocation_size,
                                       post.end_of_file, post.attributes))


def flush(req) -> Reply:
    o = req.open(m.parse_flush(req.msg))
    if o.is_pipe:
        return Reply(m.EMPTY4)
    if not o.access & (cr.FILE_WRITE_DATA | cr.FILE_APPEND_DATA):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if o.fd is not None:
        os.fsync(o.fd)
    return Reply(m.EMPTY4)


def read(req) -> Reply:
    r = m.parse_read(req.msg)
    o = req.open(r.file_id)
    if o.is_pipe:
        from .pipes import pipe_read
        return pipe_read(req, o, r)
    if o.is_directory:
        raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)
    # 3.3.5.12: Length > Connection.MaxReadSize (64 KiB as advertised without LARGE_MTU, 3.3.5.4)
    if r.length > (req.server.config.max_read_size if req.conn.supports_multi_credit else 65536):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.offset > 0x7FFFFFFFFFFFFFFF:   # MS-FSA 2.1.5.2: a negative ByteOffset is invalid
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & (cr.FILE_READ_DATA | cr.FILE_EXECUTE):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if req.server.locks.conflicts(o, r.offset, r.length, write=False):
        raise SmbError(st.STATUS_FILE_LOCK_CONFLICT)
    try:
        data = os.pread(o.fd, r.length, r.offset)
    except OSError as e:
        raise SmbError(o.tree.share.fs.map_oserror(e)) from None
    if (not data and r.length) or len(data) < r.minimum_count:
        raise SmbError(st.STATUS_END_OF_FILE)
    o.position = r.offset + len(data)   # CurrentByteOffset, as Windows and Samba update it
    return Reply([m.pack_read_response_fixed(len(data)), data])


def write(req) -> Reply:
    r = m.parse_write(req.msg)
    o = req.open(r.file_id)
    if o.is_pipe:
        from .pipes import pipe_write
        return pipe_write(req, o, r)
    if o.is_directory:
        raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)
    # 3.3.5.13: Length > Connection.MaxWriteSize (64 KiB as advertised without LARGE_MTU, 3.3.5.4)
    if r.length > (req.server.config.max_write_size if req.conn.supports_multi_credit else 65536):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    offset = r.offset
    if offset == 0xFFFFFFFFFFFFFFFF and o.access & cr.FILE_APPEND_DATA:
        offset = os.fstat(o.fd).st_size
    elif not o.access & cr.FILE_WRITE_DATA:
        if not (o.access & cr.FILE_APPEND_DATA):
            raise SmbError(st.STATUS_ACCESS_DENIED)
    if offset + r.length > 0xFFFFFFFFFFFF:   # beyond what the backing fs can address
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if req.server.locks.conflicts(o, offset, r.length, write=True):
        raise SmbError(st.STATUS_FILE_LOCK_CONFLICT)
    data = req.msg[r.data_offset: r.data_offset + r.length]
    try:
        n = os.pwrite(o.fd, data, offset)
        if r.flags & m.WRITEFLAG_WRITE_THROUGH or o.write_through:
            os.fdatasync(o.fd)   # acknowledged write-through data is on disk before the reply
    except OSError as e:
        raise SmbError(o.tree.share.fs.map_oserror(e)) from None
    req.server.oplocks.on_write(o)
    req.server.notify.report(o.host_path, "modified", False)
    return Reply(m.pack_write_response(n))
