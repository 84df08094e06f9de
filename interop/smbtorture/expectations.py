"""Expectations files for smbtorture runs.

Format (one entry per line, ``#`` starts a comment)::

    # free comments
    SUITE smb2.rw                      # optional: suites to run (else derived)
    PASS smb2.rw.rw1
    FAIL smb2.rw.invalid # reason why it fails
    SKIP smb2.ioctl.shadow_copy # reason (not run / skipped by smbtorture)

Test ids are ``<suite>.<subunit id>`` (as in Samba's selftest knownfail
lists); they may contain spaces, so the id is everything between the keyword
and `` # ``.

Checking a run against an expectations file:

* ``PASS`` test that fails, errors, is skipped or is missing -> **regression**
  (CI failure);
* ``FAIL``/``SKIP`` test that now passes -> **newly passing** ("update the
  file"), not a failure;
* ``FAIL`` test that is now skipped, ``SKIP`` test that fails -> noted as
  *changed*, not a failure;
* test that ran but is not listed -> **unlisted** (reported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

STATES = ("PASS", "FAIL", "SKIP")

# smbtorture/subunit result -> expectation state
RESULT_STATE = {
    "success": "PASS",
    "uxsuccess": "PASS",
    "failure": "FAIL",
    "error": "FAIL",
    "xfail": "FAIL",
    "skip": "SKIP",
}

_LINE_RE = re.compile(r"^(?P<kw>PASS|FAIL|SKIP|SUITE)\s+(?P<id>.*?)(?:\s+#\s?(?P<reason>.*))?\s*$")


@dataclass
class Entry:
    state: str
    reason: str = ""


@dataclass
class Expectations:
    entries: dict[str, Entry] = field(default_factory=dict)   # ordered
    suites: list[str] = field(default_factory=list)           # explicit SUITE lines
    suite_notes: dict[str, str] = field(default_factory=dict)  # SUITE line comments (run summaries)
    header: list[str] = field(default_factory=list)           # leading comment lines

    @classmethod
    def load(cls, path: str | Path) -> "Expectations":
        return cls.parse(Path(path).read_text())

    @classmethod
    def parse(cls, text: str) -> "Expectations":
        exp = cls()
        in_header = True
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                in_header = False if exp.entries or exp.suites else in_header
                continue
            if line.startswith("#"):
                if in_header:
                    exp.header.append(raw.rstrip())
                continue
            in_header = False
            m = _LINE_RE.match(line)
            if not m or not m.group("id"):
                raise ValueError(f"line {n}: cannot parse {raw!r}")
            kw, tid, reason = m.group("kw"), m.group("id"), (m.group("reason") or "").strip()
            if kw == "SUITE":
                if tid not in exp.suites:
                    exp.suites.append(tid)
                if reason:
                    exp.suite_notes[tid] = reason
                continue
            if tid in exp.entries:
                raise ValueError(f"line {n}: duplicate entry for {tid!r}")
            exp.entries[tid] = Entry(kw, reason)
        return exp

    def all_suites(self) -> list[str]:
        """SUITE lines, else the first two dotted components of every id."""
        if self.suites:
            return list(self.suites)
        out: list[str] = []
        for tid in self.entries:
            s = ".".join(tid.split(".")[:2])
            if s not in out:
                out.append(s)
        return out

    def for_suite(self, suite: str) -> dict[str, Entry]:
        p = suite + "."
        return {k: v for k, v in self.entries.items() if k.startswith(p)}


@dataclass
class CheckReport:
    regressions: list[tuple[str, str, str]] = field(default_factory=list)   # id, got, detail
    newly_passing: list[tuple[str, str]] = field(default_factory=list)      # id, was
    changed: list[tuple[str, str, str]] = field(default_factory=list)       # id, expected, got
    unlisted: list[tuple[str, str]] = field(default_factory=list)           # id, got
    ok: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def format(self) -> str:
        out = []
        if self.regressions:
            out.append(f"REGRESSIONS ({len(self.regressions)}): expected PASS")
            for tid, got, detail in self.regressions:
                d = detail.splitlines()[0] if detail else ""
                out.append(f"  {tid}: {got}" + (f" -- {d}" if d else ""))
        if self.newly_passing:
            out.append(f"NEWLY PASSING ({len(self.newly_passing)}): update the expectations file")
            out += [f"  {tid} (was {was})" for tid, was in self.newly_passing]
        if self.changed:
            out.append(f"CHANGED ({len(self.changed)}): not a failure")
            out += [f"  {tid}: expected {e}, got {g}" for tid, e, g in self.changed]
        if self.unlisted:
            out.append(f"UNLISTED ({len(self.unlisted)}): not in the expectations file")
            out += [f"  {tid}: {g}" for tid, g in self.unlisted]
        out.append(f"{self.ok} as expected, {len(self.regressions)} regressions, "
                   f"{len(self.newly_passing)} newly passing, {len(self.changed)} changed, "
                   f"{len(self.unlisted)} unlisted")
        return "\n".join(out)


def check(expected: dict[str, Entry], results: dict[str, tuple[str, str]]) -> CheckReport:
    """Compare ``results`` ({id: (subunit result, reason)}) with ``expected``
    (usually ``Expectations.for_suite(suite)`` for the suites that ran)."""
    rep = CheckReport()
    for tid, ent in expected.items():
        if tid not in results:
            if ent.state == "PASS":
                rep.regressions.append((tid, "MISSING", "test did not run / no result"))
            else:
                rep.changed.append((tid, ent.state, "MISSING"))
            continue
        res, reason = results[tid]
        got = RESULT_STATE.get(res, "FAIL")
        if got == ent.state:
            rep.ok += 1
        elif ent.state == "PASS":
            rep.regressions.append((tid, res, reason))
        elif got == "PASS":
            rep.newly_passing.append((tid, ent.state))
        else:
            rep.changed.append((tid, ent.state, got))
    for tid, (res, _reason) in results.items():
        if tid not in expected:
            rep.unlisted.append((tid, RESULT_STATE.get(res, "FAIL")))
    return rep


def _one_line(s: str) -> str:
    s = " ".join(s.split())
    s = s.replace("../../source4/torture/", "")
    return s[:200]


def render(
    results_by_suite: dict[str, dict[str, tuple[str, str]]],
    previous: Expectations | None = None,
    header: list[str] | None = None,
    suite_notes: dict[str, str] | None = None,
) -> str:
    """Render an expectations file from a run (``--record``).

    Reasons of tests that were FAIL/SKIP before and still are are kept;
    new failures get ``# TODO reason -- <smbtorture message>``; skips get the
    smbtorture skip message.  Entries (and SUITE notes) of suites that did not run are kept,
    and the suites keep the previous file's order (new ones go last).
    """
    prev = previous or Expectations()
    lines = list(header if header is not None else prev.header)
    if lines:
        lines.append("")
    suites = prev.all_suites() if prev.entries or prev.suites else []
    for s in results_by_suite:
        if s not in suites:
            suites.append(s)
    for suite in suites:
        note = (suite_notes or {}).get(suite) or (prev.suite_notes.get(suite)
                                                  if suite not in results_by_suite else None)
        lines.append(f"SUITE {suite}" + (f"  # {note}" if note else ""))
        if suite not in results_by_suite:
            for tid, ent in prev.for_suite(suite).items():
                lines.append(f"{ent.state} {tid}" + (f" # {ent.reason}" if ent.reason else ""))
            lines.append("")
            continue
        for tid, (res, reason) in results_by_suite[suite].items():
            state = RESULT_STATE.get(res, "FAIL")
            old = prev.entries.get(tid)
            if state == "PASS":
                lines.append(f"PASS {tid}")
                continue
            if old is not None and old.state == state and old.reason:
                why = old.reason
            elif state == "FAIL":
                msg = _one_line(reason)
                why = "TODO reason" + (f" -- {res}: {msg}" if msg else f" -- {res}")
            else:
                why = _one_line(reason) or "skipped by smbtorture"
            lines.append(f"{state} {tid} # {why}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
