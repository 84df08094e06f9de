"""Security descriptors (MS-DTYP 2.4): SIDs, ACEs, ACLs, self-relative SDs.

Errors:
* ``InvalidSid`` (ValueError)                -> STATUS_INVALID_SID (bad SID string/bytes)
* ``InvalidSecurityDescriptor`` (ValueError) -> STATUS_INVALID_SECURITY_DESCR
  (anything malformed in a SET_INFO security buffer, including bad SIDs in it)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from smbnd import status as _st

# SECURITY_INFORMATION / AdditionalInformation bits (MS-SMB2 2.2.37, MS-DTYP 2.4.7)
OWNER_SECURITY_INFORMATION = 0x00000001
GROUP_SECURITY_INFORMATION = 0x00000002
DACL_SECURITY_INFORMATION = 0x00000004
SACL_SECURITY_INFORMATION = 0x00000008
LABEL_SECURITY_INFORMATION = 0x00000010
ATTRIBUTE_SECURITY_INFORMATION = 0x00000020
SCOPE_SECURITY_INFORMATION = 0x00000040
BACKUP_SECURITY_INFORMATION = 0x00010000

# SECURITY_DESCRIPTOR Control (MS-DTYP 2.4.6)
SE_OWNER_DEFAULTED = 0x0001
SE_GROUP_DEFAULTED = 0x0002
SE_DACL_PRESENT = 0x0004
SE_DACL_DEFAULTED = 0x0008
SE_SACL_PRESENT = 0x0010
SE_SACL_DEFAULTED = 0x0020
SE_DACL_TRUSTED = 0x0040
SE_SERVER_SECURITY = 0x0080
SE_DACL_AUTO_INHERIT_REQ = 0x0100
SE_SACL_AUTO_INHERIT_REQ = 0x0200
SE_DACL_AUTO_INHERITED = 0x0400
SE_SACL_AUTO_INHERITED = 0x0800
SE_DACL_PROTECTED = 0x1000
SE_SACL_PROTECTED = 0x2000
SE_RM_CONTROL_VALID = 0x4000
SE_SELF_RELATIVE = 0x8000

# ACE types (MS-DTYP 2.4.4.1)
ACCESS_ALLOWED_ACE_TYPE = 0x00
ACCESS_DENIED_ACE_TYPE = 0x01
SYSTEM_AUDIT_ACE_TYPE = 0x02
SYSTEM_ALARM_ACE_TYPE = 0x03
ACCESS_ALLOWED_CALLBACK_ACE_TYPE = 0x09
ACCESS_DENIED_CALLBACK_ACE_TYPE = 0x0A
SYSTEM_AUDIT_CALLBACK_ACE_TYPE = 0x0D
SYSTEM_MANDATORY_LABEL_ACE_TYPE = 0x11
SYSTEM_RESOURCE_ATTRIBUTE_ACE_TYPE = 0x12
SYSTEM_SCOPED_POLICY_ID_ACE_TYPE = 0x13
# Types whose body is Mask(4) + SID [+ application data]; others are kept raw.
_MASK_SID_TYPES = frozenset({0x00, 0x01, 0x02, 0x03, 0x09, 0x0A, 0x0D, 0x0E, 0x11, 0x12, 0x13})

# ACE flags (MS-DTYP 2.4.4.1)
OBJECT_INHERIT_ACE = 0x01
CONTAINER_INHERIT_ACE = 0x02
NO_PROPAGATE_INHERIT_ACE = 0x04
INHERIT_ONLY_ACE = 0x08
INHERITED_ACE = 0x10
SUCCESSFUL_ACCESS_ACE_FLAG = 0x40
FAILED_ACCESS_ACE_FLAG = 0x80

# Access masks (MS-DTYP 2.4.3, MS-SMB2 2.2.13.1)
FILE_ALL_ACCESS = 0x001F01FF
FILE_GENERIC_READ = 0x00120089
FILE_GENERIC_WRITE = 0x00120116
FILE_GENERIC_EXECUTE = 0x001200A0
FILE_READ_EXECUTE = FILE_GENERIC_READ | FILE_GENERIC_EXECUTE  # 0x001200A9

ACL_REVISION = 2
ACL_REVISION_DS = 4
SECURITY_DESCRIPTOR_REVISION = 1

SID_EVERYONE = "S-1-1-0"
SID_CREATOR_OWNER = "S-1-3-0"
SID_LOCAL_SYSTEM = "S-1-5-18"
SID_BUILTIN_ADMINISTRATORS = "S-1-5-32-544"
SID_BUILTIN_USERS = "S-1-5-32-545"
SID_AUTHENTICATED_USERS = "S-1-5-11"
# Fixed machine domain for emulated local accounts: S-1-5-21-<a>-<b>-<c>-<rid>
DOMAIN_SID = "S-1-5-21-2447931902-1787058256-3961074038"


def domain_user_sid(rid: int) -> str:
    return f"{DOMAIN_SID}-{rid}"


class InvalidSid(ValueError):
    status = _st.STATUS_INVALID_SID


class InvalidSecurityDescriptor(ValueError):
    status = _st.STATUS_INVALID_SECURITY_DESCR


# ---------------------------------------------------------------------------
# SIDs (MS-DTYP 2.4.2)
# ---------------------------------------------------------------------------
MAX_SUB_AUTHORITIES = 15


def sid_to_bytes(sid: str) -> bytes:
    """"S-1-5-21-1-2-3-1000" -> binary SID (MS-DTYP 2.4.2.2)."""
    parts = sid.split("-")
    if len(parts) < 3 or parts[0].upper() != "S" or parts[1] != "1":
        raise InvalidSid(f"bad SID string {sid!r}")
    try:
        ia_s = parts[2]
        ia = int(ia_s, 16) if ia_s.lower().startswith("0x") else int(ia_s, 10)
        subs = [int(p, 10) for p in parts[3:]]
    except ValueError:
        raise InvalidSid(f"bad SID string {sid!r}") from None
    if not 0 <= ia < 1 << 48 or len(subs) > MAX_SUB_AUTHORITIES \
            or any(not 0 <= s < 1 << 32 for s in subs):
        raise InvalidSid(f"SID out of range {sid!r}")
    return (struct.pack("<BB", 1, len(subs)) + ia.to_bytes(6, "big")
            + struct.pack(f"<{len(subs)}I", *subs))


def sid_from_bytes(buf: bytes, offset: int = 0) -> tuple[str, int]:
    """Parse a binary SID at ``offset``; returns (string, length in bytes)."""
    if offset < 0 or len(buf) < offset + 8:
        raise InvalidSid("SID truncated")
    rev, n = buf[offset], buf[offset + 1]
    if rev != 1 or n > MAX_SUB_AUTHORITIES:
        raise InvalidSid(f"bad SID revision {rev} / count {n}")
    end = offset + 8 + 4 * n
    if len(buf) < end:
        raise InvalidSid("SID truncated")
    ia = int.from_bytes(buf[offset + 2:offset + 8], "big")
    subs = struct.unpack_from(f"<{n}I", buf, offset + 8)
    ia_s = str(ia) if ia < 1 << 32 else f"0x{ia:012X}"  # MS-DTYP 2.4.2.1
    return "-".join(["S-1", ia_s] + [str(s) for s in subs]), end - offset


def sid_len(sid: str) -> int:
    return 8 + 4 * (len(sid.split("-")) - 3)


# ---------------------------------------------------------------------------
# ACE / ACL / SD model
# ---------------------------------------------------------------------------
@dataclass
class Ace:
    type: int
    flags: int
    mask: int = 0
    sid: str | None = None
    extra: bytes = b""   # callback application data, or the raw body of other ACE types

    def to_bytes(self) -> bytes:
        if self.type in _MASK_SID_TYPES and self.sid is not None:
            body = struct.pack("<I", self.mask & 0xFFFFFFFF) + sid_to_bytes(self.sid) + self.extra
        else:
            body = self.extra
        size = 4 + len(body)
        pad = (-size) & 3
        size += pad
        if size > 0xFFFF:
            raise InvalidSecurityDescriptor("ACE too large")
        return struct.pack("<BBH", self.type, self.flags, size) + body + b"\0" * pad


@dataclass
class Acl:
    aces: list[Ace] = field(default_factory=list)
    revision: int = ACL_REVISION

    def to_bytes(self) -> bytes:
        body = b"".join(a.to_bytes() for a in self.aces)
        size = 8 + len(body)
        if size > 0xFFFF:
            raise InvalidSecurityDescriptor("ACL too large")
        return struct.pack("<BBHHH", self.revision, 0, size, len(self.aces), 0) + body


@dataclass
class SecurityDescriptor:
    owner: str | None = None
    group: str | None = None
    sacl: Acl | None = None
    dacl: Acl | None = None
    control: int = SE_SELF_RELATIVE

    def to_bytes(self) -> bytes:
        return encode_sd(self)


def encode_sd(sd: SecurityDescriptor) -> bytes:
    """Self-relative SECURITY_DESCRIPTOR (MS-DTYP 2.4.6); order owner, group, SACL, DACL.

    SE_DACL_PRESENT/SE_SACL_PRESENT are set when the ACL object is present; a
    present flag already in ``control`` with ``dacl=None`` encodes a NULL DACL.
    """
    control = sd.control | SE_SELF_RELATIVE
    if sd.dacl is not None:
        control |= SE_DACL_PRESENT
    if sd.sacl is not None:
        control |= SE_SACL_PRESENT
    out = bytearray(20)
    offs = [0, 0, 0, 0]
    for i, blob in enumerate((
            sid_to_bytes(sd.owner) if sd.owner else None,
            sid_to_bytes(sd.group) if sd.group else None,
            sd.sacl.to_bytes() if sd.sacl is not None else None,
            sd.dacl.to_bytes() if sd.dacl is not None else None)):
        if blob is not None:
            offs[i] = len(out)
            out += blob
    struct.pack_into("<BBHIIII", out, 0, SECURITY_DESCRIPTOR_REVISION, 0, control, *offs)
    return bytes(out)


def _parse_acl(buf: bytes, off: int) -> Acl:
    if off < 20 or off + 8 > len(buf):
        raise InvalidSecurityDescriptor("ACL offset out of range")
    rev, _sbz1, size, count, _sbz2 = struct.unpack_from("<BBHHH", buf, off)
    if rev not in (ACL_REVISION, ACL_REVISION_DS):
        raise InvalidSecurityDescriptor(f"bad ACL revision {rev}")
    if size < 8 or off + size > len(buf):
        raise InvalidSecurityDescriptor("bad AclSize")
    end = off + size
    p = off + 8
    aces = []
    for _ in range(count):
        if p + 4 > end:
            raise InvalidSecurityDescriptor("ACE header beyond ACL")
        atype, aflags, asize = struct.unpack_from("<BBH", buf, p)
        if asize < 4 or p + asize > end:
            raise InvalidSecurityDescriptor("bad AceSize")
        body = bytes(buf[p + 4:p + asize])
        if atype in _MASK_SID_TYPES:
            if len(body) < 4 + 8:
                raise InvalidSecurityDescriptor("ACE too short for mask+SID")
            (mask,) = struct.unpack_from("<I", body, 0)
            try:
                sid, slen = sid_from_bytes(body, 4)
            except InvalidSid as e:
                raise InvalidSecurityDescriptor(str(e)) from None
            extra = body[4 + slen:]
            if atype not in (0x09, 0x0A, 0x0D, 0x0E, 0x12):  # no application data
                extra = b"" if not extra.strip(b"\0") else extra
            aces.append(Ace(atype, aflags, mask, sid, extra))
        else:
            aces.append(Ace(atype, aflags, 0, None, body))
        p += asize
    return Acl(aces, rev)


def decode_sd(buf: bytes) -> SecurityDescriptor:
    """Parse and validate a self-relative SD; any defect -> InvalidSecurityDescriptor."""
    buf = bytes(buf)
    if len(buf) < 20:
        raise InvalidSecurityDescriptor("SD shorter than header")
    rev, _sbz1, control, o_owner, o_group, o_sacl, o_dacl = struct.unpack_from("<BBHIIII", buf, 0)
    if rev != SECURITY_DESCRIPTOR_REVISION:
        raise InvalidSecurityDescriptor(f"bad SD revision {rev}")
    if not control & SE_SELF_RELATIVE:
        raise InvalidSecurityDescriptor("SD not self-relative")

    def sid_at(off: int) -> str | None:
        if off == 0:
            return None
        if off < 20:
            raise InvalidSecurityDescriptor("SID offset inside header")
        try:
            return sid_from_bytes(buf, off)[0]
        except InvalidSid as e:
            raise InvalidSecurityDescriptor(str(e)) from None

    owner = sid_at(o_owner)
    group = sid_at(o_group)
    sacl = _parse_acl(buf, o_sacl) if control & SE_SACL_PRESENT and o_sacl else None
    dacl = _parse_acl(buf, o_dacl) if control & SE_DACL_PRESENT and o_dacl else None
    return SecurityDescriptor(owner, group, sacl, dacl, control)


def select_sd(sd: SecurityDescriptor, additional_info: int) -> SecurityDescriptor:
    """Keep only the parts requested by AdditionalInformation (QUERY_INFO security)."""
    ctl = sd.control & ~(SE_DACL_PRESENT | SE_SACL_PRESENT | SE_OWNER_DEFAULTED
                         | SE_GROUP_DEFAULTED | SE_DACL_DEFAULTED | SE_SACL_DEFAULTED
                         | SE_DACL_AUTO_INHERITED | SE_DACL_PROTECTED
                         | SE_SACL_AUTO_INHERITED | SE_SACL_PROTECTED)
    out = SecurityDescriptor(control=ctl | SE_SELF_RELATIVE)
    if additional_info & OWNER_SECURITY_INFORMATION:
        out.owner = sd.owner
        out.control |= sd.control & SE_OWNER_DEFAULTED
    if additional_info & GROUP_SECURITY_INFORMATION:
        out.group = sd.group
        out.control |= sd.control & SE_GROUP_DEFAULTED
    if additional_info & DACL_SECURITY_INFORMATION:
        out.dacl = sd.dacl
        out.control |= sd.control & (SE_DACL_PRESENT | SE_DACL_DEFAULTED
                                     | SE_DACL_AUTO_INHERITED | SE_DACL_PROTECTED)
    if additional_info & SACL_SECURITY_INFORMATION:
        out.sacl = sd.sacl
        out.control |= sd.control & (SE_SACL_PRESENT | SE_SACL_DEFAULTED
                                     | SE_SACL_AUTO_INHERITED | SE_SACL_PROTECTED)
    return out


def merge_sd(current: SecurityDescriptor, new: SecurityDescriptor,
             additional_info: int) -> SecurityDescriptor:
    """SET_INFO security: replace the parts named by AdditionalInformation."""
    out = SecurityDescriptor(current.owner, current.group, current.sacl, current.dacl,
                             current.control | SE_SELF_RELATIVE)
    if additional_info & OWNER_SECURITY_INFORMATION and new.owner is not None:
        out.owner = new.owner
    if additional_info & GROUP_SECURITY_INFORMATION and new.group is not None:
        out.group = new.group
    dacl_bits = SE_DACL_PRESENT | SE_DACL_DEFAULTED | SE_DACL_AUTO_INHERITED | SE_DACL_PROTECTED
    sacl_bits = SE_SACL_PRESENT | SE_SACL_DEFAULTED | SE_SACL_AUTO_INHERITED | SE_SACL_PROTECTED
    if additional_info & DACL_SECURITY_INFORMATION:
        out.dacl = new.dacl
        out.control = (out.control & ~dacl_bits) | (new.control & dacl_bits)
    if additional_info & SACL_SECURITY_INFORMATION:
        out.sacl = new.sacl
        out.control = (out.control & ~sacl_bits) | (new.control & sacl_bits)
    return out


def default_sd_object(owner_sid: str, group_sid: str, is_directory: bool) -> SecurityDescriptor:
    """Owner FILE_ALL_ACCESS + Everyone read/execute; directories add OI|CI inheritance."""
    inh = (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE) if is_directory else 0
    dacl = Acl([
        Ace(ACCESS_ALLOWED_ACE_TYPE, inh, FILE_ALL_ACCESS, owner_sid),
        Ace(ACCESS_ALLOWED_ACE_TYPE, inh, FILE_READ_EXECUTE, SID_EVERYONE),
    ])
    return SecurityDescriptor(owner_sid, group_sid, None, dacl, SE_SELF_RELATIVE | SE_DACL_PRESENT)


def default_sd(owner_sid: str, group_sid: str, is_directory: bool,
               additional_info: int = OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION
               | DACL_SECURITY_INFORMATION) -> bytes:
    """Self-relative SD for QUERY_INFO(SMB2_0_INFO_SECURITY), filtered by AdditionalInformation.

    A SACL request is answered without a SACL (no SE_SACL_PRESENT).
    """
    sd = select_sd(default_sd_object(owner_sid, group_sid, is_directory),
                   additional_info & ~SACL_SECURITY_INFORMATION)
    return encode_sd(sd)
