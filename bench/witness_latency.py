"""Witness (MS-SWN) notification latency and the I/O pause it buys, on a private 2-node cluster.

    python bench/witness_latency.py [--repeat 5] [--rate 50] [--json out.json]

Each repetition starts a cluster (the Cluster harness of tests/test_cluster_ops.py: free ports,
random 127.x addresses, heartbeat 200 ms x 5) and two writers on the CA share through lif1, both
the drill's WriterVerifier (persistent handle + RWH lease, write-through, DH2C reclaim, data
verified at the end): ``wit`` is driven by the reference witness client registered the Windows way
(tests/test_witness_failover.py Watcher: ept_map, GetInterfaceList, RegisterEx on the partner's
LIF, AsyncNotify), ``plain`` is not. Then, each with a fresh registration:

  migrate  POST /v1/lif/migrate lif1 -> node2 (then revert)   CLIENT_MOVE latency after the command
  kill     fault kill node1 (then giveback)                   RESOURCE_CHANGE UNAVAILABLE after the kill
  hang     fault hang node1 (fenced, taken over; giveback)    RESOURCE_CHANGE UNAVAILABLE after the SIGSTOP

Targets (issue 5): CLIENT_MOVE <= 100 ms after the migrate command; RESOURCE_CHANGE UNAVAILABLE
<= heartbeat detection time (interval x misses) + 100 ms after the kill. The I/O pause is the
longest gap between successful writes around the operation. The witness writer acts on
notifications as a Windows client does: CLIENT_MOVE -> reconnect to the named address now
(MS-SWN 3.2.4.2 / MS-SMB2 3.2.4.4 via DH2C); RESOURCE_CHANGE AVAILABLE -> retry the reconnect now
instead of at the next backoff step (the plain writer backs off 0.05 .. 0.5 s as the drill writer).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from test_cluster_ops import Cluster  # noqa: E402
from test_witness_failover import Watcher, wait_witnesses  # noqa: E402

from smbnd.drill import verdict  # noqa: E402
from smbnd.drill.workload import Clock, WriterVerifier  # noqa: E402
from witness import ndr as n  # noqa: E402

TARGET_MS = 100.0


# the drill writer's reconnect backoff ends early on ``kick`` (set by move_to and by follow below)
KickWriter = WriterVerifier


def follow(watcher: Watcher, writer: KickWriter) -> None:
    """What the SMB client does with a notification (MS-SWN 3.2.4.2)."""
    def on_note(note) -> None:
        if note.kind == "client-move" and note.online_addresses():
            writer.move_to(note.online_addresses()[0])
        elif note.kind == "resource-change" and any(t == n.RESOURCE_STATE_AVAILABLE for _a, t in note.resources):
            writer.kick.set()
    watcher.client.on("*", on_note)


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timeout waiting for {what}")


def _resumed(w: KickWriter, after: float) -> bool:
    return any(r["ok"] and r["op"] == "write" and r["end"] > after for r in w.records[-50:])


def _pause(w: KickWriter, lo: float, hi: float) -> float | None:
    g = verdict.longest_gap(verdict.success_ends(w.records), lo, hi)
    return round(g[1] - g[0], 4) if g else None


def scenario(c: Cluster, kind: str, writers: dict, clock: Clock) -> dict:
    """One operation with a fresh witness registration; -> latencies (ms) and pauses (s)."""
    wit = writers["wit"]
    watcher = Watcher(c)
    follow(watcher, wit)
    for attempt in range(20):                # the witness on lif1's node may be (re)starting its listeners
        try:
            watcher.start()
            break
        except Exception:  # noqa: BLE001
            if attempt == 19:
                raise
            time.sleep(0.25)
    _wait(lambda: any(r["client"] == "wclient.test" and r["async_notify_pending"] for r in c.status()["witness"]),
          10, "AsyncNotify pending")
    time.sleep(0.5)
    detection = c.cfg.heartbeat_interval_ms * c.cfg.heartbeat_misses / 1000
    seq = c.last_seq()
    t0, t_op = time.monotonic(), clock.now()
    out: dict = {"kind": kind}
    try:
        if kind == "migrate":
            m = c.post("/v1/lif/migrate", {"lif": "lif1", "node": "node2"})
            mono, wall, _note = watcher.wait("client-move", t0, timeout=30)
            out["notify_ms"] = (mono - t0) * 1000
            out["op_ms"] = m["ms"]
            out["after_event_ms"] = (wall - c.wait_event("lif_moved", seq, lif="lif1")["ts"]) * 1000
            done = clock.now()
        else:
            body = {"kind": "kill" if kind == "kill" else "hang", "target": "node1"}
            c.post("/v1/fault", body)
            mono, wall, _note = watcher.wait("resource-change", t0, timeout=30, pred=lambda x: x.unavailable)
            out["notify_ms"] = (mono - t0) * 1000
            out["after_event_ms"] = (wall - c.wait_event("node_down", seq, node="node1")["ts"]) * 1000
            out["notify_minus_detection_ms"] = (mono - t0 - detection) * 1000
            tk = c.wait_event("takeover_done", seq, timeout=30, node="node1", planned=False)
            out["op_ms"] = round((tk["ts"] - c.wait_event("fault", seq, kind=body["kind"])["ts"]) * 1000)
            done = clock.now()
        _wait(lambda: all(_resumed(w, done) for w in writers.values()), 30, f"I/O after {kind}")
        time.sleep(0.5)
        for name, w in writers.items():
            out[f"pause_{name}_s"] = _pause(w, t_op, clock.now())
    finally:
        watcher.close()          # the association closes: its registration is run down (MS-SWN 3.1.4.5 / C706)
    # restore: lif1 home on node1
    if kind == "migrate":
        c.post("/v1/lif/revert", {"lif": "lif1"})
    else:
        c.wait_state("node1", "waiting_giveback", timeout=60)
        c.post("/v1/giveback", {"node": "node1"})
    t_back = clock.now()
    _wait(lambda: all(_resumed(w, t_back) for w in writers.values()), 30, "I/O after restore")
    time.sleep(0.5)
    return out


def repetition(i: int, rate: float, base: str) -> list[dict]:
    d = os.path.join(base, f"rep{i}")
    os.makedirs(d)
    c = Cluster(d)
    results = []
    try:
        c.up()
        wait_witnesses(c)
        clock = Clock()
        user, password = next(iter(c.cfg.users.items()))
        writers = {name: KickWriter(name, c.lif["lif1"], c.port, "vol1", user, password, clock, unc_host="SMBND",
                                    rate=rate, blocks=32, block_size=16384, verify_every=10)
                   for name in ("wit", "plain")}
        for w in writers.values():
            w.start()
        _wait(lambda: all(_resumed(w, 0) for w in writers.values()), 30, "first writes")
        for kind in ("migrate", "kill", "hang"):
            results.append(scenario(c, kind, writers, clock))
        for w in writers.values():
            w.finish(60)
        for r in results:
            r["data_verified"] = all(w.summary()["data_verified"] for w in writers.values())
            r["reclaimed"] = all(not w.handle_lost and all(x["reclaimed"] for x in w.records
                                                           if x["op"] == "reconnect") for w in writers.values())
    finally:
        c.down()
    return results


def _stat(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):8.1f} {min(xs):8.1f} {max(xs):8.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rate", type=float, default=50.0, help="writes/s per writer")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="witness-bench-") as base:
        for i in range(args.repeat):
            res = repetition(i, args.rate, base)
            for r in res:
                print(f"rep {i}: {r['kind']:7s} notify {r['notify_ms']:7.1f} ms  op {r['op_ms']} ms  "
                      f"pause wit {r['pause_wit_s']} s plain {r['pause_plain_s']} s  "
                      f"verified {r['data_verified']} reclaimed {r['reclaimed']}", flush=True)
            rows += res
    by = {k: [r for r in rows if r["kind"] == k] for k in ("migrate", "kill", "hang")}
    print(f"\n{len(rows) // 3} repetitions; heartbeat 200 ms x 5 = 1000 ms detection; median / min / max")
    print(f"{'measure':58s} {'median':>8s} {'min':>8s} {'max':>8s}  target")
    mig = [r["notify_ms"] for r in by["migrate"]]
    kill = [r["notify_minus_detection_ms"] for r in by["kill"]]
    lines = [
        ("CLIENT_MOVE after the migrate command (ms)", mig, f"<= {TARGET_MS:.0f}: "
         f"{'met' if mig and max(mig) <= TARGET_MS else 'MISSED'}"),
        ("RESOURCE_CHANGE UNAVAILABLE after the kill (ms)", [r["notify_ms"] for r in by["kill"]], ""),
        ("  ... minus the detection time (ms)", kill, f"<= {TARGET_MS:.0f}: "
         f"{'met' if kill and max(kill) <= TARGET_MS else 'MISSED'}"),
        ("RESOURCE_CHANGE UNAVAILABLE after the hang (ms)", [r["notify_ms"] for r in by["hang"]], ""),
        ("  ... minus the detection time (ms)", [r["notify_minus_detection_ms"] for r in by["hang"]], ""),
    ]
    for k, ev in (("migrate", "lif_moved"), ("kill", "node_down"), ("hang", "node_down")):
        lines.append((f"{k}: notification after the {ev} event (ms)", [r["after_event_ms"] for r in by[k]], ""))
    for k in ("migrate", "kill", "hang"):
        lines.append((f"{k}: operation (ms; kill/hang: fault -> takeover_done)", [r["op_ms"] for r in by[k]], ""))
        for w in ("wit", "plain"):
            lines.append((f"{k}: I/O pause, writer {'with' if w == 'wit' else 'without'} witness (ms)",
                          [r[f"pause_{w}_s"] * 1000 if r[f"pause_{w}_s"] is not None else None for r in by[k]], ""))
    for label, xs, target in lines:
        print(f"{label:58s} {_stat(xs)}  {target}")
    ok = all(r["data_verified"] and r["reclaimed"] for r in rows)
    print(f"data verified and every handle reclaimed (DH2C): {ok}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
