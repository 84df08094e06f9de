"""The drill's built-in writer/verifier against a real `smbnd serve` CA share: the server is
SIGKILLed and restarted under it (same address and state dir); the client reconnects with backoff,
reclaims its persistent handle with DH2C (same ClientGuid, FileId, CreateGuid), retries the
interrupted write and verifies every block. Then the verdict and the outputs (result.json,
report.md, timeline.svg, timeline.png) are computed from those records and checked."""
from __future__ import annotations

import json
import os
import signal
import struct
import time
import xml.etree.ElementTree as ET
import zlib

from smbnd.drill import report, verdict
from smbnd.drill.schema import Expect
from smbnd.drill.workload import Clock, WriterVerifier
from smbnd_server import PASSWORD, USER, SmbndServer, free_port


def _wait_for(cond, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)


def _kill(srv: SmbndServer) -> None:
    os.kill(srv.proc.pid, signal.SIGKILL)       # our own child, by PID
    srv.proc.wait(10)
    srv._log.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    off, idat, dims = 8, b"", None
    while off < len(data):
        n, tag = struct.unpack(">I4s", data[off:off + 8])
        body = data[off + 8: off + 8 + n]
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == struct.unpack(">I", data[off + 8 + n: off + 12 + n])[0]
        if tag == b"IHDR":
            dims = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        off += 12 + n
    w, h = dims
    assert len(zlib.decompress(idat)) == h * (1 + 3 * w)
    return w, h


def test_writer_reclaims_through_server_crash_and_reports(tmp_path):
    port = free_port()
    srv = SmbndServer(root=str(tmp_path / "srv"), port=port).start()
    clock = Clock()
    w = WriterVerifier("c1", srv.host, port, "ca", USER, PASSWORD, clock, block_size=32768, blocks=16, rate=25,
                       verify_every=5, io_timeout=15, reconnect_timeout=60)
    srv2 = None
    try:
        w.start()
        _wait_for(lambda: sum(1 for r in w.records if r["op"] == "write") >= 20, 30)
        t_kill = clock.now()
        _kill(srv)
        time.sleep(0.5)                              # the server is down for a while
        srv2 = SmbndServer(root=str(tmp_path / "srv"), port=port).start()
        t_up = clock.now()
        _wait_for(lambda: any(r["op"] == "reconnect" for r in w.records), 30)
        _wait_for(lambda: sum(1 for r in w.records if r["op"] == "write" and r["start"] > t_up) >= 20, 30)
        w.finish(60)
    finally:
        w.stop.set()
        if srv2:
            srv2.stop()
    s = w.summary()
    assert s["reconnects"] == 1 and s["reclaimed"] == 1 and not s["handle_lost"]
    assert s["errors"] == 0 and s["data_verified"] is True and w.final_verified is True
    rec = next(r for r in w.records if r["op"] == "reconnect")
    assert rec["ok"] and rec["reclaimed"] and not rec["file_id_changed"] and rec["tries"] >= 1
    opened = w.records[0]
    assert opened["op"] == "open" and opened["persistent"] and opened["lease"] == 7   # RWH
    # the write in flight at the crash was retried on the reclaimed handle: one record, 2+ attempts
    retried = [r for r in w.records if r["op"] == "write" and r["attempts"] > 1]
    assert len(retried) == 1 and retried[0]["ok"] and retried[0]["reconnects"] == 1
    assert retried[0]["start"] < t_up < retried[0]["end"]
    assert {r["op"] for r in w.records} >= {"open", "write", "read", "reconnect", "close"}

    ops = [{"at": 0.0, "op": "fault kill server", "start": t_kill, "end": t_kill + 0.01, "ok": True},
           {"at": 1.0, "op": "wait 1", "start": t_kill + 0.01, "end": t_up, "ok": True}]
    clients = {"c1": {"records": w.records, "summary": s}}
    v = verdict.compute(clients, ops, [], Expect(max_pause_s=60, no_errors=True, data_verified=True,
                                                 handles_reclaimed=True, min_reconnects=1), clock.now())
    assert v["passed"], v["failures"]
    c = v["clients"]["c1"]
    assert c["reconnects"] == 1 and c["handles_reclaimed"] and c["errors"] == 0
    pause = c["pauses"][0]                          # the wait op is not an operation on the server
    assert len(c["pauses"]) == 1 and pause["op"] == "fault kill server"
    # the pause spans the outage: from the last completion before the kill to the first after restart
    assert pause["paused_from"] <= t_kill and pause["paused_to"] >= t_up
    assert pause["pause_s"] == c["max_pause_s"] and c["max_pause_s"] > c["typical_gap_s"]
    print(f"\nserver crash: pause {pause['pause_s']:.3f} s (down {t_up - t_kill:.3f} s), "
          f"first I/O {pause['first_io_after_s']:.3f} s after the kill, reconnect tries {rec['tries']}")

    result = {"name": "crash", "source": "test", "cluster_config": "-", "t_end": clock.now(), "settle": 0,
              "ops": ops, "events": [{"seq": 1, "ts": clock.t0_wall + t_kill, "t": t_kill, "type": "node_down",
                                      "node": "n1"}],
              "clients": clients, "verdict": v, "notes": []}
    paths = report.write_all(result, str(tmp_path / "out"))
    with open(paths["result.json"]) as f:
        assert json.load(f)["verdict"]["passed"] is True
    md = open(paths["report.md"]).read()
    assert "**Verdict: PASS**" in md and "| c1 |" in md and "fault kill server" in md and "## Reconnects" in md
    svg = ET.parse(paths["timeline.svg"]).getroot()
    assert svg.tag.endswith("svg")
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "fault kill server" in texts and any(t and t.startswith("c1") for t in texts)
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}circle"))) >= s["writes_acked"]
    assert _png_size(open(paths["timeline.png"], "rb").read()) == (int(svg.get("width")), int(svg.get("height")))


def test_verdict_fails_on_errors_and_lost_handles():
    recs = [{"client": "c", "op": "write", "start": i * 0.1, "end": i * 0.1 + 0.01, "ok": True, "status": "0x0"}
            for i in range(10)]
    recs += [{"client": "c", "op": "write", "start": 1.0, "end": 4.0, "ok": False, "status": "HANDLE_LOST"},
             {"client": "c", "op": "reconnect", "start": 1.0, "end": 4.0, "ok": False, "reclaimed": False,
              "status": "RECONNECT_TIMEOUT"}]
    ops = [{"op": "takeover n1", "start": 0.95, "end": 1.0, "ok": False, "error": "409"}]
    v = verdict.compute({"c": {"records": recs, "summary": {"kind": "writer", "handle_lost": True,
                                                            "data_verified": False}}},
                        ops, [], Expect(no_errors=True, data_verified=True, handles_reclaimed=True,
                                        events=["takeover_done"]), 5.0)
    assert not v["passed"]
    failed = {c["check"] for c in v["checks"] if not c["ok"]}
    assert failed == {"operations_ok", "no_errors", "data_verified", "handles_reclaimed", "events"}
    p = v["clients"]["c"]["pauses"][0]      # I/O never resumed: paused from the last success to the end
    assert (p["paused_from"], p["paused_to"], p["resumed"], p["first_io_after_s"]) == (0.91, 5.0, False, None)
