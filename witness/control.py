"""The witness control socket: ``<state_dir>/nodes/<node>.witness.sock``, one JSON object per line
each way, as the node control protocol (docs/cluster-design.md): request ``{"id", "op", ...}`` ->
``{"id", "ok": true, ...}`` or ``{"id", "ok": false, "error"}``.

Ops:
- ``ping`` -> ``{"node", "pid"}``;  ``list`` / ``status`` -> registrations, interfaces, listeners
- ``notify {"type": "client-move"|"share-move"|"ip-change"|"resource-change"|"unregister",
  "handle"?, "client"?, "ip"?, "net_name"?, "share"?  (registration filters; none = all),
  "to": [address|lif...] (move destinations, IP_CHANGE addresses), "flags"? (IPADDR_INFO flags
  added to V4/V6; default 0 for moves, OFFLINE for ip-change), "online"? (ip-change),
  "state": "available"|"unavailable"|"unknown" and "name"? (resource-change)}`` -> ``{"notified": N}``
- ``interface {"to": address|lif, "state"}`` -> Interface.State change (MS-SWN 3.1.6.1)
"""
from __future__ import annotations

import asyncio
import json
import logging
import os

from . import ndr as n

log = logging.getLogger("witness")

STATES = {"available": n.STATE_AVAILABLE, "unavailable": n.STATE_UNAVAILABLE, "unknown": n.STATE_UNKNOWN}
CHANGE = {"available": n.RESOURCE_STATE_AVAILABLE, "unavailable": n.RESOURCE_STATE_UNAVAILABLE,
          "unknown": n.RESOURCE_STATE_UNKNOWN}
MAX_LINE = 1 << 20


class ControlError(Exception):
    pass


class ControlServer:
    def __init__(self, node):
        self.node = node
        self.server: asyncio.base_events.Server | None = None
        self.path = ""

    async def start(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.path = path
        self.server = await asyncio.start_unix_server(self._client, path, limit=MAX_LINE)
        os.chmod(path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        try:
            os.unlink(self.path)
        except (FileNotFoundError, OSError):
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break
                if not line:
                    break
                rid = None
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ControlError("request must be a JSON object")
                    rid = req.get("id")
                    resp = {"id": rid, "ok": True, **self.handle(req)}
                except (ControlError, ValueError, KeyError, TypeError) as e:
                    resp = {"id": rid, "ok": False, "error": str(e) or type(e).__name__}
                except Exception as e:      # never let a request kill the witness
                    log.exception("witness control request")
                    resp = {"id": rid, "ok": False, "error": f"internal error: {e}"}
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    # ------------------------------------------------------------------ ops
    def handle(self, req: dict) -> dict:
        op = req.get("op")
        node = self.node
        if op == "ping":
            return {"node": node.node, "pid": os.getpid()}
        if op in ("list", "status"):
            return node.status()
        if op == "notify":
            return {"notified": self.notify(req)}
        if op == "interface":
            addr = self._address(req.get("to"))
            state = STATES.get(str(req.get("state", "")).lower())
            if state is None:
                raise ControlError("state: available, unavailable or unknown")
            if node.service.find_interface(addr) is None:
                raise ControlError(f"no interface {addr}")
            return {"notified": len(node.service.set_interface_state(addr, state))}
        raise ControlError(f"unknown op {op!r}")

    def _address(self, x) -> str:
        if not isinstance(x, str) or not x:
            raise ControlError("address or LIF name expected")
        lif = self.node.c.lifs.get(x)
        if lif is not None:
            return lif.address
        try:
            n.ip_fields(x)
        except ValueError:
            raise ControlError(f"not an address or LIF name: {x!r}") from None
        return x

    def notify(self, req: dict) -> int:
        svc = self.node.service
        kind = req.get("type")
        regs = svc.select(key=req.get("handle"), client=req.get("client"), ip=req.get("ip"),
                          net_name=req.get("net_name"), share=req.get("share"))
        to = req.get("to") or []
        if isinstance(to, str):
            to = [to]
        addrs = [self._address(a) for a in to]
        if kind == "unregister":
            for r in regs:
                svc.unregister_by_key(r.key)
            return len(regs)
        if kind == "resource-change":
            state = CHANGE.get(str(req.get("state", "unavailable")).lower())
            if state is None:
                raise ControlError("state: available, unavailable or unknown")
            return svc.resource_change(regs, state, req.get("name"))
        if kind not in ("client-move", "share-move", "ip-change"):
            raise ControlError("type: client-move, share-move, ip-change, resource-change or unregister")
        if not addrs:
            raise ControlError("'to': at least one destination address or LIF")
        if kind == "ip-change":
            default = n.IPADDR_ONLINE if req.get("online") else n.IPADDR_OFFLINE
        else:
            default = 0
        flags = int(req.get("flags", default))
        entries = [(a, flags) for a in addrs]
        if kind == "client-move":
            return svc.client_move(regs, entries)
        if kind == "share-move":
            return svc.share_move(regs, entries)
        return svc.ip_change(regs, entries)


class ControlClient:
    """Blocking client of a witness control socket (CLI, tests, drills)."""

    def __init__(self, path: str, timeout: float = 10.0):
        self.path, self.timeout = path, timeout
        self._id = 0

    def call(self, op: str, **args) -> dict:
        import socket
        self._id += 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(json.dumps({"id": self._id, "op": op, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        resp = json.loads(buf)
        if not resp.get("ok"):
            raise ControlError(resp.get("error", "failed"))
        return resp
