"""CREATE helpers: create contexts that shape the new object (MS-SMB2 2.2.13.2), access
checks against the object's security descriptor, and named-stream targets."""
from __future__ import annotations

import dataclasses
import os
import struct

from .. import status as st
from ..errors import SmbError
from ..vfs_path import upcase
from ..wire import create as cr
from ..wire import security as sec
from ..wire.fscc import FsccError
from ..wire.fscc_ea import decode_full_ea_list
from . import access as ac
from . import acl


def parse_ea_context(r, fs) -> list | None:
    """SMB2_CREATE_EA_BUFFER (MS-SMB2 2.2.13.2.1): a FILE_FULL_EA_INFORMATION chain."""
    blob = r.contexts.get(cr.CTX_EA_BUFFER)
    if blob is None:
        return None
    if not fs.meta.eas_supported:
        raise SmbError(st.STATUS_EAS_NOT_SUPPORTED)
    try:
        return decode_full_ea_list(blob)
    except FsccError as e:
        raise SmbError(e.status) from None


def parse_alloc_context(r) -> int | None:
    """SMB2_CREATE_ALLOCATION_SIZE (MS-SMB2 2.2.13.2.6): 8-byte AllocationSize."""
    blob = r.contexts.get(cr.CTX_ALLOCATION_SIZE)
    if blob is None:
        return None
    if len(blob) != 8:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    return struct.unpack("<Q", blob)[0]


def check_existing_access(req, fs, host: str, desired: int, read_only: bool) -> int:
    """MS-FSA 2.1.5.1.2.1 access check of an open of an existing object against its SD.
    Returns the granted access (MAXIMUM_ALLOWED resolved, capped by the share)."""
    server = req.server
    sd = acl.stored_sd(fs, host)
    if sd is None:   # default SD: the share's own access rules apply (owner has full control)
        return ac.map_generic(desired, read_only=read_only)
    token = acl.token_sids(req.session, server)
    explicit = ac.map_generic(desired & ~cr.MAXIMUM_ALLOWED, read_only=read_only)
    allowed = _with_parent_rights(req, fs, host, token, acl.maximal_access(sd, token))
    missing = explicit & ~allowed
    if missing:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if desired & cr.MAXIMUM_ALLOWED:
        cap = ac.READ_ONLY_MAX if read_only else cr.FILE_ALL_ACCESS
        return explicit | (allowed & cap)
    return explicit


def maximal_access(req, fs, host: str, share_max: int) -> int:
    """SMB2_CREATE_QUERY_MAXIMAL_ACCESS (MS-SMB2 3.3.5.9.5): what the object's SD grants the
    user (DELETE also through the parent's FILE_DELETE_CHILD), within the share's limit."""
    sd = acl.stored_sd(fs, host)
    if sd is None:
        return share_max
    token = acl.token_sids(req.session, req.server)
    return _with_parent_rights(req, fs, host, token, acl.maximal_access(sd, token)) & share_max


def _with_parent_rights(req, fs, host: str, token, allowed: int) -> int:
    """MS-FSA 2.1.5.1.2.1: FILE_DELETE_CHILD on the parent grants DELETE, FILE_LIST_DIRECTORY
    on the parent grants FILE_READ_ATTRIBUTES."""
    if host == fs.root or allowed & (cr.DELETE | cr.FILE_READ_ATTRIBUTES) == cr.DELETE | cr.FILE_READ_ATTRIBUTES:
        return allowed
    parent = acl.maximal_access(acl.effective_sd(req.server, fs, os.path.dirname(host), True), token)
    if parent & cr.FILE_DELETE_CHILD:
        allowed |= cr.DELETE
    if parent & cr.FILE_READ_DATA:   # FILE_LIST_DIRECTORY
        allowed |= cr.FILE_READ_ATTRIBUTES
    return allowed


def stream_delete_conflict(server, fs, host: str, stt: os.stat_result, stream: str, access: int) -> bool:
    """MS-FSA 2.1.5.1.2: opening a file with DELETE access conflicts with an open of any of
    its named streams that does not share delete (the file would go with the stream)."""
    if stream or not access & cr.DELETE:
        return False
    for name, _sres in fs.streams.list(host):
        state = server.file_state(state_key(stt, name), create=False)
        if state is not None and any(not o.share_access & cr.FILE_SHARE_DELETE for o in state.opens):
            return True
    return False


def stream_data_path(fs, host: str, stream: str, base_exists: bool) -> tuple[str | None, bool]:
    """(data path or None, exists) of a named stream of ``host``."""
    if not base_exists:
        return None, False
    try:
        p = fs.streams.data_path(host, stream)
    except OSError as e:
        raise SmbError(fs.map_oserror(e)) from None
    return p, p is not None and os.path.lexists(p)


def create_stream(fs, host: str, stream: str, base_exists: bool, attrs: int) -> tuple[int, str, bool]:
    """Create a stream (and its base file when missing, MS-FSA 2.1.5.1.1).
    Returns (fd, data path, base_created). Raises OSError."""
    base_created = False
    if not base_exists:
        bfd = os.open(host, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        os.close(bfd)
        base_created = True
        fs.init_metadata(host, attrs & ~ac.FILE_ATTRIBUTE_DIRECTORY)
    try:
        data = fs.streams.data_path(host, stream, create=True)
        fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        fs.streams.register(host, stream)
    except OSError:
        if base_created:
            undo_stream_create(fs, host, None, True)
        raise
    return fd, data, base_created


def undo_stream_create(fs, host: str, data: str | None, base_created: bool) -> None:
    if data is not None:
        fs.streams.remove_data_path(data)
    if base_created:
        try:
            fs.delete_object(host, False)
        except OSError:
            pass


def state_key(stt: os.stat_result, stream: str) -> tuple:
    """FileState identity: the file, or one named stream of it (share modes, locks and
    oplocks are per stream, MS-FSA 2.1.1.3)."""
    base = (stt.st_dev, stt.st_ino)
    return base + (upcase(stream),) if stream else base


def finish_object(req, fs, host: str, is_dir: bool, created: bool, fd, eas, given_sd, alloc) -> None:
    """Apply EA, security-descriptor and allocation-size contexts to a new (or
    overwritten) object (MS-FSA 2.1.5.1.1 / 2.1.5.1.2.1)."""
    if eas:
        status = fs.meta.set_eas(host, eas)
        if status != st.STATUS_SUCCESS:
            raise SmbError(status)
    if created:
        sd = acl.new_object_sd(req.server, fs, os.path.dirname(host), is_dir, given_sd)
        if sd is not None:
            status = fs.meta.set_sd(host, sec.encode_sd(sd))
            if status != st.STATUS_SUCCESS:
                raise SmbError(status)
    if alloc and fd is not None:
        preallocate(fd, alloc)


def preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes without changing EOF (MS-FSA 2.1.5.14.1 FileAllocationInformation);
    STATUS_DISK_FULL when the volume cannot hold it. Skipped where the host cannot preallocate."""
    from ..vfs_meta import _fallocate
    if _fallocate is None or size <= 0:
        return
    vfs = os.fstatvfs(fd)
    if size > os.fstat(fd).st_size + vfs.f_bavail * vfs.f_frsize:
        raise SmbError(st.STATUS_DISK_FULL)
    # FALLOC_FL_KEEP_SIZE; already allocated ranges are left alone by the kernel
    if _fallocate(fd, 1, 0, size) != 0:
        import ctypes
        import errno
        if ctypes.get_errno() in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise SmbError(st.STATUS_DISK_FULL)


def set_allocation(fd: int, value: int) -> None:
    """FileAllocationInformation (MS-FSA 2.1.5.14.1): below EOF truncates the file; otherwise
    the allocation becomes ``value`` (space beyond EOF is reserved or released), EOF unchanged."""
    sres = os.fstat(fd)
    if value < sres.st_size:
        os.ftruncate(fd, value)
        return
    if value < sres.st_blocks * 512 and sres.st_blocks * 512 > (sres.st_size + 4095) & ~4095:
        os.ftruncate(fd, sres.st_size)   # releases preallocated blocks past EOF
        os.utime(fd, ns=(sres.st_atime_ns, sres.st_mtime_ns))
    preallocate(fd, value)


def open_info(fs, host: str, fd, stream: str):
    """FileInfo of an open: the file's, with a stream's own size for stream opens."""
    info = fs.stat(host)
    if stream and fd is not None:
        s = os.fstat(fd)
        info = dataclasses.replace(info, end_of_file=s.st_size, is_directory=False,
                                   allocation_size=max(s.st_blocks * 512, (s.st_size + 4095) & ~4095))
    return info
