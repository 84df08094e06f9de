"""The control API: HTTP/1.1 + JSON on ``cluster.control`` (docs/cluster-design.md "Control API").

Plain asyncio streams (no web framework). One request per connection (``Connection: close``),
RFC 9112 message framing: Content-Length bodies; the event stream (``GET /v1/events?follow=1``) is
sent with chunked transfer coding (RFC 9112 section 7.1), one JSON object per line. Every path but
``/openapi.json`` needs ``Authorization: Bearer <token>`` (RFC 6750 section 2.1); 401 otherwise.
``python -m smbnd.cluster.api`` prints the OpenAPI document (saved as docs/control-api.json).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from urllib.parse import parse_qs, urlsplit

from .faults import FAULT_KINDS
from .ops import OpError

log = logging.getLogger("smbnd.cluster.api")
MAX_HEADER = 64 * 1024
MAX_BODY = 1024 * 1024
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Content Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

# POST /v1/<path>: (operation name, required body fields)
OPERATIONS = {
    "takeover": ("takeover", ["node"]), "giveback": ("giveback", ["node"]),
    "lif/migrate": ("lif_migrate", ["lif", "node"]), "lif/revert": ("lif_revert", ["lif"]),
    "aggr/relocate": ("aggr_relocate", ["aggr", "node"]), "vol/move": ("vol_move", ["vol", "aggr"]),
    "node/upgrade": ("upgrade", ["node"]),
}


class HttpError(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code


class ControlApi:
    """``sup`` provides: token, status(), placement, events, run_op(name, **args),
    fault(**args), request_shutdown()."""

    def __init__(self, sup, host: str, port: int):
        self.sup, self.host, self.port = sup, host, port
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._pause_after: float = 0.0
        self._resume_task: asyncio.Task | None = None
        self.down_until: float = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._resume_task is not None:
            self._resume_task.cancel()
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            self._server = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    def pause(self, seconds: float) -> None:
        """mgmt-down: stop listening after the current response is written, for ``seconds``."""
        self._pause_after = seconds

    async def _do_pause(self, seconds: float) -> None:
        self.down_until = time.time() + seconds
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            w.close()

        async def resume():
            await asyncio.sleep(seconds)
            for _ in range(100):                      # bounded: the port may be briefly busy
                try:
                    await self.start()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            self.down_until = 0.0
            self.sup.events.emit("fault_cleared", kind="mgmt-down", target="control")
        self._resume_task = asyncio.create_task(resume())

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception:  # noqa: BLE001 - never let one request take the supervisor down
            log.exception("control API request failed")
        finally:
            self._conns.discard(writer)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass
        if self._pause_after:
            s, self._pause_after = self._pause_after, 0.0
            await self._do_pause(s)

    async def _one(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return await self._send(writer, 413, {"error": "header too large"})
        if len(head) > MAX_HEADER:
            return await self._send(writer, 413, {"error": "header too large"})
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return await self._send(writer, 400, {"error": "bad request line"})
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        n = headers.get("content-length", "0")
        if not n.isdigit() or int(n) > MAX_BODY:
            return await self._send(writer, 413 if n.isdigit() else 400, {"error": "bad Content-Length"})
        if int(n):
            body = await reader.readexactly(int(n))
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        if path == "/openapi.json" and method == "GET":
            return await self._send(writer, 200, openapi())
        if not self._authorized(headers.get("authorization", "")):
            return await self._send(writer, 401, {"error": "missing or wrong bearer token"},
                                    extra={"WWW-Authenticate": 'Bearer realm="smbnd"'})
        try:
            if path == "/v1/events" and method == "GET":
                return await self._events(reader, writer, query)
            code, doc = await self._route(method, path, body)
        except HttpError as e:
            code, doc = e.code, {"error": str(e)}
        except OpError as e:
            code, doc = e.code, {"error": str(e)}
        await self._send(writer, code, doc)

    def _authorized(self, value: str) -> bool:
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.sup.token.encode())

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if method == "GET":
            if path == "/v1/status":
                return 200, self.sup.status()
            if path == "/v1/placement":
                return 200, json.loads(self.sup.placement.to_json())
            raise HttpError(404 if not path.startswith("/v1/") or path not in _POSTS else 405, f"no GET {path}")
        if method != "POST":
            raise HttpError(405, f"method {method} not allowed")
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            raise HttpError(400, "body is not JSON") from None
        if not isinstance(args, dict):
            raise HttpError(400, "body must be a JSON object")
        sub = path[len("/v1/"):] if path.startswith("/v1/") else None
        if sub in OPERATIONS:
            name, required = OPERATIONS[sub]
            for r in required:
                if not isinstance(args.get(r), str) or not args[r]:
                    raise HttpError(400, f"{r}: required string")
            return 200, await self.sup.run_op(name, **{r: args[r] for r in required})
        if sub == "fault":
            kind = args.get("kind")
            if kind not in FAULT_KINDS:
                raise HttpError(400, f"kind: one of {', '.join(FAULT_KINDS)}")
            f = {"kind": kind, "target": str(args.get("target") or ""),
                 "direction": str(args.get("direction") or "both")}
            for k, typ in (("ms", int), ("seconds", float)):
                v = args.get(k, 0)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise HttpError(400, f"{k}: non-negative number")
                f[k] = typ(v)
            return 200, await self.sup.run_op("fault", **f)
        if sub == "shutdown":
            self.sup.request_shutdown()
            return 200, {"ok": True}
        raise HttpError(404, f"no POST {path}")

    async def _events(self, reader, writer, query) -> None:
        try:
            since = int(query.get("since", "0"))
        except ValueError:
            raise HttpError(400, "since: integer") from None
        follow = query.get("follow", "0") not in ("0", "", "false")
        ev = self.sup.events
        q = ev.subscribe() if follow else None
        try:
            backlog = ev.since(since)
            if not follow:
                data = b"".join(json.dumps(e).encode() + b"\n" for e in backlog)
                return await self._send_raw(writer, 200, data, "application/x-ndjson")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                         b"Transfer-Encoding: chunked\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
            last = since
            for e in backlog:
                await self._chunk(writer, e)
                last = e["seq"]
            eof = asyncio.ensure_future(reader.read(1))      # the client closing ends the stream
            try:
                while True:
                    get = asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait({get, eof}, return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        return
                    e = get.result()
                    if e is None:                            # dropped (slow reader) or shutting down
                        break
                    if e["seq"] > last:
                        await self._chunk(writer, e)
                        last = e["seq"]
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            finally:
                eof.cancel()
        finally:
            if q is not None:
                ev.unsubscribe(q)

    @staticmethod
    async def _chunk(writer, ev: dict) -> None:
        data = json.dumps(ev).encode() + b"\n"
        writer.write(b"%x\r\n" % len(data) + data + b"\r\n")
        await writer.drain()

    async def _send(self, writer, code: int, doc: dict, extra: dict | None = None) -> None:
        await self._send_raw(writer, code, json.dumps(doc).encode(), "application/json", extra)

    @staticmethod
    async def _send_raw(writer, code: int, data: bytes, ctype: str, extra: dict | None = None) -> None:
        hdr = f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\nContent-Type: {ctype}\r\n" \
              f"Content-Length: {len(data)}\r\nConnection: close\r\n"
        for k, v in (extra or {}).items():
            hdr += f"{k}: {v}\r\n"
        writer.write(hdr.encode() + b"\r\n" + data)
        await writer.drain()


_POSTS = {"/v1/" + p for p in list(OPERATIONS) + ["fault", "shutdown"]}


# ---------------------------------------------------------------------- OpenAPI 3.1
def _obj(props: dict, required=()) -> dict:
    return {"type": "object", "properties": props, "required": list(required)}


_S, _I, _B, _N = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
_OP_RESULT = _obj({"ok": _B, "ms": _I, "events": {"type": "array", "items": _I}}, ["ok", "ms", "events"])
_ERROR = _obj({"error": _S}, ["error"])
_OP_DOCS = {
    "takeover": "Planned takeover: flush, hand the node's LIFs and aggregates to its HA partner.",
    "giveback": "Give the node's home LIFs and aggregates back from its partner.",
    "lif/migrate": "Move a data LIF to any up node.",
    "lif/revert": "Move a data LIF back to its home node.",
    "aggr/relocate": "Relocate an aggregate to the owner's HA partner (volumes frozen briefly).",
    "vol/move": "Move a volume to another aggregate; open handles are preserved.",
    "node/upgrade": "Rolling upgrade: takeover, restart the node process, giveback.",
}


def openapi() -> dict:
    def post(summary, schema):
        return {"post": {"summary": summary, "security": [{"bearer": []}],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                         "responses": {"200": {"description": "done", "content": {"application/json": {
                             "schema": _OP_RESULT}}},
                             **{c: {"description": d, "content": {"application/json": {"schema": _ERROR}}}
                                for c, d in (("400", "bad request"), ("401", "no or wrong token"),
                                             ("404", "unknown name"), ("409", "not possible in this state"))}}}}
    paths = {
        "/v1/status": {"get": {"summary": "Nodes, LIFs, aggregates, volumes, sessions, opens, disconnected "
                                          "opens, witness registrations", "security": [{"bearer": []}],
                               "responses": {"200": {"description": "cluster status", "content": {
                                   "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}}}},
        "/v1/placement": {"get": {"summary": "Current placement (LIF -> node, aggregate -> owner, volume -> "
                                             "aggregate, taken-over nodes, epoch)", "security": [{"bearer": []}],
                                  "responses": {"200": {"description": "placement", "content": {
                                      "application/json": {"schema": {"$ref": "#/components/schemas/Placement"}}}}}}},
        "/v1/events": {"get": {
            "summary": "The event log as JSON lines; follow=1 keeps the (chunked) response open",
            "security": [{"bearer": []}],
            "parameters": [{"name": "since", "in": "query", "schema": _I, "description": "events with seq > since"},
                           {"name": "follow", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}}],
            "responses": {"200": {"description": "events", "content": {"application/x-ndjson": {
                "schema": {"$ref": "#/components/schemas/Event"}}}}}}},
        "/v1/fault": post("Inject or clear a fault", _obj({
            "kind": {"type": "string", "enum": list(FAULT_KINDS)},
            "target": {"type": "string", "description": "node (kill, hang, resume, partition, heal), LIF "
                                                        "(lif-down, lif-up) or aggregate (storage-*)"},
            "direction": {"type": "string", "enum": ["both", "a-to-b", "b-to-a"],
                          "description": "partition: a = target, b = its partner"},
            "ms": {"type": "integer", "description": "storage-slow: added latency"},
            "seconds": {"type": "number", "description": "mgmt-down: how long the API stays unreachable"}},
            ["kind"])),
        "/v1/shutdown": {"post": {"summary": "Stop the cluster (nodes, witnesses, supervisor)",
                                  "security": [{"bearer": []}],
                                  "responses": {"200": {"description": "stopping"}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
    }
    for sub, (_name, required) in OPERATIONS.items():
        paths["/v1/" + sub] = post(_OP_DOCS[sub], _obj({r: _S for r in required}, required))
    named = lambda *f: {"type": "array", "items": _obj({k: _S for k in f})}  # noqa: E731
    return {
        "openapi": "3.1.0",
        "info": {"title": "smbnd cluster control API", "version": "1",
                 "description": "Operations, faults, status and events of an smbnd cluster "
                                "(docs/cluster-design.md). Bearer token: <state_dir>/token."},
        "servers": [{"url": "http://127.0.0.1:9445"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Placement": _obj({"lif_node": {"type": "object", "additionalProperties": _S},
                                   "aggr_owner": {"type": "object", "additionalProperties": _S},
                                   "vol_aggr": {"type": "object", "additionalProperties": _S},
                                   "down_nodes": {"type": "array", "items": _S}, "epoch": _I}),
                "Event": _obj({"seq": _I, "ts": _N, "type": _S}, ["seq", "ts", "type"]),
                "Status": _obj({
                    "cluster": _S, "svm": _S,
                    "nodes": {"type": "array", "items": _obj({"name": _S, "partner": _S, "pid": _I, "state": {
                        "type": "string", "enum": ["up", "down", "waiting_giveback", "hung"]}})},
                    "lifs": {"type": "array", "items": _obj({"name": _S, "address": _S, "home": _S, "current": _S,
                                                             "up": _B})},
                    "aggregates": named("name", "home", "owner", "path", "fault"),
                    "volumes": {"type": "array", "items": _obj({"name": _S, "aggregate": _S, "ca": _B})},
                    "sessions": {"type": "object", "additionalProperties": _I},
                    "opens": {"type": "object", "additionalProperties": _obj(
                        {"persistent": _I, "durable": _I, "plain": _I})},
                    "disconnected": {"type": "array", "items": _obj({"node": _S, "share": _S, "path": _S, "lif": _S,
                                                                     "persistent_id": _I, "remaining_s": _N})},
                    "witness": {"type": "array", "items": {"type": "object"}}}),
            }},
        "paths": dict(sorted(paths.items())),
    }


if __name__ == "__main__":
    print(json.dumps(openapi(), indent=2))
