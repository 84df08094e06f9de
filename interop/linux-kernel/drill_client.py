#!/usr/bin/env python3
"""The Linux kernel client as a drill client (``kind: external``, smbnd/drill/external.py).

Boots the qemu guest (run.py) on the fabric bridge of a netns cluster (fabric.py), in drill mode:
the guest mounts ``//<LIF address>/<share>`` with ``vers=3.1.1,persistenthandles``, keeps one file
open and appends + fsyncs a 64 KiB block every ~100 ms until the drill's end (init.sh ``drill_io``),
then verifies the whole file after dropping its page cache. Each guest I/O line becomes one JSON I/O
record on stdout (the external-client protocol); the read-back is one ``read`` record per MiB; a
``summary`` line closes. Everything else goes to stderr (the runner's ``client-<name>.log``).

Time mapping: the guest stamps its I/O with its uptime (/proc/uptime, 10 ms). The host notes the
unix time each console line arrives; an I/O ended before its line arrived, so
``offset = min(arrival - guest time)`` over all lines (the ``DSYNC`` line at the writer's start and
every I/O end) is the tightest estimate of host = guest + offset (serial latency: ~1 ms).

Arguments default to the runner's environment (``DRILL_CONFIG DRILL_ADDRESS DRILL_PORT DRILL_SHARE
DRILL_USER DRILL_PASSWORD DRILL_DURATION DRILL_T0 DRILL_OUT``)::

    {python} ../interop/linux-kernel/drill_client.py --config {config} --address {address} --share {share}

Needs root, /dev/net/tun and qemu (see README.md); the cluster must use ``lif_backend = "netns"``.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))        # the checkout holding smbnd/

DSYNC_RE = re.compile(r"^DSYNC (\S+) ([0-9.]+) (\d+)")
DIO_RE = re.compile(r"^DIO (\S+) (\d+|r\d+) ([0-9.]+) ([0-9.]+) (ok|err) ?(.*)$")
DONE_RE = re.compile(r"^DRILL-DONE (\S+) blocks=(\d+) errors=(\d+) verified=(yes|no)(?: reconnects=(\d*))?")
OPTSET = "drill-ph"
OPTIONS = "vers=3.1.1,persistenthandles"
BLOCKS_PER_S = 10       # at most: one 64 KiB block per ~100 ms (init.sh drill_io sleeps 0.1 s per I/O)


def log(msg: str) -> None:
    print(f"[drill_client] {msg}", file=sys.stderr, flush=True)


class Translator:
    """Guest console lines -> JSON I/O records (unix times) on ``out``."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.offset: float | None = None     # host unix time - guest uptime
        self.lock = threading.Lock()
        self.ios = self.errors = 0
        self.done: dict | None = None
        self.verified: bool | None = None
        self.first_arrival: float | None = None

    def _sync(self, guest_t: float, arrival: float) -> None:
        o = arrival - guest_t
        if self.offset is None or o < self.offset:
            self.offset = o

    def line(self, line: str, arrival: float) -> None:
        try:
            with self.lock:
                self._line(line, arrival)
        except Exception as e:  # noqa: BLE001 - never kill run.py's console reader
            log(f"bad guest line {line!r}: {type(e).__name__}: {e}")

    def _line(self, line: str, arrival: float) -> None:
        m = DSYNC_RE.match(line)
        if m:
            self._sync(float(m.group(2)), arrival)
            self.first_arrival = arrival
            log(f"guest writer started: uptime {m.group(2)} s, guest RTC {m.group(3)}, host {arrival:.3f} "
                f"(RTC - host = {int(m.group(3)) - arrival:+.1f} s)")
            return
        m = DIO_RE.match(line)
        if m:
            _, n, gs, ge, st, detail = m.groups()
            gs, ge = float(gs), float(ge)
            self._sync(ge, arrival)
            ok = st == "ok"
            rec = {"op": "read" if n.startswith("r") else "write", "start": round(gs + self.offset, 4),
                   "end": round(ge + self.offset, 4), "status": "ok" if ok else (detail or "EIO")[:200],
                   "guest_start": gs, "guest_end": ge}
            if n.startswith("r"):                # read-back, MiB by MiB, after the writer
                self.verified = ok and self.verified is not False
                rec.update(chunk=int(n[1:]), bytes=1 << 20, what="verify (page cache dropped)")
            else:
                rec.update(block=int(n), bytes=65536, fsync=True)
                self.ios += 1
                self.errors += 0 if ok else 1
            print(json.dumps(rec), file=self.out, flush=True)
            return
        m = DONE_RE.match(line)
        if m:
            self.done = {"blocks": int(m.group(2)), "errors": int(m.group(3)), "verified": m.group(4) == "yes",
                         "reconnects": int(m.group(5)) if m.group(5) else None}
            log(f"guest verdict: {self.done}")
            return


def guest_address(lif_ip: str, prefix: int, taken: set[str], want: str | None) -> str:
    net = ipaddress.ip_network(f"{lif_ip}/{prefix}", strict=False)
    if want:
        if ipaddress.ip_address(want) not in net or want in taken:
            raise SystemExit(f"--guest-ip {want}: not a free address of {net}")
        return want
    for last in range(200, 250):            # bounded: first free .200-.249 of the LIF's subnet
        cand = str(net.network_address + last)
        if ipaddress.ip_address(cand) in net and cand not in taken:
            return cand
    raise SystemExit(f"no free guest address in {net}")


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=env("DRILL_CONFIG"), help="cluster TOML (netns backend)")
    ap.add_argument("--address", default=env("DRILL_ADDRESS"), help="LIF address the guest mounts")
    ap.add_argument("--port", type=int, default=int(env("DRILL_PORT") or 445))
    ap.add_argument("--share", default=env("DRILL_SHARE"), help="a CA volume")
    ap.add_argument("--user", default=env("DRILL_USER", "demo"))
    ap.add_argument("--password", default=env("DRILL_PASSWORD", ""))
    ap.add_argument("--duration", type=float, default=float(env("DRILL_DURATION") or 30))
    ap.add_argument("--t0", type=float, default=float(env("DRILL_T0") or 0),
                    help="the drill's t = 0 (unix time); the guest writes until t0 + duration")
    ap.add_argument("--out", default=env("DRILL_OUT") or ".", help="the guest's logs go to OUT/guest-NAME")
    ap.add_argument("--name", default="kernel")
    ap.add_argument("--guest-ip", default=None)
    ap.add_argument("--memory-mb", type=int, default=512)
    a = ap.parse_args(argv)
    for k in ("config", "address", "share"):
        if not getattr(a, k):
            ap.error(f"--{k} (or DRILL_{k.upper()}) is required")

    import run
    from fabric import FabricNet
    from smbnd.cluster.lif import fabric_for
    from smbnd.cluster.model import load_cluster

    cfg = load_cluster(a.config)
    if cfg.lif_backend != "netns":
        raise SystemExit(f"{a.config}: lif_backend is {cfg.lif_backend!r}; the guest needs the netns backend")
    lif = next((x for x in cfg.lifs.values() if x.address == a.address), None)
    if lif is None:
        raise SystemExit(f"{a.address} is not a LIF address of {a.config}")
    taken = {x.address for x in cfg.lifs.values()} | {n.interconnect.rpartition(":")[0] for n in cfg.nodes.values()}
    gip = guest_address(a.address, lif.prefix_len, taken, a.guest_ip)
    fab = fabric_for(cfg)

    now = time.time()
    end = (a.t0 or now) + a.duration
    secs = max(5, math.ceil(end - now))          # the guest stops at `end` (its RTC) or after secs
    file_mib = math.ceil(secs * BLOCKS_PER_S / 16) + 1
    wd = Path(a.out) / f"guest-{a.name}"
    log(f"guest {gip} on {fab.fabric}/br0 mounts //{a.address}/{a.share} ({OPTIONS}); writes until "
        f"{end:.1f} (<= {secs} s), source {file_mib} MiB; logs {wd}")
    tr = Translator()
    opt = run.OptSet(OPTSET, OPTIONS, a.share, "0x311", drill=secs, drill_end=math.ceil(end))
    res = run.run_kernel_client(
        None, port=a.port, share=a.share, user=a.user, password=a.password, optsets=[opt],
        timeout=secs + 300, file_mib=file_mib, memory_mb=a.memory_mb, workdir=str(wd), keep=True,
        network=FabricNet(fab.fabric, a.address, gip, lif.prefix_len), line_hook=tr.line, verbose=True)
    log(res.summary())
    o = res.optsets.get(OPTSET, {})
    notes = [f"Linux {res.guest.get('kernel_release')} cifs.ko in qemu (TCG), {OPTIONS}, guest {gip}"]
    if tr.first_arrival is not None and a.t0:
        notes.append(f"guest writer started at t = {tr.first_arrival - a.t0:.2f} s")
    notes.append(f"cifs.ko session reconnects (/proc/fs/cifs/Stats): {(tr.done or {}).get('reconnects')}; "
                 "handle reclaims are not visible from the guest (the server's handle stores hold them)")
    notes += [f"guest check {c}: {v['status']} {v['detail']}" for c, v in o.get("checks", {}).items()
              if v["status"] == "FAIL"]
    notes += [f"harness: {e}" for e in res.errors]
    verified = bool(tr.verified) and bool(tr.done and tr.done["verified"]) and not tr.errors
    print(json.dumps({"type": "summary", "data_verified": verified, "reconnects": (tr.done or {}).get("reconnects"),
                      "ios": tr.ios, "io_errors": tr.errors, "guest": res.guest.get("kernel_release"),
                      "guest_ok": res.ok, "notes": notes}), flush=True)
    return 0 if res.ok and verified else 1


if __name__ == "__main__":
    sys.exit(main())
