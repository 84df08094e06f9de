"""The external-client hook: a command line whose stdout lines are JSON I/O records. Here the
command is the built-in writer as a process (``python -m smbnd.drill.ext_writer``) against a real
`smbnd serve` CA share that is SIGKILLed and restarted under it; the hook fills the placeholders,
converts the unix times to drill time and takes the client's own summary line."""
from __future__ import annotations

import os
import signal
import sys
import time

from smbnd.drill import verdict
from smbnd.drill.external import ExternalClient
from smbnd.drill.schema import Expect
from smbnd.drill.workload import Clock
from smbnd_server import PASSWORD, USER, SmbndServer, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_external_client_records_through_server_crash(tmp_path):
    port = free_port()
    srv = SmbndServer(root=str(tmp_path / "srv"), port=port).start()
    clock = Clock()
    cmd = [sys.executable, "-m", "smbnd.drill.ext_writer", "--address", "{address}", "--port", "{port}",
           "--share", "{share}", "--user", "{user}", "--duration", "{duration}", "--name", "x1",
           "--block-size", "16384", "--blocks", "8"]
    ext = ExternalClient("x1", cmd, ROOT, {}, {"address": srv.host, "port": port, "share": "ca", "user": USER,
                                               "password": PASSWORD, "duration": 5, "t0": clock.t0_wall}, clock,
                         str(tmp_path / "x1.log"))
    assert ext.env["DRILL_PASSWORD"] == PASSWORD and "{" not in " ".join(ext.command)
    srv2 = None
    try:
        ext.start()
        time.sleep(2.0)                       # the client is writing (process start + connect < 2 s)
        t_kill = clock.now()
        os.kill(srv.proc.pid, signal.SIGKILL)     # our own child, by PID
        srv.proc.wait(10)
        srv._log.close()
        srv2 = SmbndServer(root=str(tmp_path / "srv"), port=port).start()
        ext.finish(120)
    finally:
        if srv2:
            srv2.stop()
    s = ext.summary()
    assert s["exit_status"] == 0, open(tmp_path / "x1.log").read()[-2000:]
    assert s["data_verified"] is True and not s["handle_lost"] and s["reconnects"] == 1 and s["errors"] == 0
    ops = {r["op"] for r in ext.records}
    assert {"open", "write", "read", "reconnect", "close"} <= ops
    rec = next(r for r in ext.records if r["op"] == "reconnect")
    assert rec["ok"] and rec["reclaimed"]
    # times were converted from unix time to drill seconds
    assert all(-5 < r["start"] <= r["end"] < 60 for r in ext.records)
    v = verdict.compute({"x1": {"records": ext.records, "summary": s}},
                        [{"op": "kill", "start": t_kill, "end": t_kill, "ok": True}], [],
                        Expect(no_errors=True, data_verified=True, handles_reclaimed=True), clock.now())
    assert v["passed"], v["failures"]
    print(f"\nexternal client: pause {v['clients']['x1']['pauses'][0]['pause_s']} s around the crash")
