"""Per-share I/O gate: aggregate freeze/thaw and storage fault emulation (docs/cluster-design.md,
node ops ``freeze``/``thaw``/``storage_fault``).

The VFS and the handlers are synchronous, so the gate works at two points that need no change there:

* **freeze / slow** hold whole request frames before they are processed (``smbnd.netio`` asks
  ``must_hold`` and then awaits ``ready``): a frame whose (first) TreeId names a tree on a frozen
  share waits until thaw; with ``slow`` every such frame is delivered ``ms`` after it arrived
  (asyncio timers, never blocking the loop). Frames of one connection for one share keep their
  order; frames without a tree (NEGOTIATE, SESSION_SETUP, TREE_CONNECT, ECHO) and frames for other
  shares pass, so keep-alives are answered. A freeze is bounded (``max_s``, default 30 s) so a
  forgotten thaw cannot hang clients; short freezes (< 10 s) need no interim responses (MS-SMB2
  3.3.4.2 leaves STATUS_PENDING to the server; clients wait well over 10 s for a response).
* **fail** answers the commands that touch the backing store (CREATE, FLUSH, READ, WRITE, IOCTL,
  QUERY_DIRECTORY, QUERY_INFO, SET_INFO) with STATUS_UNEXPECTED_IO_ERROR, as a filer whose disk
  fails does; CLOSE, LOCK, ECHO and the session/tree commands still work (``wrap_handlers``).
"""
from __future__ import annotations

import asyncio
import logging
import time

from . import status as st
from .errors import SmbError
from .wire import header as hd

log = logging.getLogger("smbnd.vfs_gate")

BACKING_COMMANDS = (hd.CREATE, hd.FLUSH, hd.READ, hd.WRITE, hd.IOCTL, hd.QUERY_DIRECTORY, hd.QUERY_INFO,
                    hd.SET_INFO)
DEFAULT_MAX_FREEZE_S = 30.0


class ShareGate:
    def __init__(self) -> None:
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.frozen_since = 0.0
        self.auto_thaw = None           # loop TimerHandle of the bound on a freeze
        self.fail = False
        self.slow_ms = 0

    @property
    def frozen(self) -> bool:
        return not self.thawed.is_set()

    @property
    def holding(self) -> bool:
        return self.frozen or self.slow_ms > 0


class IoGates:
    """The gates of a server's shares, keyed by lower-case share name."""

    def __init__(self) -> None:
        self.by_share: dict[str, ShareGate] = {}
        self.active = False             # any share frozen or slow: netio looks at frames at all
        self.failing = False            # any share failing: the handler wrapper looks at the tree

    def _gate(self, share: str) -> ShareGate:
        g = self.by_share.get(share.lower())
        if g is None:
            g = self.by_share[share.lower()] = ShareGate()
        return g

    def _update(self) -> None:
        self.active = any(g.holding for g in self.by_share.values())
        self.failing = any(g.fail for g in self.by_share.values())

    # ------------------------------------------------------------------ control
    def freeze(self, shares, max_s: float = DEFAULT_MAX_FREEZE_S) -> None:
        loop = asyncio.get_running_loop()
        for name in shares:
            g = self._gate(name)
            if not g.frozen:
                g.thawed.clear()
                g.frozen_since = time.monotonic()
            if g.auto_thaw is not None:
                g.auto_thaw.cancel()
            g.auto_thaw = loop.call_later(max_s, self._auto_thaw, name, max_s)
        self._update()

    def _auto_thaw(self, name: str, max_s: float) -> None:
        log.warning("share %s frozen for %.0f s without a thaw: thawing it", name, max_s)
        self.thaw([name])

    def thaw(self, shares) -> None:
        for name in shares:
            g = self._gate(name)
            if g.auto_thaw is not None:
                g.auto_thaw.cancel()
                g.auto_thaw = None
            g.thawed.set()
        self._update()

    def fault(self, shares, mode: str, ms: int = 0) -> None:
        """mode: "fail" | "slow" (ms added per request) | "clear"."""
        if mode not in ("fail", "slow", "clear"):
            raise ValueError(f"storage fault mode {mode!r}: fail, slow or clear")
        for name in shares:
            g = self._gate(name)
            g.fail = mode == "fail"
            g.slow_ms = max(0, int(ms)) if mode == "slow" else 0
        self._update()

    def view(self) -> dict:
        now = time.monotonic()
        return {name: {"frozen": g.frozen, "frozen_s": round(now - g.frozen_since, 3) if g.frozen else 0,
                       "fail": g.fail, "slow_ms": g.slow_ms}
                for name, g in sorted(self.by_share.items()) if g.holding or g.fail}

    # ------------------------------------------------------------------ the frame path (netio)
    def share_of_frame(self, conn, frame) -> str | None:
        """Lower-case name of the share the frame's first request targets, when it is gated."""
        try:
            buf = frame
            if bytes(frame[:4]) == hd.PROTOCOL_TRANSFORM:
                _sess, buf = conn._decrypt(frame)      # decryption keeps no state (nonces are the sender's)
            elif bytes(frame[:4]) != hd.PROTOCOL_SMB2:
                return None
            h = hd.parse_header(buf, 0)
        except Exception:       # let the connection itself reject it
            return None
        if h.command not in BACKING_COMMANDS and h.command not in (hd.CLOSE, hd.LOCK, hd.CHANGE_NOTIFY):
            return None
        sess = conn.server.sessions.get(h.session_id)
        tree = sess.trees.get(h.tree_id) if sess is not None else None
        if tree is None or tree.share.is_ipc:
            return None
        return tree.share.name.lower()

    def must_hold(self, share: str | None) -> bool:
        g = self.by_share.get(share) if share is not None else None
        return g is not None and g.holding

    async def ready(self, share: str, arrived: float) -> None:
        """Wait until a frame of `share` that arrived at `arrived` (monotonic) may be processed."""
        g = self._gate(share)
        for _ in range(1000):           # bounded: each pass waits for a thaw or the latency
            if g.frozen:
                await g.thawed.wait()
                continue
            delay = arrived + g.slow_ms / 1000.0 - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)
            if not g.frozen:
                return

    # ------------------------------------------------------------------ the handler path
    def wrap_handlers(self, handlers: dict) -> dict:
        out = dict(handlers)
        for cmd in BACKING_COMMANDS:
            if cmd in out:
                out[cmd] = self._wrap(out[cmd])
        return out

    def _wrap(self, handler):
        gates = self

        def gated(req):
            if gates.failing:
                tree = req.tree
                if tree is not None and not tree.share.is_ipc:
                    g = gates.by_share.get(tree.share.name.lower())
                    if g is not None and g.fail:
                        raise SmbError(st.STATUS_UNEXPECTED_IO_ERROR)
            return handler(req)
        gated.__name__ = getattr(handler, "__name__", "handler")
        return gated
