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
from . import acl
from . import create_ext as cx
from .. import appinstance, replay

log = logging.getLogger("smbnd.files")


def _times(info):
    return (info.creation_time, info.last_access_time, info.last_write_time, info.change_time)


def create(req) -> Reply:
    r = cr.parse_create(req.msg)
    server, tree = req.server, req.tree
    dreq = server.durable.before_create(req, r)   # 3.3.5.9.7 / 3.3.5.9.12: a reconnect is answered here
    if isinstance(dreq, Reply):
        return dreq
    # 3.3.5.9 parameter validation
    if r.impersonation_level > 3:
        raise SmbError(st.STATUS_BAD_IMPERSONATION_LEVEL)
    if r.disposition > cr.FILE_OVERWRITE_IF or r.options & ~cr.CREATE_OPTIONS_VALID \
            or r.share_access & ~0x7:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.options & cr.FILE_RESERVE_OPFILTER:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if (r.options & cr.FILE_DIRECTORY_FILE) and (r.options & cr.FILE_NON_DIRECTORY_FILE):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    # the access mask is judged before the attributes (Windows, smb2.create.gentest)
    if r.desired_access & ~ac.VALID_ACCESS_MASK:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if r.file_attributes & ~0x7FB7:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.oplock_level not in (0, 1, 8, 9, 0xFF):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if tree.share.is_ipc:
        from .pipes import pipe_create
        return pipe_create(req, r)
    if r.name.startswith("\\"):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.options & cr.FILE_OPEN_BY_FILE_ID:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    replayed = replay.check_create(req, r)      # 3.3.5.9.10: a replayed CREATE (CreateGuid)
    if replayed is not None:
        return replayed
    # contexts that change the open (others are parsed and ignored per 3.3.5.9)
    if cr.CTX_TIMEWARP_TOKEN in r.contexts:
        raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)   # no snapshots on this share
    fs = tree.share.fs
    lk = fs.lookup(r.name, for_create=True)
    if lk.status != st.STATUS_SUCCESS:
        raise SmbError(lk.status)
    host, stream = lk.host_path, lk.stream_name
    appinstance.before_open(req, r, host, stream)   # 3.3.5.9.13: close the old instance's open
    server.durable.before_open(req, r, host, stream)   # 3.3.5.9: FILE_NOT_AVAILABLE; 3.3.4.6 disconnected
    eas = cx.parse_ea_context(r, fs)            # 2.2.13.2.1
    given_sd = acl.parse_sd_context(r)          # 2.2.13.2.2
    alloc = cx.parse_alloc_context(r)           # 2.2.13.2.6
    try:
        existing = os.lstat(host)
    except FileNotFoundError:
        existing = None
    except OSError as e:
        raise SmbError(fs.map_oserror(e)) from None
    read_only_share = tree.share.config.read_only
    access = ac.map_generic(r.desired_access, read_only=read_only_share)
    is_dir_req = bool(r.options & cr.FILE_DIRECTORY_FILE)
    if stream and is_dir_req:
        raise SmbError(st.STATUS_NOT_A_DIRECTORY)   # a data stream is never a directory (MS-FSA 2.1.5.1)
    if lk.stream and existing is not None and stmod.S_ISDIR(existing.st_mode):
        # "dir::$DATA": a directory has no unnamed data stream (smb2.streams.dir)
        raise SmbError(st.STATUS_NOT_A_DIRECTORY if is_dir_req else st.STATUS_FILE_IS_A_DIRECTORY)
    # the object opened: the file/directory itself, or a named stream's data (sidecar file)
    data, data_exists = (cx.stream_data_path(fs, host, stream, existing is not None) if stream
                         else (host, existing is not None))
    action = cr.FILE_OPENED
    disp = r.disposition
    base_is_dir = existing is not None and stmod.S_ISDIR(existing.st_mode)
    if existing is not None:
        state = server.file_state((existing.st_dev, existing.st_ino), create=False)
        if state is not None and state.delete_pending:
            raise SmbError(st.STATUS_DELETE_PENDING)
    if data_exists:
        is_dir = base_is_dir and not stream
        if stream:
            state = server.file_state(cx.state_key(existing, stream), create=False)
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
        if attrs & ac.FILE_ATTRIBUTE_READONLY and not base_is_dir:
            if access & (cr.FILE_WRITE_DATA | cr.FILE_APPEND_DATA) or disp in (
                    cr.FILE_OVERWRITE, cr.FILE_OVERWRITE_IF, cr.FILE_SUPERSEDE):
                raise SmbError(st.STATUS_ACCESS_DENIED)
            if r.options & cr.FILE_DELETE_ON_CLOSE:
                raise SmbError(st.STATUS_CANNOT_DELETE)
        # MS-FSA 2.1.5.1.2.1: the object's security descriptor
        access = cx.check_existing_access(req, fs, host, r.desired_access, read_only_share)
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
        if existing is not None and not base_is_dir \
                and fs.stat(host).attributes & ac.FILE_ATTRIBUTE_READONLY:
            raise SmbError(st.STATUS_ACCESS_DENIED)   # a new stream writes to a read-only file
        action = cr.FILE_CREATED
    if r.options & cr.FILE_DELETE_ON_CLOSE and not (access & cr.DELETE):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    # MS-SMB2 3.3.5.9.8 / 3.3.5.9.11: the lease context, and its key not bound to another file
    lease_req = server.oplocks.lease_request(req, r)
    server.oplocks.check_lease_key(req, lease_req, cx.state_key(existing, stream) if data_exists else None)
    # create or open the object
    created = action == cr.FILE_CREATED
    base_created = False
    try:
        if created:
            if stream:
                fd, data, base_created = cx.create_stream(fs, host, stream, existing is not None,
                                                          r.file_attributes)
            elif is_dir:
                os.mkdir(host, 0o777)
                fd = None
            else:
                fd = os.open(host, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        elif is_dir:
            fd = None
        else:
            flags = os.O_RDWR if (access & ac.WRITE_LIKE or action != cr.FILE_OPENED) and not read_only_share \
                else os.O_RDONLY
            fd = os.open(data, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise SmbError(st.STATUS_OBJECT_NAME_COLLISION) from None
        raise SmbError(fs.map_oserror(e)) from None
    stt = os.stat(host) if stream else os.fstat(fd) if fd is not None else os.stat(host)
    key = cx.state_key(stt, stream)
    state = server.file_state(key, create=True, path=data)
    # share modes (MS-FSA 2.1.5.1.2 / 2.1.5.1.2.1)
    conflict = ac.sharing_conflict(state.opens, access, r.share_access) \
        or cx.stream_delete_conflict(server, fs, host, stt, stream, access)
    # MS-FSA 2.1.5.1.2 / 2.1.4.12: break the other opens' oplocks and leases first; wait for the
    # acknowledgments (interim STATUS_PENDING, the whole CREATE re-runs on each state change), then
    # check sharing again: a holder may have closed its handle meanwhile
    overwrite = action in (cr.FILE_OVERWRITTEN, cr.FILE_SUPERSEDED)
    wait, grant = server.oplocks.check_open(req, state, access, lease_req, conflict, overwrite,
                                            bool(r.options & cr.FILE_DELETE_ON_CLOSE))
    if wait and not created:
        parked = server.oplocks.park(req, key, create)
        if parked is not None:
            replay.create_parked(req, r, conflict)
            if fd is not None:
                os.close(fd)
            server.release_file_state(state)
            return parked
    if conflict:
        if fd is not None:
            os.close(fd)
        if created:
            _undo_create(fs, host, is_dir, stream and data, base_created)
        server.release_file_state(state)
        raise SmbError(st.STATUS_SHARING_VIOLATION)
    if action in (cr.FILE_OVERWRITTEN, cr.FILE_SUPERSEDED):
        os.ftruncate(fd, 0)
        if not stream:
            fs.streams.remove_all(host)   # overwriting the file drops its named streams (as Samba)
    if created and not stream:
        fs.init_metadata(host, r.file_attributes & ~ac.FILE_ATTRIBUTE_DIRECTORY)
    elif action in (cr.FILE_OVERWRITTEN, cr.FILE_SUPERSEDED) and not stream:
        fs.set_attributes(host, (r.file_attributes | ac.FILE_ATTRIBUTE_ARCHIVE) & ~ac.FILE_ATTRIBUTE_DIRECTORY)
    if action != cr.FILE_OPENED:
        try:
            cx.finish_object(req, fs, host, is_dir, created and (not stream or base_created), fd, eas,
                             given_sd, alloc)
        except SmbError:
            if fd is not None:
                os.close(fd)
            if created:
                _undo_create(fs, host, is_dir, stream and data, base_created)
            server.release_file_state(state)
            raise
    pid, vid = server.new_file_ids()
    o = Open(persistent_id=pid, volatile_id=vid, tree=tree, session=req.session, name=r.name, host_path=host,
             is_directory=is_dir, access=access, share_access=r.share_access, create_options=r.options, fd=fd,
             write_through=bool(r.options & cr.FILE_WRITE_THROUGH))
    o.file_key = key
    o.stream = stream
    o.lif = req.conn.lif        # its handle store is per (volume, LIF): docs/cluster-design.md
    if r.options & cr.FILE_DELETE_ON_CLOSE:
        o.delete_on_close = True
    state.opens.append(o)
    server.opens[vid] = o
    tree.open_count += 1
    req.related_file_id = o.file_id
    replay.on_created(req, r, o, action)
    appinstance.on_created(req, r, o)
    out_ctx: list[tuple[bytes, bytes]] = []
    if cr.CTX_QUERY_MAXIMAL_ACCESS in r.contexts:
        out_ctx.append((cr.CTX_QUERY_MAXIMAL_ACCESS,
                        struct.pack("<II", 0, cx.maximal_access(req, fs, host, tree.maximal_access))))
    if cr.CTX_QUERY_ON_DISK_ID in r.contexts:
        out_ctx.append((cr.CTX_QUERY_ON_DISK_ID, struct.pack("<QQ16s", stt.st_ino, stt.st_dev, b"")))
    oplock_level, lease_ctx = server.oplocks.grant(req, o, r, grant, existed=not created, overwrite=overwrite,
                                                   brlocks=bool(state.locks))
    if lease_ctx:
        out_ctx.append((cr.CTX_REQUEST_LEASE, lease_ctx))
    server.durable.grant(req, o, dreq, out_ctx)   # 3.3.5.9.6 / 3.3.5.9.10 (persistent: stored first)
    if created and not stream:
        server.notify.report(host, "added", is_dir)
    elif action != cr.FILE_OPENED:
        server.notify.report(host, "modified", is_dir)   # a stream change modifies its file
    info = cx.open_info(fs, host, fd, stream)
    return Reply(cr.pack_create_response(oplock_level, 0, action, _times(info), info.allocation_size,
                                         info.end_of_file, info.attributes, o.file_id, out_ctx))


def _undo_create(fs, host: str, is_dir: bool, stream_data=None, base_created: bool = False) -> None:
    if stream_data:
        cx.undo_stream_create(fs, host, stream_data, base_created)
        return
    try:
        fs.delete_object(host, is_dir)
    except OSError:
        pass


def close_open(server, o: Open) -> None:
    """Tear down one Open: locks, oplock/lease, delete-on-close (MS-FSA 2.1.5.4)."""
    if o.closed:
        return
    o.closed = True
    server.durable.on_close(o)      # durable index, reconnect timer, handle-store row
    server.opens.pop(o.volatile_id, None)
    o.tree.open_count -= 1
    server.oplocks.on_close(o)
    server.notify.on_close(o)
    if o.is_pipe:
        if o.pipe is not None:
            o.pipe.close()      # pipes.Pipe: fail waiting reads, orphan the RPC association
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
        server.notify.report(state.path, "delete_pending", o.is_directory)
    if not state.opens:
        if state.delete_pending:
            try:
                if o.stream:   # only the named stream goes (MS-FSA 2.1.5.4)
                    o.tree.share.fs.streams.remove_data_path(state.path)
                    server.notify.report(o.host_path, "modified", False)
                else:          # the file with all its streams
                    o.tree.share.fs.delete_object(state.path, o.is_directory)
                    server.notify.report(state.path, "removed", o.is_directory)
            except OSError as e:
                log.info("delete on close of %s failed: %s", state.path, e.strerror)
        server.release_file_state(state)


def close(req) -> Reply:
    flags, fid = m.parse_close(req.msg)
    o = req.open(fid)
    if o.holds:
        # an operation still in flight on this handle completes first; the CLOSE waits for it
        op = req.go_async()
        o.holds.append(lambda: op.complete(*_close_now(req.server, o, flags)))
        reply = Reply(status=st.STATUS_PENDING)
        reply.pending = op
        return reply
    status, body = _close_now(req.server, o, flags)
    return Reply(body, status)


def _close_now(server, o, flags: int):
    post = None
    if flags & m.CLOSE_FLAG_POSTQUERY_ATTRIB and not o.is_pipe:
        try:
            post = cx.open_info(o.tree.share.fs, o.host_path, o.fd, o.stream)
        except (VfsError, OSError):
            post = None
    if o.closed:
        return st.STATUS_FILE_CLOSED, [m.ERROR_BODY]
    close_open(server, o)
    if post is not None and not os.path.lexists(o.host_path):
        post = None   # deleted on close
    if post is None:
        return st.STATUS_SUCCESS, [m.pack_close_response(0)]
    return st.STATUS_SUCCESS, [m.pack_close_response(m.CLOSE_FLAG_POSTQUERY_ATTRIB, _times(post),
                                                     post.allocation_size, post.end_of_file, post.attributes)]


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
    pad = req.conn.read_body_padding
    if pad:
        return Reply([m.pack_read_response_fixed(len(data), pad), bytes(pad), data])
    return Reply([m.pack_read_response_fixed(len(data)), data])


MAX_FILE_SIZE = 0xFFFFFFF0000   # NTFS: 16 TiB - 64 KiB


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
    if not o.access & (cr.FILE_WRITE_DATA | cr.FILE_APPEND_DATA):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    # MS-FSA 2.1.5.3: a negative ByteOffset is invalid (SMB2 has no write-to-EOF value, Windows
    # rejects -1 and -2 too); no file may extend past the NTFS maximum (smb2.rw.invalid)
    if offset > 0x7FFFFFFFFFFFFFFF or (r.length and offset + r.length > MAX_FILE_SIZE):
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
