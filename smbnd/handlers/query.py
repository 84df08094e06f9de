"""QUERY_DIRECTORY (MS-SMB2 3.3.5.18), QUERY_INFO (3.3.5.20), SET_INFO (3.3.5.21)."""
from __future__ import annotations

import struct
import zlib

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..vfs import wildcard_match
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
    remaining = o.dir_entries[o.dir_pos:]
    if not remaining:
        raise SmbError(st.STATUS_NO_SUCH_FILE if first else st.STATUS_NO_MORE_FILES)
    if r.flags & q.RETURN_SINGLE_ENTRY:
        remaining = remaining[:1]
    data, count = fscc.encode_dir_entries(r.info_class, remaining, r.output_length)
    if count == 0:
        raise SmbError(st.STATUS_INFO_LENGTH_MISMATCH)
    o.dir_pos += count
    return Reply(q.pack_output_buffer(data))


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
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    fs = o.tree.share.fs
    if r.info_type == q.INFO_FILE:
        if r.info_class in NEEDS_READ_ATTRIBUTES and not o.access & cr.FILE_READ_ATTRIBUTES:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        if r.info_class == fscc.FileFullEaInformation:
            if not o.access & cr.FILE_READ_EA:
                raise SmbError(st.STATUS_ACCESS_DENIED)
            return Reply(q.pack_output_buffer(b""))   # no EAs stored: an empty list (as Samba)
        info = _stat(o)
        if r.info_class == fscc.FileAlternateNameInformation:
            # no 8.3 names on this server: the long name is the only name
            data = fscc.encode_alternate_name(info, info.name.upper() if len(info.name) <= 12 else "")
            return _truncate(data, r.output_length, None, fscc.min_size(r.info_class))
        state = req.server.files.get(o.file_key)
        name = "\\" + o.name if o.name else "\\"
        try:
            data = fscc.encode_file_info(r.info_class, info, name=name, access_mask=o.access,
                                         position=o.position, mode=o.mode,
                                         delete_pending=bool(state and state.delete_pending),
                                         volume_serial=_volume_serial(o.tree.share),
                                         normalized_name=o.name)
        except fscc.FsccError as e:
            raise SmbError(e.status) from None
        return _truncate(data, r.output_length, fscc.fixed_size(r.info_class), fscc.min_size(r.info_class))
    if r.info_type == q.INFO_FILESYSTEM:
        data = _fs_info(o, r.info_class)
        return _truncate(data, r.output_length, fscc.fs_fixed_size(r.info_class), fscc.fs_min_size(r.info_class))
    if r.info_type == q.INFO_SECURITY:
        from ..wire import security as sec
        if not o.access & cr.READ_CONTROL:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        data = sec.default_sd(_owner_sid(req), _group_sid(req), o.is_directory, r.additional_info)
        if len(data) > r.output_length:
            raise SmbError(st.STATUS_BUFFER_TOO_SMALL, struct.pack("<I", len(data)))
        return Reply(q.pack_output_buffer(data))
    if r.info_type == q.INFO_QUOTA:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    raise SmbError(st.STATUS_INVALID_PARAMETER)


def _stat(o):
    return o.tree.share.fs.stat(o.host_path)


def _owner_sid(req) -> str:
    return f"S-1-5-21-{req.server.domain_sid_tail}-1000"


def _group_sid(req) -> str:
    return f"S-1-5-21-{req.server.domain_sid_tail}-513"


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
        return fscc.encode_fs_attribute()
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
            raise SmbError(st.STATUS_EAS_NOT_SUPPORTED)
        try:
            value = fscc.decode_set_info(r.info_class, r.buffer)
        except fscc.FsccError as e:
            raise SmbError(e.status) from None
        from .setinfo import apply_file_info
        apply_file_info(req, o, r.info_class, value)
        return Reply(q.SET_INFO_RESPONSE)
    if r.info_type == q.INFO_SECURITY:
        from ..wire import security as sec
        if r.additional_info & (sec.OWNER_SECURITY_INFORMATION | sec.GROUP_SECURITY_INFORMATION) \
                and not o.access & cr.WRITE_OWNER:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        if r.additional_info & sec.DACL_SECURITY_INFORMATION and not o.access & cr.WRITE_DAC:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        try:
            sec.decode_sd(r.buffer)
        except (sec.InvalidSecurityDescriptor, sec.InvalidSid):
            raise SmbError(st.STATUS_INVALID_SECURITY_DESCR) from None
        # accepted; ACLs are not stored: every query answers the share's consistent default
        return Reply(q.SET_INFO_RESPONSE)
    if r.info_type == q.INFO_FILESYSTEM:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if r.info_type == q.INFO_QUOTA:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    raise SmbError(st.STATUS_INVALID_PARAMETER)


