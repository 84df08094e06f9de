"""Launchers for the servers smbtorture (and bench/) run against.

* :class:`SmbndServer` -- ``python -m smbnd serve --listen H:P --share tmp=DIR
  --user U:P --user U2:P2 --state-dir WORKDIR/state``; ready when it prints a line
  containing "listening" (and the port accepts).  Override the command prefix with the
  ``SMBND_CMD`` environment variable (e.g. ``SMBND_CMD="smbnd"``); ``share_flags=":ca"``
  (or ``SMBND_SHARE_FLAGS=:ca``) makes the share continuously available, ``extra_args``
  (or ``SMBND_EXTRA_ARGS``) adds serve options.
* :func:`samba_server` -- the reference smbd via :mod:`interop.samba_ref`.

Both are context managers exposing ``host``, ``port``, ``share``, ``user``,
``password``, ``user2``, ``password2``, ``share_path``, ``pid``.
Processes are stopped by PID only.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from interop.samba_ref import SambaRef, wait_port

DEFAULT_USER = ("smbtest", "Passw0rd")
DEFAULT_USER2 = ("smbtest2", "Passw0rd2")
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerInfo:
    host: str
    port: int
    share: str
    share_path: Path
    user: str
    password: str
    user2: str
    password2: str
    kind: str
    pid: int | None = None


class _ServerBase:
    """What both launchers share: the info record and context-manager use."""
    KIND = ""

    def info(self) -> ServerInfo:
        return ServerInfo(self.host, self.port, self.share, self.share_path, *self.user,
                          *self.user2, kind=self.KIND, pid=self.pid)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SmbndServer(_ServerBase):
    """Start/stop the smbnd server as a subprocess."""
    KIND = "smbnd"

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        share: str = "tmp",
        user: tuple[str, str] = DEFAULT_USER,
        user2: tuple[str, str] = DEFAULT_USER2,
        extra_args: list[str] | None = None,
        cmd: list[str] | None = None,
        start_timeout: float = 30.0,
        share_flags: str | None = None,
    ) -> None:
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="smbnd-torture-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.share = share
        self.share_path = self.workdir / "share"
        self.user, self.user2 = user, user2
        self.extra_args = list(extra_args or [])
        if extra_args is None and os.environ.get("SMBND_EXTRA_ARGS"):
            self.extra_args = shlex.split(os.environ["SMBND_EXTRA_ARGS"])
        # ":ca" makes the share continuously available (persistent handles); SMBND_SHARE_FLAGS too
        self.share_flags = share_flags if share_flags is not None else os.environ.get("SMBND_SHARE_FLAGS", "")
        self.state_dir = self.workdir / "state"     # handle stores of CA shares (kept across restarts)
        if cmd is None:
            env_cmd = os.environ.get("SMBND_CMD")
            cmd = shlex.split(env_cmd) if env_cmd else [sys.executable, "-m", "smbnd"]
        self.cmd = cmd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.logfile = self.workdir / "smbnd.log"
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def argv(self) -> list[str]:
        return self.cmd + [
            "serve", "--listen", f"{self.host}:{self.port}",
            "--share", f"{self.share}={self.share_path}{self.share_flags}",
            "--state-dir", str(self.state_dir),
            "--user", f"{self.user[0]}:{self.user[1]}",
            "--user", f"{self.user2[0]}:{self.user2[1]}",
            "--torture-fsctls",   # like the Samba reference's smbd:FSCTL_SMBTORTURE = yes
            "--directory-leasing",   # as a Windows filer does (off by default for impacket's sake)
            "--multichannel",   # session binding (smb2.multichannel, smb2.replay, smb2.session bind*)
            *self.extra_args,
        ]

    def _pump(self, stream, log) -> None:
        for line in iter(stream.readline, b""):
            log.write(line)
            log.flush()
            if b"listening" in line.lower():
                self._ready.set()
        stream.close()
        log.close()

    def start(self) -> "SmbndServer":
        self.share_path.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, args=(self.proc.stdout, log), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(
                    f"smbnd exited with {self.proc.returncode} before listening:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"smbnd did not print 'listening' within {self.start_timeout}s:\n"
                                   f"{self.log_tail()}")
        wait_port(self.host, self.port, max(1.0, deadline - time.monotonic()), self.proc)
        return self

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None



class SambaServer(_ServerBase):
    """The reference smbd, same interface as :class:`SmbndServer`."""
    KIND = "samba"

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        share: str = "tmp",
        user: tuple[str, str] = DEFAULT_USER,
        user2: tuple[str, str] = DEFAULT_USER2,
        **samba_kwargs,
    ) -> None:
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="samba-ref-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.host, self.port, self.share = host, port or free_port(host), share
        self.share_path = self.workdir / "share"
        self.user, self.user2 = user, user2
        self.ref = SambaRef(self.workdir, self.port, shares={share: self.share_path},
                            user=user[0], password=user[1], users={user2[0]: user2[1]},
                            host=host, **samba_kwargs)

    def start(self) -> "SambaServer":
        self.ref.start()
        return self

    @property
    def pid(self) -> int | None:
        return self.ref.pid

    def alive(self) -> bool:
        return self.ref.proc is not None and self.ref.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.ref.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.ref.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None



def make_server(kind: str, **kw):
    if kind == "smbnd":
        return SmbndServer(**kw)
    if kind == "samba":
        return SambaServer(**kw)
    raise ValueError(f"unknown server kind {kind!r}")
