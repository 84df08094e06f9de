"""External drill clients and the witness hook.

**External client** (``kind: external``): any command line (e.g. the kernel-client qemu guest
harness) started when the workload starts. Placeholders ``{address} {port} {share} {user}
{password} {duration} {out} {t0} {config} {python}`` in its words are filled in, and the same values
are in its environment as ``DRILL_ADDRESS`` ... ``DRILL_PYTHON`` (``DRILL_T0``: the drill's t = 0 as a
unix time; ``{config}``: the cluster TOML in use, the isolated copy with ``--isolate``; ``{python}``:
the runner's interpreter, e.g. for interop/linux-kernel/drill_client.py).
Each stdout line that is a JSON object is an I/O record::

    {"op": "write", "start": 1732240000.12, "end": 1732240000.13, "status": "ok"}

``start``/``end`` are unix times (or drill seconds when < 1e8); ``status`` "ok"/0 means success,
anything else is an error the application saw. A line ``{"type": "summary", "data_verified": true,
"handle_lost": false, "reconnects": 1}`` reports the client's own verdict. Other lines go to the log.

**Witness hook** (``witness: true`` on a writer): MS-SWN tells a registered client to move
(CLIENT_MOVE, MS-SWN 3.2.4.1). If ``interop/witness_client.py`` is importable, a WitnessClient
registers for the writer (NetName, LIF address, share) and each CLIENT_MOVE calls
``WriterVerifier.move_to(ip)``, so the writer reconnects (and reclaims) to the new address;
otherwise the writer runs without witness and the result notes it.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading

from .workload import Clock


class ExternalClient:
    def __init__(self, name: str, command: list[str], cwd: str, env: dict, values: dict, clock: Clock,
                 log_path: str):
        self.name, self.clock, self.log_path = name, clock, log_path
        self.values = {"python": sys.executable, **{k: str(v) for k, v in values.items()}}
        self.command = [w.format(**self.values) if "{" in w else w for w in command]
        self.cwd = cwd
        self.env = {**os.environ, **{str(k): str(v) for k, v in env.items()},
                    **{f"DRILL_{k.upper()}": v for k, v in self.values.items()}}
        self.records: list[dict] = []
        self.summary_line: dict = {}
        self.notes: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "ExternalClient":
        self._log = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                         stderr=self._log, text=True, start_new_session=True)
        except OSError as e:
            self.notes.append(f"cannot start {self.command[0]!r}: {e.strerror}")
            return self
        self._reader = threading.Thread(target=self._read, name=f"drill-ext-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _t(self, v) -> float:
        v = float(v)
        return round(self.clock.from_wall(v) if v > 1e8 else v, 4)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                self._log.write(line)
                continue
            if not isinstance(d, dict):
                self._log.write(line)
            elif d.get("type") == "summary":
                self.summary_line = d
            elif "start" in d and "end" in d:
                st = d.get("status", "ok")
                ok = st in ("ok", 0, "0", "0x00000000") or d.get("ok") is True
                rec = {**d, "client": self.name, "op": d.get("op", "io"), "start": self._t(d["start"]),
                       "end": self._t(d["end"]), "status": "0x00000000" if ok else str(st), "ok": ok}
                self.records.append(rec)
            else:
                self._log.write(line)

    def finish(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.notes.append(f"still running after {timeout:.0f} s: stopped (SIGTERM)")
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.proc.pid, sig)             # our own child, by PID
                    self.proc.wait(10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        if self._reader:
            self._reader.join(10)
        if self.proc.returncode not in (0, None):
            self.notes.append(f"exit status {self.proc.returncode}")
        self._log.close()

    def summary(self) -> dict:
        s = self.summary_line
        return {"client": self.name, "kind": "external", "command": self.command,
                "ios": len(self.records), "errors": sum(1 for r in self.records if not r["ok"]),
                "exit_status": self.proc.returncode if self.proc else None,
                "data_verified": s.get("data_verified") if "data_verified" in s else None,
                "handle_lost": bool(s.get("handle_lost", False)), "reconnects": s.get("reconnects"),
                "notes": self.notes + list(s.get("notes", []))}


class WitnessHook:
    """Runs interop.witness_client.WitnessClient (if present) for one writer: GetInterfaceList +
    RegisterEx for the writer's NetName, IP and share, then AsyncNotify in a loop (MS-SWN 3.2.4.1-2);
    CLIENT_MOVE -> ``writer.move_to(first online address)``. Every notification is a record."""

    def __init__(self, writer, netname: str, address: str, cluster, user: str, password: str, share: str):
        self.writer, self.netname, self.address, self.share = writer, netname, address, share
        self.cluster, self.user, self.password = cluster, user, password
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.client = None
        self.note = ""
        self.registered = False

    def start(self) -> "WitnessHook":
        try:
            try:
                mod = importlib.import_module("interop.witness_client")
            except ImportError:     # `smbnd drill run` from anywhere: the checkout holding smbnd/
                import sys
                sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
                mod = importlib.import_module("interop.witness_client")
            cls = mod.WitnessClient
        except (ImportError, AttributeError) as e:
            self.note = f"witness mode requested but interop.witness_client is not usable ({e}); ran without"
            return self
        self.client = cls(self.address, self.netname, self.user, self.password,
                          epm_port=self.cluster.port("epm"), witness_port=self.cluster.port("witness"),
                          keepalive=30, call_timeout=60.0)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"drill-witness-{self.writer.name}")
        self.thread.start()
        return self

    def _record(self, op: str, ok: bool, **kw) -> None:
        t = self.writer.clock.now()
        self.writer.records.append({"client": self.writer.name, "op": op, "start": round(t, 4), "end": round(t, 4),
                                    "status": "0x00000000" if ok else "WITNESS_ERROR", "ok": ok, **kw})

    def _run(self) -> None:
        failures = 0
        while not self.stop.is_set() and failures < 100:
            try:
                if self.client.handle is None:
                    where = self.client.register(share=self.share)
                    self.registered = True
                    self._record("witness_register", True, witness=where)
                note = self.client.async_notify()
            except Exception as e:      # the witness is an optimisation: the writer fails over by itself
                if self.stop.is_set():
                    break
                failures += 1
                self._record("witness_error", False, error=f"{type(e).__name__}: {e}"[:200])
                self.client.close()
                self.stop.wait(0.5)
                continue
            if note is None:
                continue                                 # ERROR_TIMEOUT: re-issue AsyncNotify (3.2.4.2)
            addrs = note.online_addresses()
            self._record("witness_" + note.kind.replace("-", "_"), True, addresses=addrs,
                         resources=[list(r) for r in note.resources])
            if note.kind == "client-move" and addrs:
                self.writer.move_to(addrs[0])

    def finish(self) -> None:
        self.stop.set()
        if self.client is not None:
            # closing the association ends the registration (our witness drops the
            # registrations of a lost connection); an UnRegister would queue behind the pending
            # AsyncNotify for up to its KeepAlive
            self.client.close()
        if self.thread:
            self.thread.join(10)
        if self.client is not None and not self.registered and not self.note:
            self.note = "witness registration never succeeded"
