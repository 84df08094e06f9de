"""Reference Samba smbd launcher (stdlib only).

Starts a private, unprivileged-port smbd bound to loopback, with its own smb.conf
and all state under ``workdir``.  Used as the reference peer for smbtorture
baselines and for throughput comparisons.

    with SambaRef("/tmp/ref", 4450, shares={"tmp": "/tmp/ref/share"},
                  user="smbtest", password="Passw0rd") as ref:
        ...  # //127.0.0.1/tmp on port 4450

CLI::

    python -m interop.samba_ref --workdir /tmp/ref --port 4450 \\
        --share tmp=/tmp/ref/share --user smbtest:Passw0rd [--user smbtest2:Passw0rd2]

Facts this relies on (see docs/interop-recipes.md, Samba section):
  * smbd must be started under ``setsid`` (its exit can otherwise kill the
    parent's shell / process group); stop it by PID only.
  * users must exist in /etc/passwd; they are created as system users when
    missing (needs root) and added to the private passdb with smbpasswd.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SMBD = shutil.which("smbd") or "/usr/sbin/smbd"
SMBPASSWD = shutil.which("smbpasswd") or "/usr/bin/smbpasswd"
USERADD = shutil.which("useradd") or "/usr/sbin/useradd"

# Settings the Samba selftest uses for smbtorture fidelity.
TORTURE_SHARE_OPTIONS = {
    "vfs objects": "acl_xattr xattr_tdb streams_depot",
    "kernel oplocks": "no",
    "kernel share modes": "no",
    "posix locking": "no",
}


def ensure_unix_user(name: str) -> pwd.struct_passwd:
    """Return the passwd entry for ``name``, creating a system user if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise RuntimeError(f"unix user {name!r} does not exist and we are not root")
    subprocess.run(
        [USERADD, "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return pwd.getpwnam(name)


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not accept within {timeout}s")
            time.sleep(0.1)


class SambaRef:
    """A private smbd instance.

    ``shares``: {share_name: path}; paths are created and made accessible
    (chmod 0777 on the share root) so every configured user can write.
    ``users``: extra {name: password} pairs besides ``user``/``password``
    (e.g. the second user smbtorture wants as torture:user2name).
    ``extra_global`` / ``extra_share``: additional smb.conf parameters.
    ``torture``: apply TORTURE_SHARE_OPTIONS to every share (default True).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        port: int,
        shares: dict[str, str | os.PathLike] | None = None,
        user: str = "smbtest",
        password: str = "Passw0rd",
        host: str = "127.0.0.1",
        extra_global: dict[str, str] | None = None,
        extra_share: dict[str, str] | None = None,
        users: dict[str, str] | None = None,
        torture: bool = True,
        log_level: int = 0,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = int(port)
        self.host = host
        self.user = user
        self.password = password
        self.users = {user: password, **(users or {})}
        self.shares = {k: Path(v).resolve() for k, v in (shares or {}).items()}
        if not self.shares:
            self.shares = {"tmp": self.workdir / "share"}
        self.extra_global = dict(extra_global or {})
        self.extra_share = dict(extra_share or {})
        self.torture = torture
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "smb.conf"
        self.logfile = self.workdir / "smbd.log"

    # ---- configuration -------------------------------------------------
    def _dirs(self) -> dict[str, Path]:
        w = self.workdir
        return {
            "private dir": w / "private",
            "lock directory": w / "lock",
            "state directory": w / "state",
            "cache directory": w / "cache",
            "pid directory": w / "pid",
            "ncalrpc dir": w / "ncalrpc",
            "binddns dir": w / "bind-dns",
        }

    def render_conf(self) -> str:
        g = {
            "workgroup": "SMBND",
            "netbios name": "SAMBAREF",
            "server role": "standalone server",
            "security": "user",
            "passdb backend": f"tdbsam:{self.workdir / 'private' / 'passdb.tdb'}",
            **{k: str(v) for k, v in self._dirs().items()},
            "log file": str(self.logfile),
            "log level": str(self.log_level),
            "max log size": "0",
            "smb ports": str(self.port),
            "interfaces": self.host,
            "bind interfaces only": "yes",
            "disable netbios": "yes",
            "server min protocol": "SMB2_02",
            "server max protocol": "SMB3",
            "load printers": "no",
            "printing": "bsd",
            "printcap name": "/dev/null",
            "disable spoolss": "yes",
            "map to guest": "never",
            "smbd:backgroundqueue": "no",
            "kernel change notify": "no" if self.torture else "yes",
            # smbtorture-only FSCTLs (smb2.read/ioctl bug14607, ioctl bug14769),
            # as Samba's own selftest enables them
            "smbd:FSCTL_SMBTORTURE": "yes" if self.torture else "no",
            "dns proxy": "no",
            "winbind scan trusted domains": "no",
        }
        g.update(self.extra_global)
        lines = ["[global]"] + [f"\t{k} = {v}" for k, v in g.items()]
        for name, path in self.shares.items():
            s = {
                "path": str(path),
                "read only": "no",
                "guest ok": "no",
                "create mask": "0777",
                "directory mask": "0777",
                "store dos attributes": "yes",
                "ea support": "yes",
            }
            if self.torture:
                s.update(TORTURE_SHARE_OPTIONS)
            s.update(self.extra_share)
            lines.append(f"[{name}]")
            lines += [f"\t{k} = {v}" for k, v in s.items()]
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for d in self._dirs().values():
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        for path in self.shares.values():
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o777)
            # every parent must be traversable by the unix users
            for parent in path.parents:
                if str(parent) in ("/", "/tmp"):
                    break
                st = parent.stat()
                if not st.st_mode & 0o001:
                    os.chmod(parent, st.st_mode | 0o011)
        self.conf.write_text(self.render_conf())
        for name, pw in self.users.items():
            ensure_unix_user(name)
            r = subprocess.run(
                [SMBPASSWD, "-c", str(self.conf), "-s", "-a", name],
                input=f"{pw}\n{pw}\n", text=True, capture_output=True,
            )
            if r.returncode != 0:
                raise RuntimeError(f"smbpasswd -a {name} failed: {r.stdout}{r.stderr}")

    # ---- lifecycle -----------------------------------------------------
    def start(self) -> "SambaRef":
        if self.proc is not None:
            return self
        self.prepare()
        # Refuse to silently test some other server already on the port.
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, self.port))
            except OSError as e:
                raise RuntimeError(f"{self.host}:{self.port} is busy: {e}") from None
        out = open(self.workdir / "smbd.stdout", "ab")
        self.proc = subprocess.Popen(
            ["setsid", SMBD, "-F", "--no-process-group",
             "-s", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            # NOT start_new_session: setsid(1) forks when its caller already
            # leads a process group, and then Popen.pid would not be smbd's.
            close_fds=True,
        )
        out.close()
        try:
            wait_port(self.host, self.port, self.start_timeout, self.proc)
        except Exception:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop smbd by PID (setsid execs smbd, so Popen's pid is smbd's).

        smbd forks one child per connection; on SIGTERM the parent tells
        them to exit.  Children that are left are then killed by PID via
        their parent-pid relation (never by name)."""
        p = self.proc
        if p is None:
            return
        self.proc = None
        children = _children_of(p.pid)
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        for c in children:
            # only our smbd's leftover children (guards against PID reuse)
            try:
                with open(f"/proc/{c}/cmdline", "rb") as f:
                    if str(self.conf).encode() not in f.read():
                        continue
                os.kill(c, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass

    def __enter__(self) -> "SambaRef":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def unc(self, share: str | None = None) -> str:
        return f"//{self.host}/{share or next(iter(self.shares))}"


def _children_of(pid: int) -> list[int]:
    """All descendants of pid (from /proc), deepest last."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run a private reference smbd on loopback.")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--port", type=int, default=4450)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--share", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--user", action="append", default=[], metavar="USER:PASS",
                    help="first one is the primary user; repeat for more")
    ap.add_argument("--global", dest="glob", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-torture-options", action="store_true")
    ap.add_argument("--log-level", type=int, default=0)
    ap.add_argument("--print-conf", action="store_true", help="print smb.conf and exit")
    a = ap.parse_args(argv)
    shares = dict(s.split("=", 1) for s in a.share) or None
    users = [u.split(":", 1) for u in (a.user or ["smbtest:Passw0rd"])]
    ref = SambaRef(
        a.workdir, a.port, shares=shares, user=users[0][0], password=users[0][1],
        users=dict(users[1:]), host=a.host,
        extra_global=dict(g.split("=", 1) for g in a.glob),
        torture=not a.no_torture_options, log_level=a.log_level,
    )
    if a.print_conf:
        sys.stdout.write(ref.render_conf())
        return 0
    ref.start()
    print(f"smbd pid {ref.pid} listening on {a.host}:{a.port} shares {list(ref.shares)}", flush=True)
    stop = False

    def _sig(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _sig)
    signal.signal(signal.SIGTERM, _sig)
    try:
        while not stop and ref.proc and ref.proc.poll() is None:
            time.sleep(0.5)
    finally:
        ref.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
