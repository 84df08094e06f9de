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
from interop.smbtorture.fixtures import smbnd_factory, smbnd_server  # noqa: F401
from interop.smbtorture.run_torture import SMBTORTURE, run_suite

EXPECTATIONS = Path(__file__).resolve().parents[1] / "interop/smbtorture/expectations/smbnd-core.txt"
SUITE_TIMEOUT = float(os.environ.get("SMBND_TORTURE_TIMEOUT", "600"))

_exp = ex.Expectations.load(EXPECTATIONS)

pytestmark = [
    pytest.mark.torture,
    pytest.mark.skipif(not shutil.which("smbtorture") and not Path(SMBTORTURE).exists(),
                       reason="smbtorture not installed (apt-get install samba-testsuite)"),
    pytest.mark.skipif(importlib.util.find_spec("smbnd.__main__") is None,
                       reason="smbnd has no 'python -m smbnd serve' entry point yet"),
]


@pytest.mark.timeout(SUITE_TIMEOUT + 120)
@pytest.mark.parametrize("suite", _exp.all_suites())
def test_smbtorture_suite(suite, smbnd_server, request):  # noqa: F811
    s = smbnd_server
    run = run_suite(suite, s.host, s.port, s.share, s.user, s.password, s.user2, s.password2,
                    timeout=SUITE_TIMEOUT)
    rep = ex.check(_exp.for_suite(suite), run.results)
    text = f"{suite}: {run.summary()}\n{rep.format()}"
    request.node.add_report_section("call", "smbtorture", text)
    if rep.newly_passing or rep.unlisted:
        warnings.warn(f"{suite}: {len(rep.newly_passing)} newly passing, {len(rep.unlisted)} "
                      f"unlisted -- update {EXPECTATIONS.name}", stacklevel=1)
    assert not rep.failed, text
