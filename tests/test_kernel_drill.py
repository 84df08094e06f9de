"""Issue 4 acceptance as a drill: the Linux kernel client through an unplanned takeover, netns backend.

``smbnd drill run drills/kernel-unplanned-takeover.yaml --isolate``: a private netns cluster (unique
name, random 192.168.x subnet; smbnd/drill/control.py isolated_config), a qemu guest (Debian's
cifs.ko; interop/linux-kernel/drill_client.py, an external drill client) on its fabric bridge
writing + fsyncing 64 KiB blocks through lif1 with ``vers=3.1.1,persistenthandles``; node1 is
SIGKILLed at t = 8 s, node2 takes over, node1 is given back at t = 20 s. The verdict must be PASS with
no I/O error and the file verified, and report.md must give the time from the kill to the guest's
first successful I/O (the "first I/O after op start" column of the ``fault kill node1`` row).

    pytest -m kernel tests/test_kernel_drill.py -s        (root; qemu; see interop/linux-kernel)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "interop" / "linux-kernel"
DRILL = REPO / "drills" / "kernel-unplanned-takeover.yaml"
sys.path.insert(0, str(HARNESS))




@pytest.mark.timeout(420)
def test_kernel_client_unplanned_takeover_drill(kernel_guest, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "smbnd", "drill", "run", str(DRILL), "--isolate", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=400)
    print(p.stdout[-3000:], p.stderr[-3000:])
    client_log = (out / "client-kernel.log").read_text(errors="replace") if (out / "client-kernel.log").exists() else ""
    assert (out / "result.json").exists(), (p.returncode, p.stderr[-3000:], client_log[-3000:])
    r = json.loads((out / "result.json").read_text())
    v = r["verdict"]
    k = v["clients"]["kernel"]
    summary = r["clients"]["kernel"]["summary"]
    report = (out / "report.md").read_text()
    ctx = f"failures {v['failures']}; notes {summary['notes']}; client log tail:\n{client_log[-3000:]}"
    assert v["passed"] and p.returncode == 0, ctx
    assert "**Verdict: PASS**" in report
    assert k["errors"] == 0 and summary["errors"] == 0, ctx
    assert k["data_verified"] is True, ctx
    assert k["ios_ok"] >= 100, ctx                       # ~6 I/Os per second for 30+ s
    assert summary["reconnects"] and summary["reconnects"] >= 1, ctx   # cifs.ko really reconnected
    kill = next(x for x in k["pauses"] if x["op"] == "fault kill node1")
    assert kill["first_io_after_s"] is not None and kill["resumed"], kill
    # the guest was writing before the kill (not still booting)
    assert any(rec["ok"] and rec["end"] < kill["op_start"] for rec in r["clients"]["kernel"]["records"]), ctx
    row = re.search(r"^\| kernel \| `fault kill node1` \|.*\| ([0-9.]+) \|$", report, re.M)
    assert row, report
    assert abs(float(row.group(1)) - kill["first_io_after_s"]) < 0.01
    print(f"kill -> first successful kernel-client I/O (write + fsync): {kill['first_io_after_s']:.2f} s "
          f"(pause {kill['pause_s']:.2f} s; cifs.ko reconnects {summary['reconnects']})")
