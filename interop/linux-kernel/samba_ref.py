#!/usr/bin/env python3
"""Samba smbd as a private reference SMB server (no system state touched).

Everything lives under one work dir: smb.conf, private/lock/state/cache/pid/
ncalrpc dirs, the passdb (tdbsam in private/) and, unless given, the share
directories.  The user (default root, which must exist in /etc/passwd) is added
with ``smbpasswd -c CONF -s -a USER``.

Library use (what run.py --samba does)::

    ref = SambaRef("/tmp/w", listen_ip="192.168.77.1", port=4455)
    ref.add_share("data")               # path defaults to /tmp/w/shares/data
    ref.prepare()                       # writes smb.conf, adds the user
    argv = ref.command()                # ['smbd', '-F', '--no-process-group', ...]

Start ``argv`` in its own session (``setsid smbd ...`` or Popen(start_new_session=True)):
without that, smbd's exit can kill the shell that started it.  Stop it by its PID.

CLI::

    python3 samba_ref.py --workdir /tmp/w --listen 192.168.77.1:4455 --share data \\
        [--share ca=/some/dir] [--user root:PASS] [--exec]

prints the command (or, with --exec, becomes smbd in a new session, keeping the PID).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_PASSWORD = "Smbk-Passw0rd"
SMBD = shutil.which("smbd") or "/usr/sbin/smbd"
SMBPASSWD = shutil.which("smbpasswd") or "/usr/bin/smbpasswd"


def ensure_samba() -> None:
    """Install Debian's samba package if smbd is missing (waits for the dpkg lock)."""
    if os.path.exists(SMBD) or shutil.which("smbd"):
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import build
    build._apt_update_once()
    build._apt(["install", "-y", "--no-install-recommends", "samba"])


class SambaRef:
    def __init__(self, workdir, listen_ip: str = "127.0.0.1", port: int = 445,
                 user: str = "root", password: str = DEFAULT_PASSWORD,
                 extra_global: dict | None = None, torture_fidelity: bool = False):
        self.workdir = Path(workdir).resolve()
        self.listen_ip = listen_ip
        self.port = int(port)
        self.user = user
        self.password = password
        self.shares: dict[str, tuple[Path, dict]] = {}
        self.extra_global = dict(extra_global or {})
        self.torture_fidelity = torture_fidelity

    @property
    def conf(self) -> Path:
        return self.workdir / "smb.conf"

    def add_share(self, name: str, path=None, **params) -> Path:
        p = Path(path) if path else self.workdir / "shares" / name
        self.shares[name] = (p, params)
        return p

    def config_text(self) -> str:
        w = self.workdir
        g = {
            "workgroup": "SMBK",
            "netbios name": "SMBKREF",
            "server role": "standalone server",
            "smb ports": str(self.port),
            "interfaces": self.listen_ip,
            "bind interfaces only": "yes",
            "disable netbios": "yes",
            "private dir": str(w / "private"),
            "lock directory": str(w / "lock"),
            "state directory": str(w / "state"),
            "cache directory": str(w / "cache"),
            "pid directory": str(w / "pid"),
            "ncalrpc dir": str(w / "ncalrpc"),
            "log file": str(w / "log" / "log.%m"),
            "log level": "1",
            "passdb backend": f"tdbsam:{w / 'private' / 'passdb.tdb'}",
            "load printers": "no",
            "printing": "bsd",
            "printcap name": "/dev/null",
            "disable spoolss": "yes",
            "server min protocol": "SMB2_02",
            "server signing": "auto",
            "server smb encrypt": "if_required",
            "map to guest": "never",
            "restrict anonymous": "2",
            "kernel change notify": "no",
        }
        if self.torture_fidelity:
            g.update({"vfs objects": "acl_xattr xattr_tdb streams_depot",
                      "kernel oplocks": "no", "kernel share modes": "no", "posix locking": "no"})
        g.update(self.extra_global)
        out = ["[global]"] + [f"\t{k} = {v}" for k, v in g.items()]
        for name, (path, params) in self.shares.items():
            out += ["", f"[{name}]", f"\tpath = {path}", "\tread only = no",
                    "\tguest ok = no", f"\tvalid users = {self.user}"]
            out += [f"\t{k} = {v}" for k, v in params.items()]
        return "\n".join(out) + "\n"

    def prepare(self) -> "SambaRef":
        ensure_samba()
        for d in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir / "private", 0o700)
        for path, _ in self.shares.values():
            path.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())
        p = subprocess.run([SMBPASSWD, "-c", str(self.conf), "-s", "-a", self.user],
                           input=f"{self.password}\n{self.password}\n", text=True,
                           capture_output=True)
        if p.returncode != 0:
            raise RuntimeError(f"smbpasswd failed: {p.stdout}{p.stderr}")
        return self

    def command(self) -> list[str]:
        """smbd argv (foreground, logs to stdout); start it in its own session."""
        return [SMBD, "-F", "--no-process-group", "--debug-stdout", "-s", str(self.conf)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--listen", default="127.0.0.1:4455", help="IP:PORT")
    ap.add_argument("--share", action="append", default=[], help="NAME or NAME=PATH")
    ap.add_argument("--user", default=f"root:{DEFAULT_PASSWORD}", help="USER:PASSWORD")
    ap.add_argument("--torture-fidelity", action="store_true",
                    help="vfs objects/kernel oplocks settings Samba's own selftest uses")
    ap.add_argument("--exec", action="store_true",
                    help="exec smbd (in a new session if not already a session leader)")
    args = ap.parse_args(argv)
    ip, _, port = args.listen.rpartition(":")
    user, _, pw = args.user.partition(":")
    ref = SambaRef(args.workdir, listen_ip=ip, port=int(port), user=user, password=pw,
                   torture_fidelity=args.torture_fidelity)
    for s in args.share or ["data"]:
        name, _, path = s.partition("=")
        ref.add_share(name, path or None)
    ref.prepare()
    cmd = ref.command()
    if args.exec:
        sys.stdout.flush()
        if os.getsid(0) == os.getpid():
            os.execv(cmd[0], cmd)           # already our own session: keep the PID
        try:
            os.setsid()
            os.execv(cmd[0], cmd)
        except PermissionError:
            pass                            # process-group leader: fork, like setsid -w
        import signal
        pid = os.fork()
        if pid == 0:
            os.setsid()
            os.execv(cmd[0], cmd)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, lambda n, f: os.kill(pid, signal.SIGTERM))
        while True:
            try:
                _, st = os.waitpid(pid, 0)
                return os.waitstatus_to_exitcode(st)
            except InterruptedError:
                continue
    print(shlex.join(["setsid"] + cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
