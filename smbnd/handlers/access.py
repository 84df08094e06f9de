"""Access masks and share-mode checks (MS-SMB2 2.2.13.1, MS-FSA 2.1.5.1.2)."""
from __future__ import annotations

from ..wire import create as cr

FILE_ATTRIBUTE_READONLY = 0x1
FILE_ATTRIBUTE_HIDDEN = 0x2
FILE_ATTRIBUTE_SYSTEM = 0x4
FILE_ATTRIBUTE_DIRECTORY = 0x10
FILE_ATTRIBUTE_ARCHIVE = 0x20
FILE_ATTRIBUTE_NORMAL = 0x80
FILE_ATTRIBUTE_TEMPORARY = 0x100

VALID_ACCESS_MASK = 0xF21F01FF
WRITE_LIKE = (cr.FILE_WRITE_DATA | cr.FILE_APPEND_DATA | cr.FILE_WRITE_EA | cr.FILE_WRITE_ATTRIBUTES |
              cr.DELETE | cr.WRITE_DAC | cr.WRITE_OWNER | cr.FILE_DELETE_CHILD)
READ_ONLY_MAX = cr.FILE_GENERIC_READ | cr.FILE_GENERIC_EXECUTE


def map_generic(access: int, read_only: bool = False) -> int:
    full = READ_ONLY_MAX if read_only else cr.FILE_ALL_ACCESS
    out = access & 0x01FFFFFF & ~cr.MAXIMUM_ALLOWED
    if access & cr.GENERIC_ALL:
        out |= full
    if access & cr.GENERIC_READ:
        out |= cr.FILE_GENERIC_READ
    if access & cr.GENERIC_WRITE:
        out |= cr.FILE_GENERIC_WRITE
    if access & cr.GENERIC_EXECUTE:
        out |= cr.FILE_GENERIC_EXECUTE
    if access & cr.MAXIMUM_ALLOWED:
        out |= full
    return out


def _uses(access: int):
    return (bool(access & (cr.FILE_READ_DATA | cr.FILE_EXECUTE)),
            bool(access & (cr.FILE_WRITE_DATA | cr.FILE_APPEND_DATA)),
            bool(access & cr.DELETE))


def sharing_conflict(opens, access: int, share_access: int) -> bool:
    """MS-FSA 2.1.5.1.2: True if the new open and any existing open exclude each other."""
    r, w, d = _uses(access)
    if not (r or w or d):
        return False
    for o in opens:
        orr, ow, od = _uses(o.access)
        if not (orr or ow or od):
            continue
        if (r and not o.share_access & cr.FILE_SHARE_READ) or (w and not o.share_access & cr.FILE_SHARE_WRITE) \
                or (d and not o.share_access & cr.FILE_SHARE_DELETE):
            return True
        if (orr and not share_access & cr.FILE_SHARE_READ) or (ow and not share_access & cr.FILE_SHARE_WRITE) \
                or (od and not share_access & cr.FILE_SHARE_DELETE):
            return True
    return False
