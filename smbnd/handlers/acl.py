"""File security: stored security descriptors, access checks, inheritance.

* Every object has an effective SD: the one stored by ``fs.meta`` (SecD create
  context, SET_INFO security, or inherited from a parent with inheritable
  ACEs), else the default (owner FILE_ALL_ACCESS, Everyone read/execute).
* Opening an existing object checks the desired access against its DACL
  (MS-DTYP 2.5.3.2 AccessCheck, simplified: no privileges, no SACL, no
  conditional ACEs). The owner is implicitly granted READ_CONTROL|WRITE_DAC
  unless an OWNER RIGHTS ACE is present; a NULL DACL grants everything.
* New objects get the SecD SD, completed with the creator's owner/group and,
  when it carries no DACL, the DACL inherited from the parent (MS-DTYP 2.5.3.4,
  simplified), else the default DACL.
"""
from __future__ import annotations

import struct

from .. import status as st
from ..errors import SmbError
from ..wire import create as cr
from ..wire import security as sec

SID_OWNER_RIGHTS = "S-1-3-4"
SID_CREATOR_GROUP = "S-1-3-1"
SID_ANONYMOUS = "S-1-5-7"
SID_GUESTS = "S-1-5-32-546"
FULL_ACCESS = cr.FILE_ALL_ACCESS          # everything a file open can be granted
_GENERIC = ((cr.GENERIC_READ, cr.FILE_GENERIC_READ), (cr.GENERIC_WRITE, cr.FILE_GENERIC_WRITE),
            (cr.GENERIC_EXECUTE, cr.FILE_GENERIC_EXECUTE), (cr.GENERIC_ALL, cr.FILE_ALL_ACCESS))


def map_generic_mask(mask: int) -> int:
    """MS-DTYP 2.4.3 generic rights -> file-specific rights (file GENERIC_MAPPING)."""
    for g, specific in _GENERIC:
        if mask & g:
            mask = (mask & ~g) | specific
    return mask


def owner_sid(server) -> str:
    return f"S-1-5-21-{server.domain_sid_tail}-1000"


def group_sid(server) -> str:
    return f"S-1-5-21-{server.domain_sid_tail}-513"


def token_sids(session, server) -> frozenset[str]:
    """The SIDs of the user's token (every account maps to one local user)."""
    if session is None or session.is_anonymous:
        return frozenset({sec.SID_EVERYONE, SID_ANONYMOUS})
    if session.is_guest:
        return frozenset({f"S-1-5-21-{server.domain_sid_tail}-501", sec.SID_EVERYONE, SID_GUESTS})
    return frozenset({owner_sid(server), group_sid(server), sec.SID_EVERYONE,
                      sec.SID_AUTHENTICATED_USERS, sec.SID_BUILTIN_USERS})


def _load(fs, path: str) -> sec.SecurityDescriptor | None:
    blob = fs.meta.get_sd(path)
    if blob is None:
        return None
    try:
        return sec.decode_sd(blob)
    except (sec.InvalidSecurityDescriptor, sec.InvalidSid):
        return None


def stored_sd(fs, path: str) -> sec.SecurityDescriptor | None:
    """The object's own SD, None when it has the default one."""
    return _load(fs, path)


def effective_sd(server, fs, path: str, is_dir: bool) -> sec.SecurityDescriptor:
    sd = _load(fs, path)
    if sd is None:
        sd = sec.default_sd_object(owner_sid(server), group_sid(server), is_dir)
    return sd


def maximal_access(sd: sec.SecurityDescriptor, token: frozenset[str]) -> int:
    """MS-DTYP 2.5.3.2 with MAXIMUM_ALLOWED: the rights the DACL grants the token."""
    if sd.dacl is None:   # NULL DACL (or none at all): no protection
        return FULL_ACCESS
    granted = denied = 0
    is_owner = sd.owner in token
    owner_rights = any(a.sid == SID_OWNER_RIGHTS for a in sd.dacl.aces)
    if is_owner and not owner_rights:
        granted |= cr.READ_CONTROL | cr.WRITE_DAC
    for a in sd.dacl.aces:
        if a.flags & sec.INHERIT_ONLY_ACE:
            continue
        if a.sid not in token and not (is_owner and a.sid == SID_OWNER_RIGHTS):
            continue
        mask = map_generic_mask(a.mask)
        if a.type == sec.ACCESS_ALLOWED_ACE_TYPE:
            granted |= mask & ~denied
        elif a.type == sec.ACCESS_DENIED_ACE_TYPE:
            denied |= mask & ~granted
    return granted & FULL_ACCESS


def check_access(sd: sec.SecurityDescriptor, token: frozenset[str], desired: int) -> int:
    """Granted access for ``desired`` (already generic-mapped; MAXIMUM_ALLOWED bit
    honoured) or SmbError(ACCESS_DENIED)."""
    want_max = bool(desired & cr.MAXIMUM_ALLOWED)
    desired &= ~cr.MAXIMUM_ALLOWED
    allowed = maximal_access(sd, token)
    if desired & ~allowed:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    return (desired | allowed) if want_max else desired


def inherited_dacl(parent: sec.SecurityDescriptor, is_dir: bool, owner: str, group: str) -> sec.Acl | None:
    """MS-DTYP 2.5.3.4.2 (simplified): ACEs a new child inherits, or None if none do."""
    if parent.dacl is None:
        return None
    out: list[sec.Ace] = []
    for a in parent.dacl.aces:
        if a.sid is None or a.type not in (sec.ACCESS_ALLOWED_ACE_TYPE, sec.ACCESS_DENIED_ACE_TYPE):
            continue
        oi, ci = a.flags & sec.OBJECT_INHERIT_ACE, a.flags & sec.CONTAINER_INHERIT_ACE
        if not (ci if is_dir else oi) and not (is_dir and oi):
            continue
        sid = {sec.SID_CREATOR_OWNER: owner, SID_CREATOR_GROUP: group}.get(a.sid, a.sid)
        mask = map_generic_mask(a.mask)
        if not is_dir or a.flags & sec.NO_PROPAGATE_INHERIT_ACE:
            out.append(sec.Ace(a.type, sec.INHERITED_ACE, mask, sid))
            continue
        if ci:   # directories keep propagating the ACE to their own children
            flags = (a.flags & (sec.OBJECT_INHERIT_ACE | sec.CONTAINER_INHERIT_ACE)) | sec.INHERITED_ACE
            out.append(sec.Ace(a.type, flags, mask, sid))
        else:    # object-inherit only: applies to files below, not to this directory
            out.append(sec.Ace(a.type, sec.OBJECT_INHERIT_ACE | sec.INHERIT_ONLY_ACE | sec.INHERITED_ACE,
                               mask, sid))
    return sec.Acl(out) if out else None


def parse_sd_context(r) -> sec.SecurityDescriptor | None:
    """SMB2_CREATE_SD_BUFFER (MS-SMB2 2.2.13.2.2)."""
    blob = r.contexts.get(cr.CTX_SD_BUFFER)
    if blob is None:
        return None
    try:
        return sec.decode_sd(blob)
    except (sec.InvalidSecurityDescriptor, sec.InvalidSid):
        raise SmbError(st.STATUS_INVALID_SECURITY_DESCR) from None


def new_object_sd(server, fs, parent_path: str, is_dir: bool,
                  given: sec.SecurityDescriptor | None) -> sec.SecurityDescriptor | None:
    """SD to store for a new object, or None when the default applies (nothing to store)."""
    parent = _load(fs, parent_path)
    if given is None and parent is None:
        return None
    owner, group = owner_sid(server), group_sid(server)
    if given is not None:
        out = sec.SecurityDescriptor(given.owner or owner, given.group or group, None, given.dacl,
                                     given.control | sec.SE_SELF_RELATIVE)
        if given.control & sec.SE_DACL_PRESENT:
            return out
    else:
        out = sec.SecurityDescriptor(owner, group, None, None, sec.SE_SELF_RELATIVE)
    dacl = inherited_dacl(parent, is_dir, out.owner, out.group) if parent is not None else None
    if dacl is None:
        if given is None:
            return None
        dacl = sec.default_sd_object(owner, group, is_dir).dacl
    else:
        out.control |= sec.SE_DACL_AUTO_INHERITED
    out.dacl = dacl
    out.control |= sec.SE_DACL_PRESENT
    return out


def query_security(req, o, additional_info: int, output_length: int) -> bytes:
    """QUERY_INFO SMB2_0_INFO_SECURITY (MS-SMB2 3.3.5.20.3)."""
    if not o.access & cr.READ_CONTROL:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    fs = o.tree.share.fs
    sd = effective_sd(req.server, fs, o.host_path, o.is_directory and not o.stream)
    data = sec.encode_sd(sec.select_sd(sd, additional_info & ~sec.SACL_SECURITY_INFORMATION))
    if len(data) > output_length:
        raise SmbError(st.STATUS_BUFFER_TOO_SMALL, struct.pack("<I", len(data)))
    return data


def set_security(req, o, additional_info: int, buf: bytes) -> None:
    """SET_INFO SMB2_0_INFO_SECURITY (MS-SMB2 3.3.5.21.3): merge and store."""
    if additional_info & (sec.OWNER_SECURITY_INFORMATION | sec.GROUP_SECURITY_INFORMATION
                          | sec.LABEL_SECURITY_INFORMATION) and not o.access & cr.WRITE_OWNER:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if additional_info & (sec.DACL_SECURITY_INFORMATION | sec.ATTRIBUTE_SECURITY_INFORMATION) \
            and not o.access & cr.WRITE_DAC:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    if additional_info & sec.SACL_SECURITY_INFORMATION and not o.access & cr.ACCESS_SYSTEM_SECURITY:
        raise SmbError(st.STATUS_ACCESS_DENIED)
    try:
        new = sec.decode_sd(buf)
    except (sec.InvalidSecurityDescriptor, sec.InvalidSid):
        raise SmbError(st.STATUS_INVALID_SECURITY_DESCR) from None
    fs = o.tree.share.fs
    cur = effective_sd(req.server, fs, o.host_path, o.is_directory and not o.stream)
    info = additional_info & (sec.OWNER_SECURITY_INFORMATION | sec.GROUP_SECURITY_INFORMATION
                              | sec.DACL_SECURITY_INFORMATION)
    merged = sec.merge_sd(cur, new, info)
    if info & sec.DACL_SECURITY_INFORMATION:
        # an SD without a DACL sets a NULL DACL (grants everyone everything)
        merged.control |= sec.SE_DACL_PRESENT
    status = fs.meta.set_sd(o.host_path, sec.encode_sd(merged))
    if status != st.STATUS_SUCCESS:
        raise SmbError(status)
