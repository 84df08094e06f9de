"""Launch `smbnd serve` as a real subprocess on a free loopback port (used by tests and harnesses)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

USER, PASSWORD = "demo", "demo-Passw0rd"
USER2, PASSWORD2 = "demo2", "demo2-Passw0rd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SmbndServer:
    """Context manager: shares 'data' (plain) and 'ca' (CA) under a temp dir, users demo/demo2."""

    def __init__(self, *extra_args: str, host: str = "127.0.0.1", port: int | None = None, root: str | None = None,
                 shares: dict[str, str] | None = None):
        self.host = host
        self.port = port or free_port(host)
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="smbnd-test-")
        self.root = root or self._tmp.name
        self.paths = {}
        specs = shares or {"data": "", "ca": ":ca"}
        for name, flags in specs.items():
            p = os.path.join(self.root, name)
            os.makedirs(p, exist_ok=True)
            self.paths[name] = p
        self.args = [sys.executable, "-m", "smbnd", "serve", "--listen", f"{host}:{self.port}",
                     "--user", f"{USER}:{PASSWORD}", "--user", f"{USER2}:{PASSWORD2}"]
        for name, flags in specs.items():
            self.args += ["--share", f"{name}={self.paths[name]}{flags}"]
        self.state_dir = os.path.join(self.root, "state")   # CA handle stores, never inside a share
        self.args += ["--state-dir", self.state_dir]
        self.args += list(extra_args)
        self.proc = None
        self.log_path = os.path.join(self.root, "server.log")

    def start(self) -> "SmbndServer":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"smbnd did not start: {line!r} {open(self.log_path).read()[-2000:]}")
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smbnd not accepting")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        try:
            return open(self.log_path).read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self._tmp:
            self._tmp.cleanup()
