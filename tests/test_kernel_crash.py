"""The Linux kernel client (cifs.ko in a qemu guest) keeps writing through a server crash.

Option set ``3.1.1-ph-crash`` of interop/linux-kernel (vers=3.1.1,persistenthandles on the CA
share): the guest writes 64 KiB blocks to a file it keeps open; twice it asks the host (a
``SMBK-CRASH`` line on the console) to SIGKILL the smbnd process, which the harness starts again
on the same address with the same state directory. The client has to reconnect and reclaim its
persistent handle (DH2C) from the restarted server; no I/O error may reach the guest, and the file
must read back equal after dropping the page cache and again after a remount.

    pytest -m kernel tests/test_kernel_crash.py -v        (root; see interop/linux-kernel/README.md)
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "interop" / "linux-kernel"
sys.path.insert(0, str(HARNESS))

PORT = 4455
WINDOW = 15     # s: the server's default reconnect window (the kernel client asks for the default)
SERVER_CMD = ("{python} -m smbnd serve --listen 0.0.0.0:{port} --share data={data} --share ca={ca}:ca "
              "--user demo:demo-Passw0rd --state-dir {state} --durable-timeout {window} --log-level INFO")




@pytest.mark.timeout(290)
def test_kernel_client_survives_server_crashes(kernel_guest, tmp_path):
    import run
    data, ca, state = tmp_path / "data", tmp_path / "ca", tmp_path / "state"
    data.mkdir()
    ca.mkdir()
    cmd = SERVER_CMD.format(python=sys.executable, port=PORT, data=data, ca=ca, state=state, window=WINDOW)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    res = run.run_kernel_client(cmd, port=PORT, share="data", ph_share="ca", optsets=["3.1.1-ph-crash"],
                                user="demo", password="demo-Passw0rd", server_cwd=str(REPO), server_env=env,
                                ready_regex="listening", timeout=240, crash_wait=WINDOW + 20,
                                workdir=str(tmp_path / "run"), keep=True, verbose=True)
    print(res.summary())
    o = res.optsets.get("3.1.1-ph-crash")
    assert o is not None, f"no result: {res.errors}; logs in {res.workdir}"
    fails = {c: v["detail"] for c, v in o["checks"].items() if v["status"] == "FAIL"}
    assert o["ok"] and res.ok, f"failed checks {fails}; crashes {res.crashes}; errors {res.errors}; " \
                               f"guest log {o['log'][-12:]}; logs in {res.workdir}"
    assert len(res.crashes) == 2 and all(c["listening"] for c in res.crashes), res.crashes
    log = Path(res.server_log).read_text(errors="replace")
    assert log.count("reconnected persistent open") >= 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
