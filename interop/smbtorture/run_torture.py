"""Run smbtorture suites against a server and check/record expectations.

Examples (from the repository root)::

    # against an already running server, check an expectations file
    python -m interop.smbtorture.run_torture --port 4450 --share tmp \\
        -U smbtest%Passw0rd --user2 smbtest2%Passw0rd2 \\
        --expectations interop/smbtorture/expectations/smbnd-core.txt

    # start the reference smbd itself and (re)record its baseline
    python -m interop.smbtorture.run_torture --server samba \\
        --expectations interop/smbtorture/expectations/samba-4.17-reference.txt --record \\
        --suite smb2.connect --suite smb2.read ...

    # start smbnd (python -m smbnd serve ...) and check
    python -m interop.smbtorture.run_torture --server smbnd \\
        --expectations interop/smbtorture/expectations/smbnd-core.txt

Exit status: 0 ok, 1 regressions (a PASS test failed or went missing),
2 usage / infrastructure error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from interop.smbtorture import expectations as ex
from interop.smbtorture.subunit import parse

SMBTORTURE = shutil.which("smbtorture") or "/usr/bin/smbtorture"

CORE_SUITES = [
    "smb2.connect", "smb2.read", "smb2.rw", "smb2.dir", "smb2.getinfo", "smb2.setinfo",
    "smb2.create", "smb2.lock", "smb2.notify", "smb2.compound", "smb2.credits", "smb2.ioctl",
]
DEFAULT_TIMEOUT = 600.0
# suites smbtorture must run against a continuously available share: smb2.replay.replay5 replays a
# persistent open (skipped without SMB2_SHARE_CAP_CONTINUOUS_AVAILABILITY and PERSISTENT_HANDLES);
# no other replay test looks at the share's flags. With --server smbnd they get a server whose
# share is CA (the other suites keep the plain share: PERSISTENT_HANDLES is server-wide).
CA_SUITES = frozenset({"smb2.replay"})


@dataclass
class SuiteRun:
    suite: str
    results: dict[str, tuple[str, str]] = field(default_factory=dict)  # full id -> (result, reason)
    duration: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""
    argv: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(r for r, _ in self.results.values())

    def summary(self) -> str:
        c = self.counts()
        n = len(self.results)
        s = (f"{c['success'] + c['uxsuccess']}/{n} pass, {c['failure'] + c['error']} fail, "
             f"{c['skip']} skip")
        if self.timed_out:
            s += ", TIMED OUT"
        return s + f"; {self.duration:.1f} s"


def torture_argv(
    suite: str, host: str, port: int, share: str, user: str, password: str,
    user2: str | None = None, password2: str | None = None,
    options: list[str] | None = None, extra_args: list[str] | None = None,
) -> list[str]:
    argv = [SMBTORTURE, f"//{host}/{share}", "-p", str(port), "-U", f"{user}%{password}",
            "--format=subunit"]
    if user2:
        argv += [f"--option=torture:user2name={user2}",
                 f"--option=torture:user2password={password2 or ''}"]
    for o in options or []:
        argv.append(f"--option={o}")
    argv += list(extra_args or [])
    argv.append(suite)
    return argv


def _invoke(argv: list[str], timeout: float) -> tuple[str, str, int | None, bool, float]:
    """Run smbtorture; on timeout kill it by PID. -> (stdout, stderr, rc, timed_out, secs)"""
    timed_out = False
    with tempfile.TemporaryDirectory(prefix="torture-") as td:
        out_p, err_p = Path(td) / "out", Path(td) / "err"
        with open(out_p, "wb") as out, open(err_p, "wb") as err:
            t0 = time.monotonic()
            # own session: smbtorture gets no signals meant for us, and we
            # only ever signal its own PID.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    cwd=td, start_new_session=True)
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        os.kill(proc.pid, signal.SIGKILL)
                        proc.wait(5)
                except ProcessLookupError:
                    pass
                rc = proc.returncode
            secs = time.monotonic() - t0
        return (out_p.read_text(errors="replace"), err_p.read_text(errors="replace"), rc,
                timed_out, secs)


_LIST_CACHE: list[str] | None = None


def suite_test_ids(suite: str) -> list[str]:
    """Test ids (``<suite>.<subunit id>``) of a suite, from ``smbtorture --list``.

    --list prints ``<suite>.<tcase>.<test>``; single-test tcases repeat the
    name (``smb2.rw.invalid.invalid``), which subunit reports once."""
    global _LIST_CACHE
    if _LIST_CACHE is None:
        r = subprocess.run([SMBTORTURE, "--list"], capture_output=True, text=True, timeout=60)
        _LIST_CACHE = [x.strip() for x in r.stdout.splitlines() if x.strip()]
    out = []
    for name in _LIST_CACHE:
        if name.startswith(suite + "."):
            parts = name[len(suite) + 1:].split(".")
            if len(parts) >= 2 and parts[-1] == parts[-2]:
                parts = parts[:-1]
            out.append(suite + "." + ".".join(parts))
    return out


def run_suite(
    suite: str, host: str, port: int, share: str, user: str, password: str,
    user2: str | None = None, password2: str | None = None,
    options: list[str] | None = None, extra_args: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT, log_dir: str | os.PathLike | None = None,
    resume_after_timeout: bool = True, test_timeout: float = 60.0,
) -> SuiteRun:
    """Run one smbtorture suite; ids are returned as ``<suite>.<subunit id>``.

    On timeout smbtorture is killed by PID; the test that was running is
    reported as ``error`` with reason "timeout", and a test that started but
    never reported (crash) as ``error``.  With ``resume_after_timeout`` the
    tests the suite did not reach are then run one by one (``test_timeout``
    each, at most ``timeout`` in total) so that one hanging test does not hide
    the rest."""
    argv = torture_argv(suite, host, port, share, user, password, user2, password2,
                        options, extra_args)
    run = SuiteRun(suite, argv=argv)
    run.stdout, run.stderr, run.returncode, run.timed_out, run.duration = _invoke(argv, timeout)
    logs = [(suite, run.stdout, run.stderr)]
    parsed = parse(run.stdout)
    for tid in parsed.order:
        if tid in parsed.results:
            run.results[f"{suite}.{tid}"] = parsed.results[tid]
    if parsed.unfinished is not None:
        why = (f"timeout after {timeout:.0f} s" if run.timed_out
               else f"no result (smbtorture exited with {run.returncode})")
        run.results[f"{suite}.{parsed.unfinished}"] = ("error", why)
    if run.timed_out and resume_after_timeout:
        budget = timeout
        for tid in suite_test_ids(suite):
            if tid in run.results:
                continue
            if budget <= 0:
                run.results[tid] = ("error", "not run: resume budget exhausted")
                continue
            t = min(test_timeout, budget)
            targv = argv[:-1] + [tid]
            out, err, rc, tout, secs = _invoke(targv, t)
            budget -= secs
            run.duration += secs
            logs.append((tid, out, err))
            p = parse(out)
            got = [p.results[x] for x in p.order if x in p.results]
            if len(got) == 1:
                run.results[tid] = got[0]
            elif tout:
                run.results[tid] = ("error", f"timeout after {t:.0f} s (run alone)")
            else:
                run.results[tid] = ("error", f"run alone: {len(got)} results, rc {rc}")
    if log_dir:
        ld = Path(log_dir)
        ld.mkdir(parents=True, exist_ok=True)
        (ld / f"{suite}.subunit").write_text(
            "".join(f"### {name}\n{o}" if i else o for i, (name, o, _e) in enumerate(logs)))
        (ld / f"{suite}.stderr").write_text(
            "".join(f"### {name}\n{e}" if i else e for i, (name, _o, e) in enumerate(logs)))
    if not run.results:
        # nothing at all: smbtorture could not even start the suite
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        run.results[f"{suite}"] = ("error", "suite produced no results: " + " | ".join(tail))
    return run


def run_suites(suites: list[str], **kw) -> dict[str, SuiteRun]:
    return {s: run_suite(s, **kw) for s in suites}


def _split_cred(s: str) -> tuple[str, str]:
    if "%" in s:
        u, p = s.split("%", 1)
    elif ":" in s:
        u, p = s.split(":", 1)
    else:
        u, p = s, ""
    return u, p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", choices=["none", "samba", "smbnd"], default="none",
                    help="start this server for the run (default: use --host/--port)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=None, help="default 445 / a free port if --server")
    ap.add_argument("--share", default="tmp")
    ap.add_argument("-U", "--user", default="smbtest%Passw0rd", metavar="USER%PASS")
    ap.add_argument("--user2", default="smbtest2%Passw0rd2", metavar="USER%PASS",
                    help="torture:user2name/user2password ('' to omit)")
    ap.add_argument("--suite", action="append", default=[],
                    help="suite to run (repeatable); default: the expectations file's "
                         "suites, else the 12 core smb2 suites")
    ap.add_argument("--expectations", "-e", help="expectations file to check (or write with --record)")
    ap.add_argument("--record", action="store_true", help="write/update the expectations file")
    ap.add_argument("--label", default=None, help="label for the per-suite notes in --record")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra smbtorture --option (e.g. torture:smbd=false)")
    ap.add_argument("--torture-arg", action="append", default=[],
                    help="extra raw smbtorture argument (e.g. -T w2k12)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="per-suite timeout, s")
    ap.add_argument("--test-timeout", type=float, default=60.0,
                    help="after a suite timeout, tests not reached are run one by one with this timeout")
    ap.add_argument("--no-resume", action="store_true", help="do not run unreached tests after a timeout")
    ap.add_argument("--log-dir", help="keep raw subunit/stderr per suite here")
    ap.add_argument("--fresh-server", action="store_true",
                    help="with --server: a new server (and share) for every suite")
    ap.add_argument("--ca", action="store_true",
                    help="with --server smbnd: make the share continuously available (persistent handles)")
    ap.add_argument("--no-ca-suites", action="store_true",
                    help="with --server smbnd: run the CA suites (%s) on the plain share too"
                         % ", ".join(sorted(CA_SUITES)))
    ap.add_argument("--server-arg", action="append", default=None, metavar="ARG",
                    help="with --server smbnd: extra 'smbnd serve' argument (repeatable)")
    ap.add_argument("--verbose", "-v", action="store_true")
    a = ap.parse_args(argv)

    if not Path(SMBTORTURE).exists():
        print(f"smbtorture not found ({SMBTORTURE})", file=sys.stderr)
        return 2

    exp = None
    if a.expectations and Path(a.expectations).exists():
        exp = ex.Expectations.load(a.expectations)
    elif a.expectations and not a.record:
        print(f"no such expectations file: {a.expectations}", file=sys.stderr)
        return 2
    suites = a.suite or (exp.all_suites() if exp and exp.entries else CORE_SUITES)

    user, password = _split_cred(a.user)
    user2, password2 = _split_cred(a.user2) if a.user2 else (None, None)

    from interop.smbtorture.servers import make_server  # noqa: E402 (needs interop.samba_ref)

    server = None

    def new_server(ca: bool, port: int | None):
        kw = {}
        if a.server == "smbnd":
            if ca:
                kw["share_flags"] = ":ca"
            if a.server_arg is not None:
                kw["extra_args"] = a.server_arg
        srv = make_server(a.server, host=a.host, port=port, share=a.share,
                          user=(user, password), user2=(user2 or "smbtest2", password2 or "Passw0rd2"), **kw)
        srv.start()
        return srv

    def start_server():
        nonlocal server
        server = new_server(a.ca, a.port)
        return server

    def ca_server_for(suite: str):
        """A server of its own (CA share) for a CA suite, unless every suite runs on one."""
        if a.server != "smbnd" or a.ca or a.no_ca_suites or suite not in CA_SUITES:
            return None
        srv = new_server(True, None)     # a free port: the main server may hold --port
        print(f"started smbnd pid {srv.pid} on {a.host}:{srv.port} with a CA share for {suite}", flush=True)
        return srv

    runs: dict[str, SuiteRun] = {}
    try:
        port = a.port or 445
        if a.server != "none" and not a.fresh_server:
            port = start_server().port
            print(f"started {a.server} pid {server.pid} on {a.host}:{port}", flush=True)
        for suite in suites:
            ca_srv = ca_server_for(suite)
            if ca_srv is None and a.server != "none" and a.fresh_server:
                port = start_server().port
            elif ca_srv is None and a.server != "none" and not server.alive():
                print(f"server died; restarting\n{server.log_tail()}", flush=True)
                server.stop()
                port = start_server().port
            try:
                r = run_suite(suite, a.host, ca_srv.port if ca_srv else port, a.share, user, password,
                              user2, password2, options=a.option, extra_args=a.torture_arg,
                              timeout=a.timeout, log_dir=a.log_dir,
                              resume_after_timeout=not a.no_resume, test_timeout=a.test_timeout)
            finally:
                if ca_srv is not None:
                    ca_srv.stop()
            runs[suite] = r
            print(f"{suite:20s} {r.summary()}", flush=True)
            if a.verbose:
                for tid, (res, why) in r.results.items():
                    print(f"    {res:9s} {tid}" + (f"  -- {why.splitlines()[0]}" if why and res != "success" else ""))
            if a.server != "none" and a.fresh_server and ca_srv is None:
                server.stop()
    finally:
        if server is not None:
            server.stop()

    total = Counter()
    for r in runs.values():
        total.update(r.counts())
    print(f"{'total':20s} {total['success'] + total['uxsuccess']}/{sum(total.values())} pass, "
          f"{total['failure'] + total['error']} fail, {total['skip']} skip; "
          f"{sum(r.duration for r in runs.values()):.1f} s")

    if a.record:
        if not a.expectations:
            print("--record needs --expectations FILE", file=sys.stderr)
            return 2
        label = a.label or a.server
        notes = {s: f"{r.summary()} ({label})" for s, r in runs.items()}
        header = exp.header if exp and exp.header else [
            "# smbtorture expectations: PASS <id> | FAIL <id> # reason | SKIP <id> # reason",
            "# Written by: python -m interop.smbtorture.run_torture --record; edit reasons by hand.",
        ]
        text = ex.render({s: r.results for s, r in runs.items()}, previous=exp, header=header,
                         suite_notes=notes)
        Path(a.expectations).parent.mkdir(parents=True, exist_ok=True)
        Path(a.expectations).write_text(text)
        print(f"wrote {a.expectations}")
        return 0

    if exp is not None:
        expected: dict[str, ex.Entry] = {}
        for s in runs:
            expected.update(exp.for_suite(s))
        results = {tid: res for r in runs.values() for tid, res in r.results.items()}
        rep = ex.check(expected, results)
        print(rep.format())
        return 1 if rep.failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
