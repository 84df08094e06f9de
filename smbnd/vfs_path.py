"""Path-name helpers for the share VFS (pure): Windows upcase, MS-FSA 2.1.4.4
wildcard matching and lexical SMB2 path parsing (see ``smbnd.vfs`` for the rules)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from smbnd import status as st


@functools.lru_cache(maxsize=8192)
def _up1(c: str) -> str:
    u = c.upper()
    return u if len(u) == 1 else c  # Windows upcase table is 1:1 (no "ß" -> "SS")


def upcase(s: str) -> str:
    """Windows-style simple upcase used for case-insensitive comparison."""
    if s.isascii():
        return s.upper()
    return "".join(map(_up1, s))


# ---------------------------------------------------------------------------
# Wildcards: MS-FSA 2.1.4.4 (FsRtlIsNameInExpression)
# ---------------------------------------------------------------------------
DOS_STAR, DOS_QM, DOS_DOT = "<", ">", '"'
WILDCARD_CHARS = frozenset('*?<>"')


def has_wildcards(s: str) -> bool:
    """MS-FSA 2.1.4.3: expression contains * ? < > or "."""
    return any(c in WILDCARD_CHARS for c in s)


def wildcard_match(pattern: str, name: str, ignore_case: bool = True) -> bool:
    """MS-FSA 2.1.4.4 semantics, simulated as an NFA over expression offsets.

    ``*`` any run; ``?`` exactly one char; ``>`` (DOS_QM) one char, or nothing
    at a '.' / end of name; ``"`` (DOS_DOT) a '.' or nothing at end of name;
    ``<`` (DOS_STAR) any run that does not consume the name's final '.'.
    """
    if not name:
        return not pattern
    if not pattern:
        return False
    if pattern in ("*", "*.*"):  # MS-FSA 2.1.4.4 Part 1
        return True
    if ignore_case:
        pattern, name = upcase(pattern), upcase(name)
    if pattern[0] == "*" and not has_wildcards(pattern[1:]):
        return name.endswith(pattern[1:])
    if not has_wildcards(pattern):
        return pattern == name
    plen, nlen = len(pattern), len(name)
    last_dot = name.rfind(".")

    def closure(states: set[int], n: int) -> set[int]:
        todo = list(states)
        at_end = n == nlen
        while todo:
            e = todo.pop()
            if e >= plen:
                continue
            c = pattern[e]
            if c in "*<" or (c == DOS_QM and (at_end or name[n] == ".")) or (c == DOS_DOT and at_end):
                if e + 1 not in states:
                    states.add(e + 1)
                    todo.append(e + 1)
        return states

    states = closure({0}, 0)
    for n, ch in enumerate(name):
        nxt: set[int] = set()
        for e in states:
            if e >= plen:
                continue
            c = pattern[e]
            if c == "*":
                nxt.add(e)
            elif c == DOS_STAR:
                if not (ch == "." and n == last_dot):
                    nxt.add(e)
            elif c == "?":
                nxt.add(e + 1)
            elif c == DOS_QM:
                if ch != ".":
                    nxt.add(e + 1)
            elif c == DOS_DOT:
                if ch == ".":
                    nxt.add(e + 1)
            elif c == ch:
                nxt.add(e + 1)
        if not nxt:
            return False
        states = closure(nxt, n + 1)
    return plen in states


# ---------------------------------------------------------------------------
# Path parsing (lexical)
# ---------------------------------------------------------------------------
_BAD_CHARS = frozenset({chr(i) for i in range(32)} | {"|"})
MAX_COMPONENT_UNITS = 255


@dataclass(frozen=True)
class ParsedPath:
    components: tuple[str, ...]
    trailing_sep: bool = False
    stream: str = ""  # "" or "::$DATA"
    stream_name: str = ""  # named data stream ("file:name" / "file:name:$DATA"), "" for none


def _utf16_units(s: str) -> int:
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def parse_smb_path(path: str, *, allow_leading_sep: bool = False) -> tuple[int, ParsedPath | None]:
    """Lexical validation/normalisation of an SMB2 path name (see module doc)."""
    if path[:1] in ("\\", "/"):
        if not allow_leading_sep:
            return st.STATUS_INVALID_PARAMETER, None  # MS-SMB2 3.3.5.9
        path = path.lstrip("\\/")
    trailing = False
    if path[-1:] in ("\\", "/"):
        trailing = True
        path = path[:-1]
    raw = path.replace("/", "\\").split("\\") if path else []
    out: list[str] = []
    stream = ""
    stream_name = ""
    last_i = len(raw) - 1
    for i, comp in enumerate(raw):
        if comp == "":
            return st.STATUS_OBJECT_NAME_INVALID, None
        # control characters and '|' are invalid in file names; a stream name may hold
        # anything but NUL, '\\', '/' and ':' (smb2.streams.names/names2)
        if any(c in _BAD_CHARS for c in comp.partition(":")[0]) or "\0" in comp:
            return st.STATUS_OBJECT_NAME_INVALID, None
        if ":" in comp:
            if i != last_i or trailing:
                return st.STATUS_OBJECT_NAME_INVALID, None
            comp, _, rest = comp.partition(":")
            if not comp:
                return st.STATUS_OBJECT_NAME_INVALID, None
            parts = rest.split(":")
            if len(parts) > 2:
                return st.STATUS_OBJECT_NAME_INVALID, None
            sname = parts[0]
            stype = parts[1] if len(parts) == 2 else None
            if stype is not None and upcase(stype) != "$DATA":
                return st.STATUS_OBJECT_NAME_INVALID, None  # only data streams (MS-FSA 2.1.5.1)
            if sname == "":
                if stype is None:  # "name:"
                    return st.STATUS_OBJECT_NAME_INVALID, None
                stream = "::$DATA"
            elif comp in (".", "..") or _utf16_units(sname) > MAX_COMPONENT_UNITS:
                return st.STATUS_OBJECT_NAME_INVALID, None
            else:  # "name:stream" or "name:stream:$DATA"
                stream_name = sname
        if comp == "..":
            if not out:
                return st.STATUS_OBJECT_PATH_SYNTAX_BAD, None
            out.pop()
            continue
        if comp == ".":
            if i == last_i:
                return st.STATUS_OBJECT_NAME_INVALID, None
            continue
        out.append(comp)
    # Wildcards / over-long names are judged after ".." folding (Samba:
    # check_path_syntax, then ms_has_wild in filename_convert_dirfsp).
    for comp in out:
        if has_wildcards(comp) or _utf16_units(comp) > MAX_COMPONENT_UNITS:
            return st.STATUS_OBJECT_NAME_INVALID, None
        try:
            comp.encode("utf-8")  # unpaired UTF-16 surrogates cannot name a host file
        except UnicodeEncodeError:
            return st.STATUS_OBJECT_NAME_INVALID, None
    if stream_name:
        try:
            stream_name.encode("utf-8")
        except UnicodeEncodeError:
            return st.STATUS_OBJECT_NAME_INVALID, None
    return st.STATUS_SUCCESS, ParsedPath(tuple(out), trailing, stream, stream_name)


def _windows_name_ok(name: str) -> bool:
    """Host names a Windows client can see/open (no mangling is done)."""
    if any(c in _BAD_CHARS or c in WILDCARD_CHARS or c in "\\:/" for c in name):
        return False
    try:
        name.encode("utf-16-le")  # rejects surrogate-escaped (undecodable) bytes
    except UnicodeEncodeError:
        return False
    return _utf16_units(name) <= MAX_COMPONENT_UNITS
