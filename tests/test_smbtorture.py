"""smbtorture suites against smbnd, checked against an expectations file.

    pytest -m torture tests/test_smbtorture.py            # all suites in the file
    pytest -m torture tests/test_smbtorture.py -k ioctl   # one suite

A test listed PASS that fails or goes missing fails the suite's test case;
tests listed FAIL/SKIP that now pass are reported ("newly passing: update the
file") without failing.  Update the file from a run with:
    python -m interop.smbtorture.run_torture --server smbnd --record \
        -e interop/smbtorture/expectations/smbnd-core.txt
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from pathlib import Path

import pytest

from interop.smbtorture import expectations as ex
from interop.smbtorture.fixtures import smbnd_factory  # noqa: F401
from interop.smbtorture.run_torture import CA_SUITES, SMBTORTURE, run_suite

EXPECTATIONS = Path(__file__).resolve().parents[1] / "interop/smbtorture/expectations/smbnd-core.txt"
SUITE_TIMEOUT = float(os.environ.get("SMBND_TORTURE_TIMEOUT", "600"))

_exp = ex.Expectations.load(EXPECTATIONS)

needs_torture = [
    pytest.mark.torture,
    pytest.mark.skipif(not shutil.which("smbtorture") and not Path(SMBTORTURE).exists(),
                       reason="smbtorture not installed (apt-get install samba-testsuite)"),
    pytest.mark.skipif(importlib.util.find_spec("smbnd.__main__") is None,
                       reason="smbnd has no 'python -m smbnd serve' entry point yet"),
]


def _marks(f):
    for m in reversed(needs_torture):
        f = m(f)
    return f


@_marks
@pytest.mark.timeout(2 * SUITE_TIMEOUT + 120)  # suite + resume of unreached tests
@pytest.mark.parametrize("suite", _exp.all_suites())
def test_smbtorture_suite(suite, smbnd_factory, request):  # noqa: F811
    # CA_SUITES (smb2.replay: replay5 replays a persistent open) run on a CA share
    s = smbnd_factory(**({"share_flags": ":ca"} if suite in CA_SUITES else {})).info()
    run = run_suite(suite, s.host, s.port, s.share, s.user, s.password, s.user2, s.password2,
                    timeout=SUITE_TIMEOUT)
    rep = ex.check(_exp.for_suite(suite), run.results)
    text = f"{suite}: {run.summary()}\n{rep.format()}"
    request.node.add_report_section("call", "smbtorture", text)
    if rep.newly_passing or rep.unlisted:
        warnings.warn(f"{suite}: {len(rep.newly_passing)} newly passing, {len(rep.unlisted)} "
                      f"unlisted -- update {EXPECTATIONS.name}", stacklevel=1)
    assert not rep.failed, text


# ---- fast unit tests of the runner's parsing/checking (no server, no marker) ----

SAMPLE = """smbtorture 4.17.12-Debian
progress: 4
test: rw1
time: 2026-11-21 22:38:01.541711
Checking data integrity over 10 ops
0time: 2026-11-21 22:38:01.572439
success: rw1
test: invalid
failure: invalid [
../../source4/torture/smb2/read_write.c:334: status was NT_STATUS_OK
]
test: copy-chunk streams
error: something printed by a test
skip: copy-chunk streams [
not supported
]
test: bug14788.VALIDATE_NEGOTIATE
some output without newlinesuccess: bug14788.VALIDATE_NEGOTIATE
test: crashed
"""


def test_subunit_parse():
    from interop.smbtorture.subunit import parse

    p = parse(SAMPLE)
    assert p.results["rw1"] == ("success", "")
    assert p.results["invalid"][0] == "failure"
    assert "read_write.c:334" in p.results["invalid"][1]
    assert p.results["copy-chunk streams"] == ("skip", "not supported")
    assert p.results["bug14788.VALIDATE_NEGOTIATE"][0] == "success"
    assert "something printed by a test" not in p.results
    assert p.unfinished == "crashed"


def test_expectations_check_and_render():
    exp = ex.Expectations.parse(
        "# header\nSUITE smb2.x\nPASS smb2.x.a\nPASS smb2.x.gone\nFAIL smb2.x.b # known\n"
        "SKIP smb2.x.c # n/a\nFAIL smb2.x.d\n")
    results = {"smb2.x.a": ("failure", "boom"), "smb2.x.b": ("success", ""),
               "smb2.x.c": ("skip", "n/a"), "smb2.x.d": ("failure", "still"),
               "smb2.x.new": ("success", "")}
    rep = ex.check(exp.for_suite("smb2.x"), results)
    assert rep.failed
    assert [r[0] for r in rep.regressions] == ["smb2.x.a", "smb2.x.gone"]
    assert rep.newly_passing == [("smb2.x.b", "FAIL")]
    assert rep.unlisted == [("smb2.x.new", "PASS")]
    assert rep.ok == 2
    text = ex.render({"smb2.x": results}, previous=exp)
    again = ex.Expectations.parse(text)
    assert again.entries["smb2.x.b"].state == "PASS"
    assert again.entries["smb2.x.a"].reason.startswith("TODO reason")
    assert again.entries["smb2.x.d"].reason == "still" or again.entries["smb2.x.d"].reason.startswith("TODO")
    assert again.suites == ["smb2.x"]


def test_expectation_files_parse():
    d = EXPECTATIONS.parent
    for f in d.glob("*.txt"):
        e = ex.Expectations.load(f)
        assert e.entries, f
