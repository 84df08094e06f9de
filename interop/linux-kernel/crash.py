"""Server crashes for the crash option sets of run.py (``SMBK-CRASH <optset> <k>`` from the guest).

``kill_and_restart`` SIGKILLs the server process we started (by PID, then whatever is left in its
session, also by PID), starts the same command again with the same address, cwd and state, and
waits until it listens. Stdlib only.
"""
from __future__ import annotations

import os
import signal
import time


def kill_and_restart(old, start, port: int, ready_timeout: float, log_path, tag: str, listening,
                     session_members):
    """Returns (new Popen, info dict). `start(logfile)` starts the server writing to `logfile`;
    `listening(pid, port)` and `session_members(pid)` are run.py's helpers."""
    t_kill = time.monotonic()
    info = {"killed_pid": old.pid}
    try:
        os.kill(old.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    old.wait(10)
    for p in session_members(old.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    info["exit"] = old.returncode
    with open(log_path, "ab") as slog:
        slog.write(f"\n=== smbk: SIGKILL {old.pid} ({tag}), restarting ===\n".encode())
        slog.flush()
        new = start(slog)
    info["new_pid"] = new.pid
    end = time.monotonic() + ready_timeout
    while not listening(new.pid, port) and new.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    info["listening"] = listening(new.pid, port)
    info["down_s"] = round(time.monotonic() - t_kill, 2)
    return new, info
