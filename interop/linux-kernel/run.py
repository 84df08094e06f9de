#!/usr/bin/env python3
"""Run the Linux kernel SMB3 client (Debian's cifs.ko) in a qemu guest against a server.

    python3 interop/linux-kernel/run.py --server-cmd "CMD" --port 4455 \
        --share data --user demo --password demo-Passw0rd [--optsets 3.0,3.1.1-seal]
    python3 interop/linux-kernel/run.py --samba          # Samba smbd as the server

What it does:
  1. builds/reuses the cached guest (build.py),
  2. creates a network namespace ``smbk-<pid>`` with a tap device holding the
     host address of --subnet (default 192.168.77.1/24, the guest is .2),
  3. starts the server command inside the namespace (own session, stdout+stderr
     to server.log) and waits until it listens on --port (and, if given, until
     --ready-regex appears in its output),
  4. boots the guest with qemu (-accel tcg) inside the namespace; the test plan
     goes into a per-run initramfs overlay (/plan),
  5. parses ``RESULT <optset> <check> PASS|FAIL|SKIP|INFO <detail>`` lines from
     the serial console, enforces --timeout, stops qemu and the server by PID,
     deletes the namespace and prints/returns a JSON result.

Exit status: 0 when every option set completed with no FAIL, 1 otherwise,
2 on harness errors.  Stdlib only; importable (``run_kernel_client(...)``).
Server command placeholders: {host_ip} {port} {workdir}.
"""
from __future__ import annotations

import argparse
import gzip
import io
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build as guest_build  # noqa: E402
import crash  # noqa: E402

# name -> (mount options after port/user/password, expected dialect, sign, seal)
OPTSETS: dict[str, tuple[str, str, bool, bool]] = {
    "2.1": ("vers=2.1", "0x210", False, False),
    "3.0": ("vers=3.0", "0x300", False, False),
    "3.02": ("vers=3.02", "0x302", False, False),
    "3.1.1": ("vers=3.1.1", "0x311", False, False),
    "3.1.1-seal": ("vers=3.1.1,seal", "0x311", False, True),
    "3.1.1-sign": ("vers=3.1.1,sign", "0x311", True, False),
    "3.0-seal": ("vers=3.0,seal", "0x300", False, True),
    "3.0-sign": ("vers=3.0,sign", "0x300", True, False),
    "default": ("", "", False, False),
    "3.1.1-resilient": ("vers=3.1.1,resilienthandles", "0x311", False, False),
    # needs a server advertising PERSISTENT_HANDLES and a CA share (use --ph-share)
    "3.1.1-ph": ("vers=3.1.1,persistenthandles", "0x311", False, False),
    "3.1.1-ph-seal": ("vers=3.1.1,persistenthandles,seal", "0x311", False, True),
    # 3.1.1-ph plus the crash checks: the host SIGKILLs and restarts the server twice while the
    # guest writes to a file it keeps open (crash_io, crash_verify)
    "3.1.1-ph-crash": ("vers=3.1.1,persistenthandles", "0x311", False, False),
}
CRASH_OPTSETS = {"3.1.1-ph-crash": 2}     # name -> number of server crashes
DEFAULT_OPTSETS = ["3.0", "3.02", "3.1.1", "3.1.1-seal", "3.1.1-sign"]
PH_OPTSETS = {"3.1.1-ph", "3.1.1-ph-seal", "3.1.1-ph-crash"}
CRASH_RE = re.compile(r"^SMBK-CRASH (\S+) (\d+)")
CHECKS = ["mount", "dialect", "signing", "encryption", "mkdir", "write", "size", "readback",
          "md5", "ls", "rename", "small_io", "append", "rm", "rmdir", "umount"]
RESULT_RE = re.compile(r"^RESULT (\S+) (\S+) (PASS|FAIL|SKIP|INFO) ?(.*)$")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class OptSet:
    name: str
    options: str            # mount options appended after port=,username=,password=
    share: str | None = None  # None -> the run's default share
    dialect: str = ""       # expected "0x311" or "" (don't check)
    sign: bool = False      # require a signed session
    seal: bool = False      # require an encrypted session
    crash: int = 0          # server SIGKILL+restarts during the crash_io check (0: no crash check)
    drill: int = 0          # > 0: drill mode (init.sh drill_io) for that many seconds (drill_client.py)
    drill_end: int = 0      # drill mode: stop writing at this unix time (guest RTC), if earlier

    @classmethod
    def parse(cls, spec: str, ph_share: str | None = None) -> "OptSet":
        """'3.1.1-seal' (predefined) or 'NAME=OPTIONS[@SHARE]' (custom)."""
        if "=" not in spec.split("@")[0] or spec in OPTSETS:
            name, _, share = spec.partition("@")
            if name not in OPTSETS:
                raise ValueError(f"unknown option set {name!r}; known: {', '.join(OPTSETS)}")
            opts, dia, sign, seal = OPTSETS[name]
            if not share and name in PH_OPTSETS:
                share = ph_share or ""
            return cls(name, opts, share or None, dia, sign, seal, CRASH_OPTSETS.get(name, 0))
        name, _, rest = spec.partition("=")
        rest, _, crash = rest.partition("!crash=")
        opts, _, share = rest.partition("@")
        o = {k for k in opts.split(",")}
        m = re.search(r"vers=([0-9.]+)", opts)
        dia = {"2.1": "0x210", "3.0": "0x300", "3": "0x300", "3.02": "0x302", "3.0.2": "0x302",
               "3.1.1": "0x311", "3.11": "0x311"}.get(m.group(1), "") if m else ""
        return cls(name, opts, share or None, dia, "sign" in o, "seal" in o, int(crash or 0))


@dataclass
class Result:
    ok: bool = False
    optsets: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    guest: dict = field(default_factory=dict)
    workdir: str = ""
    serial_log: str = ""
    server_log: str = ""
    server_exit: int | None = None
    done: bool = False
    crashes: list = field(default_factory=list)   # server kills asked for by crash_io

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        lines = []
        for name, o in self.optsets.items():
            fails = [f"{c}: {v['detail']}" for c, v in o["checks"].items() if v["status"] == "FAIL"]
            n_pass = sum(1 for v in o["checks"].values() if v["status"] == "PASS")
            lines.append(f"  {name:16s} {'PASS' if o['ok'] else 'FAIL'}  ({n_pass} checks passed"
                         + (f"; FAIL {'; '.join(fails)}" if fails else "") + ")")
        for e in self.errors:
            lines.append(f"  error: {e}")
        t = self.timings
        lines.append("  timings: " + ", ".join(f"{k}={v}s" for k, v in t.items()))
        return ("PASS" if self.ok else "FAIL") + "\n" + "\n".join(lines)


def _sh(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def _listening(pid: int, port: int) -> bool:
    """True if something in *pid*'s network namespace listens on TCP *port*."""
    for f in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{f}") as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, StopIteration, IndexError, ValueError):
            pass
    return False


def _session_members(sid: int) -> list[int]:
    """PIDs whose session id is *sid* (the server and the children it forked)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                st = fh.read()
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[3]) == sid:  # field 6 of stat: session
                pids.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _stop(proc: subprocess.Popen | None, grace: float = 5.0, session: bool = False) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL; optionally its session members."""
    if proc is None:
        return
    pid = proc.pid
    if proc.poll() is None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    if session:
        # children the server forked (e.g. smbd per-connection processes) are in
        # the session we created for it; give them a moment, then kill each by PID
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and _session_members(pid):
            time.sleep(0.1)
        for p in _session_members(pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Netns:
    def __init__(self, name: str, subnet: str, tap: str = "smbk0"):
        self.name = name
        self.tap = tap
        net = ipaddress.ip_network(subnet, strict=False)
        hosts = net.hosts()
        self.host_ip = str(next(hosts))
        self.guest_ip = str(next(hosts))
        self.prefix = net.prefixlen
        self.created = False

    def create(self) -> None:
        if self.name in _sh(["ip", "netns", "list"]).stdout.split():
            _sh(["ip", "netns", "del", self.name], check=False)  # stale one of ours
        _sh(["ip", "netns", "add", self.name])
        self.created = True
        ex = ["ip", "netns", "exec", self.name]
        _sh(ex + ["ip", "link", "set", "lo", "up"])
        _sh(ex + ["ip", "tuntap", "add", "dev", self.tap, "mode", "tap"])
        _sh(ex + ["ip", "addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.tap])
        _sh(ex + ["ip", "link", "set", self.tap, "up"])

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def delete(self) -> None:
        if self.created:
            _sh(["ip", "netns", "del", self.name], check=False)
            self.created = False


def _plan(ns: Netns, port: int, user: str, password: str, share: str,
          optsets: list[OptSet], file_mib: int, run_id: str, crash_wait: int = 75) -> str:
    q = shlex.quote
    # the kernel's mount option parser takes ',,' as a literal comma
    pw = password.replace(",", ",,")
    lines = [
        f"SERVER_IP={q(ns.host_ip)}", f"GUEST_IP={q(ns.guest_ip)}", f"PREFIX={ns.prefix}",
        f"PORT={int(port)}", f"USER={q(user)}", f"PASS={q(pw)}", f"FILE_MIB={int(file_mib)}",
        f"RUN_ID={q(run_id)}", f"NOPTS={len(optsets)}", f"CRASH_WAIT={int(crash_wait)}",
    ]
    for i, o in enumerate(optsets, 1):
        lines += [
            f"OPT_{i}_NAME={q(o.name)}", f"OPT_{i}_SHARE={q(o.share or share)}",
            f"OPT_{i}_OPTS={q(o.options)}", f"OPT_{i}_DIALECT={q(o.dialect)}",
            f"OPT_{i}_SIGN={int(o.sign)}", f"OPT_{i}_SEAL={int(o.seal)}", f"OPT_{i}_CRASH={int(o.crash)}",
            f"OPT_{i}_DRILL={int(o.drill)}", f"OPT_{i}_DRILL_END={int(o.drill_end)}",
        ]
    return "\n".join(lines) + "\n"


def _server_argv(server_cmd, subst: dict) -> list[str]:
    """argv for the server; a string goes through sh -c 'exec ...' unless it is a plain
    word list.  We start the server as leader of a new session (start_new_session), so
    a leading setsid(1) is dropped: it would fork and we would lose the server's PID."""
    if isinstance(server_cmd, (list, tuple)):
        argv = [str(a) for a in server_cmd]
        for k, v in subst.items():
            argv = [a.replace("{" + k + "}", str(v)) for a in argv]
        while argv and os.path.basename(argv[0]) == "setsid":
            argv = argv[1:]
        return argv
    s = str(server_cmd).strip()
    for k, v in subst.items():
        s = s.replace("{" + k + "}", str(v))
    s = re.sub(r"^(exec\s+)?(\S*/)?setsid\s+", "", s)
    if re.search(r"[;&|<>()$`\\\n*?~]", s):
        return ["sh", "-c", "exec " + s]
    return shlex.split(s)


def run_kernel_client(
    server_cmd,
    *,
    port: int = 445,
    share: str = "data",
    user: str = "demo",
    password: str = "demo-Passw0rd",
    optsets: list = None,
    ph_share: str | None = None,
    subnet: str = "192.168.77.0/24",
    timeout: float = 600.0,
    ready_timeout: float = 60.0,
    ready_regex: str | None = None,
    server_cwd: str | None = None,
    server_env: dict | None = None,
    file_mib: int = 4,
    memory_mb: int = 512,
    workdir: str | None = None,
    keep: bool = False,
    verbose: bool = False,
    cache: Path | None = None,
    qemu_extra: list[str] | None = None,
    crash_wait: int = 75,
    network=None,
    crash_hook=None,
    line_hook=None,
) -> Result:
    """Run the guest test plan against ``server_cmd`` and return a Result.

    Cluster mode (interop/linux-kernel/fabric.py): ``network`` replaces the private namespace (an
    object with name/tap/host_ip/guest_ip/prefix, create(), exec_prefix(), delete(); host_ip is the
    server address the guest mounts), ``server_cmd=None`` means the server is already running, and
    ``crash_hook(optset, k) -> dict`` replaces the SIGKILL+restart on the guest's SMBK-CRASH lines.
    ``line_hook(line, unix_time)`` sees every console line as it arrives (drill_client.py)."""
    if os.geteuid() != 0:
        raise PermissionError("run.py needs root (network namespace, tap device)")
    t_start = time.monotonic()
    res = Result()
    specs = optsets or DEFAULT_OPTSETS
    opts = [o if isinstance(o, OptSet) else OptSet.parse(o, ph_share) for o in specs]
    for o in opts:
        if not NAME_RE.match(o.name):
            raise ValueError(f"bad option set name {o.name!r}")
    if len({o.name for o in opts}) != len(opts):
        raise ValueError("duplicate option set names")

    own_workdir = workdir is None
    wd = Path(workdir or tempfile.mkdtemp(prefix="smbk-run-"))
    wd.mkdir(parents=True, exist_ok=True)
    res.workdir = str(wd)

    def say(msg: str) -> None:
        if verbose:
            print(f"[smbk] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    stamp = guest_build.build(cache or guest_build.DEFAULT_CACHE)
    res.timings["build"] = round(time.monotonic() - t0, 2)
    res.guest = {k: stamp.get(k) for k in ("kernel_release", "kernel_package", "busybox_package")}

    run_id = f"{os.getpid()}-{int(time.time()) % 100000}"
    ns = network or Netns(f"smbk-{os.getpid()}", subnet)
    server = qemu = None
    server_log = wd / "server.log"
    serial_log = wd / "serial.log"
    res.server_log, res.serial_log = str(server_log), str(serial_log)

    # cleanup on SIGTERM/SIGINT while we run (restored afterwards)
    old_handlers = {}

    def _on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            old_handlers[s] = signal.signal(s, _on_signal)
    try:
        # ---- per-run initramfs = base + overlay with /plan
        plan = _plan(ns, port, user, password, share, opts, file_mib, run_id, crash_wait)
        (wd / "plan").write_text(plan)
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            w = guest_build.CpioWriter(gz)
            w.add_file("plan", plan.encode(), 0o600)
            w.finish()
        initrd = wd / "initrd.cpio.gz"
        with open(initrd, "wb") as out:
            with open(stamp["initrd"], "rb") as base:
                shutil.copyfileobj(base, out)
            out.write(buf.getvalue())

        # ---- namespace + server
        t0 = time.monotonic()
        ns.create()
        say(f"netns {ns.name}: {ns.tap} {ns.host_ip}/{ns.prefix}, guest {ns.guest_ip}")
        if server_cmd is not None:
            argv, env = _start_server(server_cmd, ns, port, wd, server_env)
            with open(server_log, "wb") as slog:
                server = subprocess.Popen(ns.exec_prefix() + argv, stdin=subprocess.DEVNULL,
                                          stdout=slog, stderr=subprocess.STDOUT, cwd=server_cwd,
                                          env=env, start_new_session=True)
            say(f"server: {shlex.join(argv)}")
            _wait_ready(server, port, server_log, ready_regex, ready_timeout)
            say(f"server pid {server.pid} ready")
        res.timings["server_start"] = round(time.monotonic() - t0, 2)
        crash_lock = threading.Lock()

        def crash_restart(optset: str, k: int) -> None:
            """The guest asked for a server crash (crash.py): SIGKILL, same command again."""
            nonlocal server
            if crash_hook is not None:
                with crash_lock:
                    info = dict(crash_hook(optset, k) or {})
                    res.crashes.append({"optset": optset, "n": k, **info})
                    say(f"crash {k} ({optset}): {info}")
                return
            with crash_lock:
                killed = server.pid
                server, info = crash.kill_and_restart(
                    server, lambda slog: subprocess.Popen(
                        ns.exec_prefix() + argv, stdin=subprocess.DEVNULL, stdout=slog, stderr=subprocess.STDOUT,
                        cwd=server_cwd, env=env, start_new_session=True),
                    port, ready_timeout, server_log, f"{optset} crash {k}", _listening, _session_members)
                res.crashes.append({"optset": optset, "n": k, **info})
                if not info["listening"]:
                    res.errors.append(f"server did not come back after crash {k} of {optset}: "
                                      f"{_tail(server_log, 10)}")
                say(f"crash {k} ({optset}): killed {killed}, server pid {server.pid} back after "
                    f"{info['down_s']}s")

        # ---- guest
        qemu_argv = [
            shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
            "-accel", "tcg", "-cpu", "max", "-m", str(memory_mb), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio",
            "-kernel", stamp["kernel"], "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
            "-netdev", f"tap,id=n0,ifname={ns.tap},script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            *(qemu_extra or []),
        ]
        say("qemu: " + shlex.join(qemu_argv))
        t0 = time.monotonic()
        qemu = subprocess.Popen(ns.exec_prefix() + qemu_argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        optres: dict[str, dict] = {o.name: {"checks": {}, "ok": False, "completed": False,
                                            "share": o.share or share, "options": o.options,
                                            "log": []} for o in opts}
        first_result = [None]

        def reader():
            with open(serial_log, "wb") as slog:
                for raw in qemu.stdout:
                    slog.write(raw)
                    slog.flush()
                    line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
                    if line_hook is not None:
                        line_hook(line, time.time())
                    if verbose and (line.startswith(("RESULT", "BEGIN", "END", "DONE", "LOG", "SMBK"))):
                        print(f"[guest] {line}", file=sys.stderr, flush=True)
                    mc = CRASH_RE.match(line)
                    if mc:
                        threading.Thread(target=crash_restart, args=(mc.group(1), int(mc.group(2))),
                                         daemon=True).start()
                        continue
                    m = RESULT_RE.match(line)
                    if m:
                        name, check, status, detail = m.groups()
                        if first_result[0] is None:
                            first_result[0] = time.monotonic()
                        if name in optres:
                            optres[name]["checks"][check] = {"status": status, "detail": detail}
                        else:
                            optres.setdefault("_guest", {"checks": {}, "ok": True, "completed": True,
                                                         "log": []})["checks"][check] = \
                                {"status": status, "detail": detail}
                    elif line.startswith("END "):
                        n = line.split()[1]
                        if n in optres:
                            optres[n]["completed"] = True
                    elif line.startswith("LOG "):
                        parts = line.split(" ", 2)
                        if len(parts) == 3 and parts[1] in optres:
                            optres[parts[1]]["log"].append(parts[2])
                    elif line.startswith("DONE"):
                        res.done = True

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        remaining = max(1.0, timeout - (time.monotonic() - t_start))
        try:
            qemu.wait(remaining)
        except subprocess.TimeoutExpired:
            res.errors.append(f"timeout after {timeout}s: killed qemu (pid {qemu.pid})")
            _stop(qemu, grace=1)
        th.join(5)
        res.timings["guest"] = round(time.monotonic() - t0, 2)
        if first_result[0]:
            res.timings["guest_boot"] = round(first_result[0] - t0, 2)
        if qemu.returncode not in (0, None) and not res.errors:
            res.errors.append(f"qemu exited with status {qemu.returncode}")
        if not res.done and not res.errors:
            res.errors.append("guest did not finish (no DONE line); see serial log")

        g = optres.pop("_guest", None)
        if g:
            for c, v in g["checks"].items():
                if v["status"] == "FAIL":
                    res.errors.append(f"guest {c}: {v['detail']}")
            res.guest["checks"] = g["checks"]
        for name, o in optres.items():
            st = [v["status"] for v in o["checks"].values()]
            o["ok"] = o["completed"] and "FAIL" not in st and o["checks"].get("mount", {}).get("status") == "PASS"
            spec = next((x for x in opts if x.name == name), None)
            if spec is not None and spec.crash:
                for c in ("crash_io", "crash_verify"):
                    if o["checks"].get(c, {}).get("status") != "PASS":
                        o["ok"] = False
                        o["checks"].setdefault(c, {"status": "FAIL", "detail": "not reported"})
                if sum(1 for x in res.crashes if x["optset"] == name) != spec.crash:
                    o["ok"] = False
                    res.errors.append(f"{name}: {spec.crash} server crashes planned, "
                                      f"{sum(1 for x in res.crashes if x['optset'] == name)} done")
            for c in (("drill_io", "drill_verify") if spec is not None and spec.drill else ()):
                if o["checks"].get(c, {}).get("status") != "PASS":
                    o["ok"] = False
                    o["checks"].setdefault(c, {"status": "FAIL", "detail": "not reported"})
            if not o["completed"]:
                o["checks"].setdefault("completed", {"status": "FAIL", "detail": "option set did not finish"})
        res.optsets = optres
        res.ok = bool(optres) and all(o["ok"] for o in optres.values()) and not res.errors
    except KeyboardInterrupt as e:
        res.errors.append(f"interrupted: {e}")
    except Exception as e:  # noqa: BLE001 - reported in the result
        res.errors.append(f"{type(e).__name__}: {e}")
    finally:
        _stop(qemu, grace=2)
        if server is not None:
            res.server_exit = server.poll()
        _stop(server, grace=5, session=True)
        ns.delete()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        res.timings["total"] = round(time.monotonic() - t_start, 2)
        if own_workdir and res.ok and not keep:
            shutil.rmtree(wd, ignore_errors=True)
            res.workdir = res.serial_log = res.server_log = ""
    return res


def _start_server(server_cmd, ns, port, wd, server_env):
    argv = _server_argv(server_cmd, {"host_ip": ns.host_ip, "port": port, "workdir": wd})
    return argv, dict(os.environ, **(server_env or {}))


def _wait_ready(server, port, server_log, ready_regex, ready_timeout) -> None:
    rx = re.compile(ready_regex) if ready_regex else None
    deadline = time.monotonic() + ready_timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode} before it was "
                               f"ready; log tail:\n{_tail(server_log)}")
        ready = _listening(server.pid, port)
        if ready and rx is not None:
            ready = bool(rx.search(server_log.read_text(errors="replace")))
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready after {ready_timeout}s (port {port}"
                               f"{', regex ' + ready_regex if ready_regex else ''}); log tail:\n"
                               f"{_tail(server_log)}")
        time.sleep(0.05)


def _tail(p: Path, n: int = 30) -> str:
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--server-cmd", help="server command line, run inside the namespace "
                   "(placeholders {host_ip} {port} {workdir})")
    g.add_argument("--samba", action="store_true",
                   help="use Samba smbd (samba_ref.py) as the server; user root")
    ap.add_argument("--port", type=int, default=None, help="server TCP port (default 445, --samba 4455)")
    ap.add_argument("--share", default=None, help="share name (default data)")
    ap.add_argument("--ph-share", default=None, help="share used by the persistent-handle option sets")
    ap.add_argument("--user", default=None)
    ap.add_argument("--password", default=None)
    ap.add_argument("--optsets", default=",".join(DEFAULT_OPTSETS),
                    help="comma list of predefined sets (%s)" % ", ".join(OPTSETS))
    ap.add_argument("--optset", action="append", default=[], metavar="NAME=OPTIONS[@SHARE]",
                    help="extra custom option set, e.g. 'ph=vers=3.1.1,persistenthandles@ca'")
    ap.add_argument("--subnet", default=os.environ.get("SMBK_SUBNET", "192.168.77.0/24"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--ready-timeout", type=float, default=60)
    ap.add_argument("--ready-regex", default=None, help="also wait for this in the server output")
    ap.add_argument("--server-cwd", default=None)
    ap.add_argument("--file-mib", type=int, default=4)
    ap.add_argument("--crash-wait", type=int, default=75,
                    help="crash option sets: seconds the check after a remount may wait for handles the "
                         "client abandoned to expire (above the server's reconnect window)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs) on success")
    ap.add_argument("--json", action="store_true", help="print the full JSON result on stdout")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    optsets = [s for s in args.optsets.split(",") if s] + args.optset
    workdir = args.workdir
    if args.samba:
        import samba_ref
        port = args.port or 4455
        workdir = workdir or tempfile.mkdtemp(prefix="smbk-run-")
        ip = str(next(ipaddress.ip_network(args.subnet, strict=False).hosts()))
        ref = samba_ref.SambaRef(Path(workdir) / "samba", listen_ip=ip, port=port,
                                 password=args.password or samba_ref.DEFAULT_PASSWORD)
        ref.add_share(args.share or "data")
        if args.ph_share:
            ref.add_share(args.ph_share)
        ref.prepare()
        server_cmd, user, password = ref.command(), ref.user, ref.password
        share = args.share or "data"
    else:
        port = args.port or 445
        server_cmd = args.server_cmd
        user = args.user or "demo"
        password = args.password if args.password is not None else "demo-Passw0rd"
        share = args.share or "data"

    res = run_kernel_client(
        server_cmd, port=port, share=share, user=user, password=password,
        optsets=optsets, ph_share=args.ph_share, subnet=args.subnet, timeout=args.timeout,
        ready_timeout=args.ready_timeout, ready_regex=args.ready_regex,
        server_cwd=args.server_cwd, file_mib=args.file_mib, workdir=workdir, crash_wait=args.crash_wait,
        keep=args.keep, verbose=not args.quiet)
    if args.samba and res.ok and not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    print(res.summary(), file=sys.stderr)
    if not res.ok and res.workdir:
        print(f"logs kept in {res.workdir}", file=sys.stderr)
    if res.errors and not res.optsets:
        return 2
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
