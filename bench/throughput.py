"""Sequential read/write throughput of smbnd vs. the reference Samba smbd.

For each server column (default: ``smbnd`` then ``samba``) it starts the server
on a free loopback port (smbnd via ``python -m smbnd serve``; smbd via
interop/samba_ref.py), then with the same clients measures writing and reading
one file of ``--size`` MiB (default 256):

* ``smbprotocol``: one SMB 3.1.1 session, sequential 1 MiB WRITE/READ requests
  (one outstanding request), data checked on read;
* ``smbclient``: ``smbclient -m SMB3 -c 'put ...; get ... /dev/null'`` (Samba's
  own pipelined client), rate as smbclient reports it (excludes connection
  setup);

in three modes: ``plain`` (no signing, no encryption), ``signed`` (AES-128-GMAC
as negotiated by 3.1.1), ``encrypted`` (AES-128-GCM).  Each measurement is
repeated ``--repeat`` times (bounded; the columns' runs interleaved, so load
drift on a shared machine hits all columns alike) and the median is reported
in MB/s (10^6 bytes/s), with the ratio column1/column2.

    python bench/throughput.py                         # smbnd vs samba
    python bench/throughput.py --servers samba,samba   # validate the mechanics
    python bench/throughput.py --servers samba --clients smbclient --modes plain
    python bench/throughput.py --json out.json

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from interop.smbtorture.servers import SambaServer, SmbndServer  # noqa: E402

MIB = 1 << 20
MODES = ("plain", "signed", "encrypted")
CLIENTS = ("smbprotocol", "smbclient")
MAX_REPEAT = 20


# --------------------------------------------------------------------------- smbprotocol
def _smbprotocol_session(info, mode: str):
    from smbprotocol.connection import Ciphers, Connection
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    # 3.1.1 servers (Samba, Windows) insist on a signed TREE_CONNECT, so the
    # session is set up signed in every mode; "plain" then turns signing off
    # for the data requests (what smbclient --client-protection=off does).
    # (Announcing SIGNING_REQUIRED in NEGOTIATE would make the server require
    # signing on the whole session, hence require_signing=False + the flag.)
    conn = Connection(uuid.uuid4(), info.host, info.port, require_signing=(mode == "signed"))
    conn.connect(preferred_encryption_algos=[Ciphers.AES_128_GCM])
    sess = Session(conn, info.user, info.password, require_encryption=(mode == "encrypted"),
                   auth_protocol="ntlm")
    sess.signing_required = True
    sess.connect()
    tree = TreeConnect(sess, rf"\\{info.host}\{info.share}")
    tree.connect()
    if mode == "plain":
        sess.signing_required = False
    return conn, sess, tree


def _describe(conn, sess) -> str:
    from smbprotocol.connection import Ciphers

    parts = [f"dialect 0x{conn.dialect:04x}"]
    if sess.encrypt_data:
        cid = getattr(conn, "cipher_id", None)
        name = {v: k for k, v in vars(Ciphers).items() if isinstance(v, int)}.get(cid, cid)
        parts.append(f"encrypted {name}")
    elif sess.signing_required:
        alg = getattr(conn, "signing_algorithm_id", None)
        name = {0: "HMAC-SHA256", 1: "AES-128-CMAC", 2: "AES-128-GMAC"}.get(alg, alg)
        parts.append(f"signed {name if alg is not None else '(pre-3.1.1 default)'}")
    else:
        parts.append("unsigned")
    return ", ".join(parts)


def bench_smbprotocol(info, mode: str, size_mib: int, chunk: int, repeat: int, log) -> dict:
    from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,
                                  ImpersonationLevel, Open, ShareAccess)

    base = os.urandom(chunk)
    n = size_mib * MIB // chunk
    writes, reads = [], []
    conn, sess, tree = _smbprotocol_session(info, mode)
    desc = _describe(conn, sess)
    try:
        for rep in range(repeat):
            f = Open(tree, f"bench-smbprotocol-{mode}.dat")
            f.create(ImpersonationLevel.Impersonation, 0x12019F,  # GENERIC_READ|WRITE-ish
                     FileAttributes.FILE_ATTRIBUTE_NORMAL,
                     ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
                     CreateDisposition.FILE_OVERWRITE_IF, CreateOptions.FILE_NON_DIRECTORY_FILE)
            try:
                t0 = time.perf_counter()
                for i in range(n):
                    buf = i.to_bytes(8, "little") + base[8:]
                    f.write(buf, i * chunk)
                t1 = time.perf_counter()
                for i in range(n):
                    data = f.read(i * chunk, chunk)
                    if len(data) != chunk or data[:8] != i.to_bytes(8, "little") or data[-64:] != base[-64:]:
                        raise RuntimeError(f"data mismatch at chunk {i}")
                t2 = time.perf_counter()
            finally:
                f.close()
            total = n * chunk
            writes.append(total / (t1 - t0) / 1e6)
            reads.append(total / (t2 - t1) / 1e6)
            log(f"    smbprotocol {mode:9s}: write {writes[-1]:8.1f} MB/s, read {reads[-1]:8.1f} MB/s")
    finally:
        try:
            tree.disconnect()
            sess.disconnect()
        finally:
            conn.disconnect()
    return {"write": statistics.median(writes), "read": statistics.median(reads), "detail": desc,
            "samples": {"write": writes, "read": reads}}


# --------------------------------------------------------------------------- smbclient
_RATE_RE = re.compile(r"^(putting|getting) file .*?\((\d+(?:\.\d+)?) (?:kb/s|KiloBytes/sec)\)")

SMBCLIENT_MODE_ARGS = {
    "plain": ["--client-protection=off"],
    "signed": ["--client-protection=sign",
               "--option=client smb3 signing algorithms=AES-128-GMAC"],
    "encrypted": ["--client-protection=encrypt",
                  "--option=client smb3 encryption algorithms=AES-128-GCM"],
}


def bench_smbclient(info, mode: str, local: Path, repeat: int, log, timeout: float = 600) -> dict:
    smbclient = shutil.which("smbclient")
    if not smbclient:
        raise RuntimeError("smbclient not installed")
    remote = f"bench-smbclient-{mode}.dat"
    cmds = []
    for _ in range(repeat):
        cmds += [f"put {local} {remote}", f"get {remote} /dev/null"]
    argv = [smbclient, f"//{info.host}/{info.share}", "-p", str(info.port), "-m", "SMB3",
            "-U", f"{info.user}%{info.password}", *SMBCLIENT_MODE_ARGS[mode],
            "-c", "; ".join(cmds)]
    with tempfile.TemporaryDirectory() as td:  # private config/cache dirs untouched
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=td,
                           stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    puts, gets = [], []
    for line in (r.stdout + "\n" + r.stderr).splitlines():
        m = _RATE_RE.match(line.strip())
        if m:
            mbps = float(m.group(2)) * 1024 / 1e6  # smbclient reports KiB/s
            (puts if m.group(1) == "putting" else gets).append(mbps)
    if r.returncode != 0 or len(puts) != repeat or len(gets) != repeat:
        raise RuntimeError(f"smbclient failed (rc {r.returncode}, {len(puts)} puts, {len(gets)} gets):\n"
                           f"{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    for i, (p, g) in enumerate(zip(puts, gets)):
        log(f"    smbclient   {mode:9s}: put   {p:8.1f} MB/s, get  {g:8.1f} MB/s")
    size = local.stat().st_size * repeat * 2
    return {"write": statistics.median(puts), "read": statistics.median(gets),
            "detail": f"wall incl. setup {size / wall / 1e6:.0f} MB/s",
            "samples": {"write": puts, "read": gets}}


# --------------------------------------------------------------------------- driver
def start_server(kind: str, workdir: Path, host: str):
    if kind == "samba":
        return SambaServer(workdir=workdir, host=host, torture=False).start()
    if kind == "smbnd":
        return SmbndServer(workdir=workdir, host=host).start()
    raise ValueError(f"unknown server {kind!r} (samba|smbnd)")


def run_all(args, local: Path, log) -> dict:
    """Start every column's server, then for each client/mode run the
    repetitions interleaved (A, B, A, B, ...) so that load drift on a shared
    machine affects all columns alike."""
    cols = [k if args.servers.count(k) == 1 else f"{k}#{i + 1}" for i, k in enumerate(args.servers)]
    results: dict = {c: {} for c in cols}
    samples: dict = {c: {} for c in cols}
    servers: dict = {}
    tmps = []
    try:
        for col, kind in zip(cols, args.servers):
            td = tempfile.TemporaryDirectory(prefix=f"bench-{kind}-", dir=args.workdir_base)
            tmps.append(td)
            srv = start_server(kind, Path(td.name), args.host)
            servers[col] = srv
            log(f"[{col}] pid {srv.pid} on {args.host}:{srv.info().port}")
        for client in args.clients:
            for mode in args.modes:
                key = f"{client}/{mode}"
                for rep in range(args.repeat):
                    for col in cols:
                        if "error" in results[col].get(key, {}):
                            continue
                        srv = servers[col]
                        if not srv.alive():
                            results[col][key] = {"error": "server died: " + srv.log_tail(5)}
                            continue
                        info = srv.info()
                        try:
                            if client == "smbprotocol":
                                r = bench_smbprotocol(info, mode, args.size, args.chunk * 1024, 1,
                                                      lambda s, c=col, n=rep: log(f"[{c} run {n + 1}]{s}"))
                            else:
                                r = bench_smbclient(info, mode, local, 1,
                                                    lambda s, c=col, n=rep: log(f"[{c} run {n + 1}]{s}"))
                        except Exception as e:  # one broken mode must not hide the rest
                            results[col][key] = {"error": f"{type(e).__name__}: {e}"}
                            log(f"[{col}] {key}: ERROR {results[col][key]['error'].splitlines()[0]}")
                            continue
                        sm = samples[col].setdefault(key, {"write": [], "read": []})
                        sm["write"] += r["samples"]["write"]
                        sm["read"] += r["samples"]["read"]
                        results[col][key] = {"detail": r["detail"], "samples": sm}
                for col in cols:
                    r = results[col].get(key, {})
                    if "samples" in r:
                        r["write"] = statistics.median(r["samples"]["write"])
                        r["read"] = statistics.median(r["samples"]["read"])
    finally:
        for srv in servers.values():
            srv.stop()
        for td in tmps:
            td.cleanup()
    return results


def fmt(v) -> str:
    return f"{v:9.1f}" if isinstance(v, (int, float)) else f"{'ERR':>9s}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SMB throughput: smbnd vs Samba smbd (loopback)")
    ap.add_argument("--servers", default="smbnd,samba",
                    help="comma list of columns: smbnd|samba (ratio = first/second)")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--size", type=int, default=256, help="file size, MiB")
    ap.add_argument("--chunk", type=int, default=1024, help="smbprotocol request size, KiB")
    ap.add_argument("--repeat", type=int, default=3, help=f"runs per measurement (max {MAX_REPEAT})")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--workdir-base", default=None,
                    help="where server work dirs/shares go (default: $TMPDIR); e.g. /dev/shm "
                         "to take the disk out of the measurement")
    ap.add_argument("--json", help="also write results here")
    ap.add_argument("--quiet", "-q", action="store_true")
    args = ap.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.repeat = max(1, min(args.repeat, MAX_REPEAT))
    if not args.host.startswith("127."):
        ap.error("loopback only (127.0.0.0/8)")
    for c in args.clients:
        if c not in CLIENTS:
            ap.error(f"unknown client {c}")
    for m in args.modes:
        if m not in MODES:
            ap.error(f"unknown mode {m}")

    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="bench-local-", dir=args.workdir_base) as td:
        local = Path(td) / "local.dat"
        if "smbclient" in args.clients:
            block = os.urandom(MIB)
            with open(local, "wb") as f:
                for i in range(args.size):
                    f.write(i.to_bytes(8, "little") + block[8:])
        results = run_all(args, local, log)

    cols = list(results)
    head = f"{'client':12s} {'mode':10s} {'op':6s}" + "".join(f" {c + ' MB/s':>14s}" for c in cols)
    if len(cols) >= 2:
        head += f" {'ratio ' + cols[0] + '/' + cols[1]:>22s}"
    print(f"sequential {args.size} MiB file, median of {args.repeat}, MB = 10^6 bytes")
    print(head)
    print("-" * len(head))
    for client in args.clients:
        for mode in args.modes:
            key = f"{client}/{mode}"
            for op in ("write", "read"):
                vals = [results[c].get(key, {}).get(op) for c in cols]
                row = f"{client:12s} {mode:10s} {op:6s}" + "".join(f" {fmt(v):>14s}" for v in vals)
                if len(cols) >= 2:
                    a, b = vals[0], vals[1]
                    row += f" {(a / b if isinstance(a, float) and isinstance(b, float) and b else float('nan')):22.2f}"
                print(row)
    for c in cols:
        for key, r in results[c].items():
            if "error" in r:
                print(f"{c} {key}: {r['error'].splitlines()[0]}")
            elif r.get("detail"):
                print(f"{c} {key}: {r['detail']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
