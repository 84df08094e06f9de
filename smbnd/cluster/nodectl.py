"""Client side of the node control protocol (docs/cluster-design.md, "Node control protocol"):
a Unix socket, one JSON object per line each way. Request ``{"id": N, "op": ..., **args}``,
response ``{"id": N, "ok": true, ...}`` or ``{"id": N, "ok": false, "error": "text"}``.

    c = NodeClient("/var/cluster/nodes/node1.sock")
    await c.call("host_lif", lif="lif1", timeout=30)      # asyncio (the supervisor)
    c.call_sync("ping")                                    # blocking (tests, CLI)

Each call uses its own connection (the node serves several at once), so a slow op (host_lif of a
big store) never delays a ping. ``NodeError`` is raised for ``ok: false``; ``OSError`` /
``asyncio.TimeoutError`` / ``TimeoutError`` when the node does not answer.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time

MAX_LINE = 64 * 1024 * 1024      # a status with many disconnected opens can be large


class NodeError(RuntimeError):
    """The node answered ``ok: false``."""

    def __init__(self, op: str, error: str):
        super().__init__(f"{op}: {error}")
        self.op, self.error = op, error


_ids = itertools.count(1)


def _request(op: str, args: dict) -> tuple[int, bytes]:
    rid = next(_ids)
    return rid, (json.dumps({"id": rid, "op": op, **args}) + "\n").encode()


def _result(op: str, rid: int, line: bytes) -> dict:
    if not line:
        raise ConnectionError(f"{op}: the node closed the control connection")
    resp = json.loads(line)
    if resp.get("id") != rid:
        raise ConnectionError(f"{op}: response id {resp.get('id')} for request {rid}")
    if not resp.get("ok"):
        raise NodeError(op, str(resp.get("error", "failed")))
    return resp


class NodeClient:
    def __init__(self, path: str):
        self.path = path

    async def call(self, op: str, timeout: float = 5, **args) -> dict:
        rid, data = _request(op, args)

        async def go() -> dict:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
            try:
                writer.write(data)
                await writer.drain()
                return _result(op, rid, await reader.readline())
            finally:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
        return await asyncio.wait_for(go(), timeout)

    def call_sync(self, op: str, timeout: float = 5, **args) -> dict:
        rid, data = _request(op, args)
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.path)
            s.sendall(data)
            buf = bytearray()
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{op}: no answer from {self.path} within {timeout} s")
                s.settimeout(left)
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_LINE:
                    raise ConnectionError(f"{op}: response too large")
        return _result(op, rid, bytes(buf))

    def alive(self, timeout: float = 1.0) -> bool:
        try:
            self.call_sync("ping", timeout=timeout)
            return True
        except (OSError, NodeError, ValueError):
            return False
