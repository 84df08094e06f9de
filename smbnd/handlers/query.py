"""QUERY_DIRECTORY (MS-SMB2 3.3.5.18), QUERY_INFO (3.3.5.20), SET_INFO (3.3.5.21)."""
from __future__ import annotations

import os
import struct
import zlib

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..vfs import wildcard_match
from ..vfs_short import short_name
from ..wire import create as cr
from ..wire import fscc
from ..wire import query as q

NEEDS_READ_ATTRIBUTES = {fscc.FileBasicInformation, fscc.FileAllInformation, fscc.FileNetworkOpenInformation,
                         fscc.FileAttributeTagInformation}
WILDCARDS = set("*?<>\"")


def _volume_serial(share) -> int:
    return zlib.crc32(share.name.lower().encode())


# ---- QUERY_DIRECTORY
def query_directory(req) -> Reply:
    r = q.parse_query_directory(req.msg)
    o = req.open(r.file_id)
    if not o.is_directory:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if not o.access & cr.FILE_READ_DATA:   # FILE_LIST_DIRECTORY
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if r.output_length > req.server.config.max_transact_size or r.output_length == 0:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if r.info_class not in fscc.DIR_INFO_CLASSES:
        raise SmbError(st.STATUS_INVALID_INFO_CLASS)
    fs = o.tree.share.fs
    first = o.dir_entries is None or r.flags & (q.RESTART_SCANS | q.REOPEN)
    if first:
        pattern = r.pattern or "*"
        if o.dir_pattern is not None and not r.flags & (q.REOPEN | q.RESTART_SCANS) and r.pattern:
            pattern = o.dir_pattern
        o.dir_pattern = pattern
        entries = fs.listdir(o.host_path)
        if not (WILDCARDS & set(pattern)):
            entries = [e for e in entries if e.name.casefold() == pattern.casefold()]
        elif pattern != "*":
            entries = [e for e in entries if wildcard_match(pattern, e.name)]
        o.dir_entries = entries
        o.dir_pos = 0
    remaining = _next_entries(o, r, first)
    if not remaining:
        raise SmbError(st.STATUS_NO_SUCH_FILE if first else st.STATUS_NO_MORE_FILES)
    if r.flags & q.RETURN_SINGLE_ENTRY:
        remaining = remaining[:1]
    data, count = fscc.encode_dir_entries(r.info_class, remaining, r.output_length)
    if count == 0:
        raise SmbError(st.STATUS_INFO_LENGTH_MISMATCH)
    o.dir_pos += count
    return Reply(q.pack_output_buffer(data))


_SHORT_NAME_CLASSES = {fscc.FileBothDirectoryInformation, fscc.FileIdBothDirectoryInformation,
                       fscc.FileIdExtdBothDirectoryInformation}


def _next_entries(o, r, first: bool) -> list:
    """The entries that can fill this response. Entries deleted since the enumeration
    began are skipped, as NTFS reads its live index (smb2.dir.fixed); 8.3 names are
    filled in for the classes that carry them."""
    n = r.output_length // fscc.dir_entry_fixed_size(r.info_class) + 1
    while True:
        window = o.dir_entries[o.dir_pos:o.dir_pos + n]
        if first or not window:
            break
        live = [e for e in window if e.name in (".", "..")
                or os.path.lexists(os.path.join(o.host_path, e.name))]
        if len(live) == len(window):
            break
        o.dir_entries[o.dir_pos:o.dir_pos + len(window)] = live
        if live:
            window = live
            break
    if r.info_class in _SHORT_NAME_CLASSES:
        for e in window:
            if not e.short_name and e.name not in (".", ".."):
                e.short_name = short_name(e.name)
    return window


# ---- QUERY_INFO
def _truncate(data: bytes, outlen: int, fixed: int | None, minimum: int | None) -> Reply:
    """MS-SMB2 3.3.5.20.1: too small for the fixed part -> INFO_LENGTH_MISMATCH; a variable
    class that does not fit -> truncated with BUFFER_OVERFLOW."""
    if minimum is not None and outlen < minimum:
        raise SmbError(st.STATUS_INFO_LENGTH_MISMATCH)
    if len(data) <= outlen:
        return Reply(q.pack_output_buffer(data))
    if fixed is not None:
        raise SmbError(st.STATUS_INFO_LENGTH_MISMATCH)
    return Reply(q.pack_output_buffer(data[:outlen]), st.STATUS_BUFFER_OVERFLOW)


def query_info(req) -> Reply:
    r = q.parse_query_info(req.msg)
    o = req.open(r.file_id)
    if r.output_length > req.server.config.max_transact_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if o.is_pipe:
        from .pipes import pipe_query_info
        return pipe_query_info(req, o, r)
    fs = o.tree.share.fs
    if r.info_type == q.INFO_FILE:
        if r.info_class in NEEDS_READ_ATTRIBUTES and not o.access & cr.FILE_READ_ATTRIBUTES:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        if r.info_class == fscc.FileNormalizedNameInformation and req.conn.dialect < 0x0311:
            raise SmbError(st.STATUS_NOT_SUPPORTED)   # MS-SMB2 3.3.5.20.1: SMB 3.1.1 only
        if r.info_class == fscc.FileFullEaInformation:
            from .eas import query_eas
            return query_eas(o, r)
        info = _stat(o)
        if r.info_class == fscc.FileStreamInformation:
            return _truncate(_stream_info(o, info), r.output_length, None, fscc.min_size(r.info_class))
        if r.info_class == fscc.FileAlternateNameInformation:
            # the 8.3 alias (smbnd.vfs_short); a valid 8.3 name is its own alias
            data = fscc.encode_alternate_name(info, short_name(info.name) or info.name.upper())
            return _truncate(data, r.output_length, None, fscc.min_size(r.info_class))
        state = req.server.files.get(o.file_key)
        name = "\\" + o.name if o.name else "\\"
        try:
            data = fscc.encode_file_info(r.info_class, info, name=name, access_mask=o.access,
                                         position=o.position, mode=o.mode,
                                         delete_pending=bool(state and state.delete_pending),
                                         volume_serial=_volume_serial(o.tree.share),
                                         normalized_name=_normalized_name(o))
        except fscc.FsccError as e:
            raise SmbError(e.status) from None
        return _truncate(data, r.output_length, fscc.fixed_size(r.info_class), fscc.min_size(r.info_class))
    if r.info_type == q.INFO_FILESYSTEM:
        data = _fs_info(o, r.info_class)
        return _truncate(data, r.output_length, fscc.fs_fixed_size(r.info_class), fscc.fs_min_size(r.info_class))
    if r.info_type == q.INFO_SECURITY:
        from .acl import query_security
        return Reply(q.pack_output_buffer(query_security(req, o, r.additional_info, r.output_length)))
    if r.info_type == q.INFO_QUOTA:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    raise SmbError(st.STATUS_INVALID_PARAMETER)


def _stat(o):
    if o.stream:
        from .create_ext import open_info
        return open_info(o.tree.share.fs, o.host_path, o.fd, o.stream)
    return o.tree.share.fs.stat(o.host_path)


def _normalized_name(o) -> str:
    """FileNormalizedNameInformation (MS-FSCC 2.4.28): the path as stored (on-disk case, no
    leading separator, "" for the root), a named stream with its name as created."""
    fs = o.tree.share.fs
    name = fs.to_smb_path(o.host_path)
    if o.stream:
        name += ":" + fs.streams.display_name(o.host_path, o.stream)
    return name


def _stream_info(o, info) -> bytes:
    """FileStreamInformation (MS-FSCC 2.4.49): the unnamed data stream of a file, then
    its named streams (directories have only named ones)."""
    from ..wire.fscc_ea import encode_stream_list
    fs = o.tree.share.fs
    base = info if not o.stream else fs.stat(o.host_path)
    out = [] if base.is_directory else [("::$DATA", base.end_of_file, base.allocation_size)]
    for name, sres in fs.streams.list(o.host_path):
        out.append((f":{name}:$DATA", sres.st_size,
                    max(sres.st_blocks * 512, (sres.st_size + 4095) & ~4095)))
    return encode_stream_list(out)


def _fs_info(o, cls: int) -> bytes:
    fs = o.tree.share.fs
    total, free, spu, bps = fs.statvfs()
    share = o.tree.share
    if cls == fscc.FileFsVolumeInformation:
        return fscc.encode_fs_volume(fs.stat(fs.root).creation_time, _volume_serial(share), share.name)
    if cls == fscc.FileFsSizeInformation:
        return fscc.encode_fs_size(total, free, spu, bps)
    if cls == fscc.FileFsFullSizeInformation:
        return fscc.encode_fs_full_size(total, free, free, spu, bps)
    if cls == fscc.FileFsDeviceInformation:
        return fscc.encode_fs_device()
    if cls == fscc.FileFsAttributeInformation:
        attrs = fscc.DEFAULT_FS_ATTRIBUTES | fscc.FILE_NAMED_STREAMS   # smbnd.vfs_streams
        if fs.meta.eas_supported:
            attrs |= fscc.FILE_SUPPORTS_EXTENDED_ATTRIBUTES
        return fscc.encode_fs_attribute(attrs)
    if cls == fscc.FileFsObjectIdInformation:
        return fscc.encode_fs_object_id(struct.pack("<I", _volume_serial(share)).ljust(16, b"\0"))
    if cls == fscc.FileFsSectorSizeInformation:
        return fscc.encode_fs_sector_size(bps)
    if cls == fscc.FileFsControlInformation:
        # MS-FSCC 2.5.2: quotas not enforced; default threshold/limit "no limit"
        return struct.pack("<QQQqqII", 0, 0, 0, -1, -1, 0, 0)
    raise SmbError(st.STATUS_INVALID_INFO_CLASS)


# ---- SET_INFO
def set_info(req) -> Reply:
    r = q.parse_set_info(req.msg)
    o = req.open(r.file_id)
    if len(r.buffer) > req.server.config.max_transact_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if o.is_pipe:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if o.tree.share.config.read_only and r.info_type in (q.INFO_FILE, q.INFO_SECURITY) \
            and r.info_class not in (fscc.FilePositionInformation, fscc.FileModeInformation):
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if r.info_type == q.INFO_FILE:
        if r.info_class == fscc.FileFullEaInformation:
            from .eas import set_eas
            set_eas(req, o, r.buffer)
            return Reply(q.SET_INFO_RESPONSE)
        try:
            value = fscc.decode_set_info(r.info_class, r.buffer)
        except fscc.FsccError as e:
            raise SmbError(e.status) from None
        parked = None
        if r.info_class in (fscc.FileRenameInformation, fscc.FileRenameInformationEx):
            # MS-FSA 2.1.5.14.11: other opens give up handle caching first (may go async)
            parked = req.server.oplocks.rename_wait(req, o, set_info)
        elif r.info_class in (fscc.FileDispositionInformation, fscc.FileDispositionInformationEx) \
                and value.delete_pending and o.access & cr.DELETE:
            parked = req.server.oplocks.handle_caching_wait(req, o, set_info)   # MS-FSA 2.1.5.14.3
        if parked is not None:
            return parked
        from .setinfo import apply_file_info
        apply_file_info(req, o, r.info_class, value)
        return Reply(q.SET_INFO_RESPONSE)
    if r.info_type == q.INFO_SECURITY:
        from .acl import set_security
        set_security(req, o, r.additional_info, r.buffer)
        req.server.notify.report(o.host_path, "security", o.is_directory)
        return Reply(q.SET_INFO_RESPONSE)
    if r.info_type == q.INFO_FILESYSTEM:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if r.info_type == q.INFO_QUOTA:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    raise SmbError(st.STATUS_INVALID_PARAMETER)


