"""The built-in writer/verifier as an external client process (the ``kind: external`` protocol of
``external.py``): prints one JSON I/O record per line (unix times) and a final summary line.

    python -m smbnd.drill.ext_writer --address {address} --port {port} --share {share} \\
        --user {user} --password {password} --duration {duration}

Also a template for wrapping other clients (a kernel-client guest, a Windows VM agent): whatever
runs, emit ``{"op", "start", "end", "status"}`` per I/O and ``{"type": "summary", ...}`` at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .workload import Clock, WriterVerifier


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smbnd.drill.ext_writer")
    ap.add_argument("--address", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--share", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", default=os.environ.get("DRILL_PASSWORD", ""))
    ap.add_argument("--duration", type=float, required=True, help="seconds of writing")
    ap.add_argument("--name", default="ext")
    ap.add_argument("--netname", default="")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--block-size", type=int, default=65536)
    ap.add_argument("--blocks", type=int, default=64)
    a = ap.parse_args(argv)
    clock = Clock()
    w = WriterVerifier(a.name, a.address, a.port, a.share, a.user, a.password, clock, unc_host=a.netname,
                       block_size=a.block_size, blocks=a.blocks, rate=a.rate).start()
    deadline = time.monotonic() + a.duration
    while time.monotonic() < deadline and w._thread.is_alive():
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    w.finish(180.0)
    for r in w.records:
        out = {**r, "start": round(clock.t0_wall + r["start"], 6), "end": round(clock.t0_wall + r["end"], 6),
               "status": "ok" if r["ok"] else r["status"]}
        print(json.dumps(out))
    s = w.summary()
    print(json.dumps({"type": "summary", "data_verified": s["data_verified"], "handle_lost": s["handle_lost"],
                      "reconnects": s["reconnects"], "notes": s["notes"]}), flush=True)
    return 0 if s["data_verified"] and not s["handle_lost"] and not s["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
