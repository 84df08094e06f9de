"""SET_INFO for files (MS-SMB2 3.3.5.21.1, MS-FSA 2.1.5.14)."""
from __future__ import annotations

import os

from .. import status as st
from ..errors import SmbError
from ..wire import create as cr
from ..wire import fscc
from .access import FILE_ATTRIBUTE_READONLY


def apply_file_info(req, o, cls: int, value) -> None:
    fs = o.tree.share.fs
    server = req.server
    if cls == fscc.FileBasicInformation:
        if not o.access & cr.FILE_WRITE_ATTRIBUTES:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        attrs = value.file_attributes
        if attrs:
            if o.is_directory and attrs & fscc.FILE_ATTRIBUTE_TEMPORARY:
                raise SmbError(st.STATUS_INVALID_PARAMETER)
            if not o.is_directory and attrs & fscc.FILE_ATTRIBUTE_DIRECTORY:
                raise SmbError(st.STATUS_INVALID_PARAMETER)
        status = fs.set_times(o.host_path, creation_time=value.creation_time,
                              last_access_time=value.last_access_time, last_write_time=value.last_write_time,
                              change_time=value.change_time)
        if status == st.STATUS_SUCCESS and attrs:
            status = fs.set_attributes(o.host_path, attrs)
        if status != st.STATUS_SUCCESS:
            raise SmbError(status)
        server.notify.report(o.host_path, "basic", o.is_directory, info=value)
        return
    if cls in (fscc.FileRenameInformation, fscc.FileRenameInformationEx):
        _rename(req, o, value)
        return
    if cls in (fscc.FileDispositionInformation, fscc.FileDispositionInformationEx):
        if not o.access & cr.DELETE:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        state = server.files.get(o.file_key)
        if value.delete_pending:
            info = fs.stat(o.host_path)
            ignore_ro = value.flags & fscc.FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE
            if info.attributes & FILE_ATTRIBUTE_READONLY and not ignore_ro:
                raise SmbError(st.STATUS_CANNOT_DELETE)
            if o.is_directory and any(True for _ in os.scandir(o.host_path)):
                raise SmbError(st.STATUS_DIRECTORY_NOT_EMPTY)
        if value.flags & fscc.FILE_DISPOSITION_POSIX_SEMANTICS and value.delete_pending:
            # POSIX semantics: the name goes away now; open handles keep the data
            o.delete_on_close = False
            state.delete_pending = True
            return
        state.delete_pending = bool(value.delete_pending)
        if state.delete_pending:   # MS-FSA 2.1.5.14.3: waiting CHANGE_NOTIFYs on it end
            server.notify.report(o.host_path, "delete_pending", o.is_directory)
        if not value.delete_pending:
            for other in state.opens:
                other.delete_on_close = False
        return
    if cls == fscc.FileEndOfFileInformation:
        if not o.access & cr.FILE_WRITE_DATA or o.is_directory:
            raise SmbError(st.STATUS_ACCESS_DENIED if not o.is_directory else st.STATUS_INVALID_PARAMETER)
        if value < 0:
            raise SmbError(st.STATUS_INVALID_PARAMETER)
        server.oplocks.on_truncate(o)   # MS-FSA 2.1.4.12: level II / R caching of others breaks
        os.ftruncate(o.fd, value)
        server.notify.report(o.host_path, "modified", False)
        return
    if cls == fscc.FileAllocationInformation:
        if not o.access & cr.FILE_WRITE_DATA or o.is_directory:
            raise SmbError(st.STATUS_ACCESS_DENIED if not o.is_directory else st.STATUS_INVALID_PARAMETER)
        server.oplocks.on_truncate(o)   # MS-FSA 2.1.4.12: level II / R caching of others breaks
        from .create_ext import set_allocation
        set_allocation(o.fd, value)   # MS-FSA 2.1.5.14.1
        return
    if cls == fscc.FilePositionInformation:
        o.position = value
        return
    if cls == fscc.FileModeInformation:
        o.mode = value
        return
    if cls == fscc.FileValidDataLengthInformation:
        if not o.access & cr.FILE_WRITE_DATA:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        return
    if cls in (fscc.FileLinkInformation, getattr(fscc, "FileLinkInformationEx", -1)):
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    raise SmbError(st.STATUS_INVALID_INFO_CLASS)


def _rename(req, o, value) -> None:
    """MS-FSA 2.1.5.14.11 (FileRenameInformation)."""
    if not o.access & cr.DELETE:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if value.root_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    fs = o.tree.share.fs
    server = req.server
    target = value.file_name
    if target.startswith("\\"):
        target = target.lstrip("\\")
    if not target:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    replace = value.replace_if_exists or bool(value.flags & fscc.FILE_RENAME_REPLACE_IF_EXISTS)
    if target.startswith(":") or o.stream:
        raise SmbError(st.STATUS_NOT_SUPPORTED)   # renaming named streams is not implemented
    lk = fs.lookup(target, for_create=True)
    if lk.status == st.STATUS_SUCCESS and lk.stream_name:
        raise SmbError(st.STATUS_OBJECT_NAME_INVALID)   # a file cannot become another file's stream
    status, dst = lk.status, lk.host_path
    if status != st.STATUS_SUCCESS:
        raise SmbError(status)
    src = o.host_path
    # the destination's parent directory open with DELETE access blocks the rename (Windows and
    # Samba's parent_dirname_compatible_open; smbtorture smb2.oplock.exclusive6 / batch19 / batch20)
    parent = os.path.dirname(dst.rstrip("/"))
    if any(x.host_path.rstrip("/") == parent and x.is_directory and x.access & cr.DELETE and not x.stream
           for x in server.opens.values() if not x.is_pipe and not x.closed):
        raise SmbError(st.STATUS_SHARING_VIOLATION)
    # open handles under a directory being renamed block it (Windows)
    if o.is_directory:
        prefix = src.rstrip("/") + "/"
        if any(x.host_path.startswith(prefix) for x in server.opens.values() if not x.is_pipe) \
                or server.durable.any_under(prefix):    # disconnected durable opens count too
            raise SmbError(st.STATUS_ACCESS_DENIED)
    if os.path.lexists(dst) and not _same_file(dst, src) and replace:
        st_dst = os.stat(dst)
        other = server.files.get((st_dst.st_dev, st_dst.st_ino))
        if other is not None and other.opens:
            raise SmbError(st.STATUS_ACCESS_DENIED)   # MS-FSA 2.1.5.15.12: target is open
    # sharing: other opens of the source without FILE_SHARE_DELETE block a rename
    state = server.files.get(o.file_key)
    if state is not None:
        for other in state.opens:
            if other is not o and not other.share_access & cr.FILE_SHARE_DELETE:
                raise SmbError(st.STATUS_SHARING_VIOLATION)
    status = fs.rename(src, dst, replace, new_name=target.replace("/", "\\").rsplit("\\", 1)[-1])
    if status != st.STATUS_SUCCESS:
        raise SmbError(status)
    dst = os.path.join(os.path.dirname(dst), target.replace("/", "\\").rsplit("\\", 1)[-1])
    new_name = fs.to_smb_path(dst)
    for x in server.opens.values():
        if x.file_key == o.file_key:
            x.host_path, x.name = dst, new_name
    server.durable.on_rename(o.file_key, dst, new_name)   # disconnected ones; handle-store rows
    if state is not None:
        state.path = dst
    server.notify.report(src, "renamed", o.is_directory, new_path=dst)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
