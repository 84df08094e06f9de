"""Parser for the subunit v1 text protocol as smbtorture writes it.

smbtorture --format=subunit emits, on stdout::

    progress: 3
    test: rw1
    time: 2026-11-21 22:38:01.541711
    success: rw1
    test: invalid
    failure: invalid [
    ../../source4/torture/smb2/read_write.c:334: status was ...
    ]
    skip: shadow_copy [
    reason
    ]

Quirks handled here:
  * tests print free text on stdout between the lines, sometimes without a
    trailing newline, so a result line may be glued to preceding output
    (``0time: ...``).  Result lines are recognised at the start of a line, or,
    for the test currently running, anywhere in the line.
  * ids may contain spaces (``copy-chunk streams``) and dots for nested
    suites (``bug14788.VALIDATE_NEGOTIATE``).
  * a multi-line detail block ``[`` ... ``]`` follows a result; subunit v1
    also allows ``[ multipart`` which we treat the same way.
  * a test that started but never reported (crash, timeout) is reported by
    the caller, see :func:`parse`'s ``unfinished``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# subunit v1 keywords -> canonical result
KEYWORDS = {
    "success": "success", "successful": "success",
    "failure": "failure", "fail": "failure", "failed": "failure",
    "error": "error",
    "skip": "skip", "skipped": "skip",
    "xfail": "xfail",
    "uxsuccess": "uxsuccess",
}
_KW = "|".join(sorted(KEYWORDS, key=len, reverse=True))
_TEST_RE = re.compile(r"^(?:test|testing)(?::\s?|\s)(?P<id>.+?)\s*$")
_RESULT_RE = re.compile(rf"^(?P<kw>{_KW})(?::\s?|\s)(?P<rest>.*?)\s*$")


@dataclass
class Parsed:
    results: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (result, reason)
    order: list[str] = field(default_factory=list)                    # ids in start order
    unfinished: str | None = None                                     # test with no result


def _split_rest(rest: str) -> tuple[str, bool]:
    """'name [' -> (name, True); 'name [ multipart' -> (name, True); 'name' -> (name, False)."""
    for tail in (" [ multipart", " [multipart", " ["):
        if rest.endswith(tail):
            return rest[: -len(tail)], True
    return rest, False


def parse(text: str) -> Parsed:
    out = Parsed()
    current: str | None = None
    lines = text.splitlines()
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        i += 1
        m = _TEST_RE.match(line)
        if m:
            current = m.group("id")
            if current not in out.results:
                out.order.append(current)
            continue
        m = _RESULT_RE.match(line)
        kw = rest = None
        if m:
            kw, rest = m.group("kw"), m.group("rest")
        elif current is not None:
            # result glued to free text: look for "<kw>: <current>" inside the line
            mm = re.search(rf"(?P<kw>{_KW}):\s?(?P<rest>{re.escape(current)}(?: \[(?: multipart)?)?)\s*$", line)
            if mm:
                kw, rest = mm.group("kw"), mm.group("rest")
        if kw is None:
            continue
        name, has_details = _split_rest(rest)
        details: list[str] = []
        if has_details:
            while i < n:
                d = lines[i]
                i += 1
                if d.rstrip() == "]":
                    break
                details.append(d)
        if name != current and name not in out.order:
            # a result for a test that never started: free text that happens
            # to look like a result line (e.g. a test printing "error: ...")
            continue
        reason = "\n".join(x for x in details if x.strip()).strip()
        out.results[name] = (KEYWORDS[kw], reason)
        if name == current:
            current = None
    if current is not None and current not in out.results:
        out.unfinished = current
    return out
