"""8.3 short names (MS-FSCC 2.1.5.2.1 "8.3 filename"; FileBothDirectoryInformation
ShortName, FileAlternateNameInformation).

Names that already are valid 8.3 names have no separate short name. Others get a
deterministic one in the Windows hashed style ``XXHHHH~1.EXT``: two characters of
the cleaned base name, four hex digits of a hash of the upper-cased long name, and
up to three characters of the extension. Being a pure function of the name (and
stable under case-only renames), it needs no on-disk state; lookups map a short
name back by scanning the directory (``ShareFS._child``).
"""
from __future__ import annotations

import zlib

# MS-FSCC 2.1.5.2.1: characters allowed in an 8.3 name besides letters and digits
_SPECIAL = frozenset("!#$%&'()-@^_`{}~")
# characters Windows replaces with '_' when building a short name
_REPLACE = frozenset("+,;=[]")


def _ok_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in _SPECIAL)


def is_8dot3(name: str) -> bool:
    """A valid 8.3 name: 1-8 character base, optional '.' and 1-3 character extension."""
    if name in (".", ".."):
        return True
    base, dot, ext = name.partition(".")
    if not base or len(base) > 8 or (dot and not ext) or len(ext) > 3 or "." in ext:
        return False
    return all(_ok_char(c) for c in base + ext)


def _clean(s: str) -> str:
    out = []
    for c in s.upper():
        if _ok_char(c):
            out.append(c)
        elif c in _REPLACE or (not c.isascii() and c.isprintable()):
            out.append("_")
        # spaces, dots and other characters are dropped
    return "".join(out)


def short_name(name: str) -> str:
    """The 8.3 alias of ``name``, or "" when ``name`` is itself a valid 8.3 name."""
    if is_8dot3(name):
        return ""
    stripped = name.strip(". ")
    base, dot, ext = stripped.rpartition(".")
    if not dot:
        base, ext = stripped, ""
    ext = _clean(ext)[:3]
    prefix = (_clean(base) or "_")[:2]
    h = zlib.crc32(name.upper().encode("utf-16-le", "surrogatepass")) & 0xFFFF
    return f"{prefix}{h:04X}~1" + (f".{ext}" if ext else "")


def maybe_short(comp: str) -> bool:
    """Could ``comp`` be one of our generated short names?"""
    return "~" in comp and is_8dot3(comp)
