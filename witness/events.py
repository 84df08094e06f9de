"""Cluster event intake for the witness (docs/cluster-design.md "Events").

Preferred: the supervisor's control API ``GET /v1/events?since=N&follow=1`` (JSON lines, usually
chunked), URL from ``<state_dir>/api.json``, bearer token from ``<state_dir>/token``. Without a
reachable API: tail ``<state_dir>/events.jsonl`` (written and flushed per event). Without either:
nothing (the placement file poll alone drives the witness). Events are applied in ``seq`` order;
``WitnessNode.apply_event`` ignores a seq it has seen, so switching sources never repeats one.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from urllib.parse import urlsplit

log = logging.getLogger("witness")


def _api(state_dir: str) -> tuple[str, int, str] | None:
    try:
        with open(os.path.join(state_dir, "api.json")) as f:
            url = json.load(f)["url"]
        with open(os.path.join(state_dir, "token")) as f:
            token = f.read().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        return None
    return u.hostname, u.port or 80, token


def _apply(node, line: bytes) -> None:
    line = line.strip()
    if not line:
        return
    try:
        ev = json.loads(line)
    except ValueError:
        return
    if isinstance(ev, dict):
        try:
            node.apply_event(ev)
        except Exception:
            log.exception("witness %s: event %r", node.node, ev)


async def _stream_api(node, host: str, port: int, token: str) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    try:
        writer.write((f"GET /v1/events?since={node.last_seq}&follow=1 HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        parts = status.split()
        if len(parts) < 2 or parts[1] != b"200":
            raise ConnectionError(f"events API answered {status.strip()!r}")
        chunked = False
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        node.event_source = "api"
        log.info("witness %s: following events from http://%s:%d since %d", node.node, host, port, node.last_seq)
        pending = b""
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = await reader.readexactly(size)
                await reader.readexactly(2)
            else:
                data = await reader.read(65536)
                if not data:
                    return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _apply(node, line)
    finally:
        writer.close()


async def _tail_file(node, path: str, api) -> None:
    """Tail events.jsonl until the API becomes reachable (checked every 2 s)."""
    node.event_source = "file"
    with open(path, "rb") as f:
        pending = b""
        checks = 0
        while True:
            data = f.read(65536)
            if data:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    _apply(node, line)
                continue
            await asyncio.sleep(0.05)
            checks += 1
            if checks % 40 == 0 and _api(node.c.state_dir) is not None:
                return


async def follow_events(node) -> None:
    state_dir = node.c.state_dir
    path = os.path.join(state_dir, "events.jsonl")
    while True:
        api = _api(state_dir)
        if api is not None:
            try:
                await _stream_api(node, *api)
            except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                log.info("witness %s: events API: %s", node.node, e)
        if os.path.exists(path):
            try:
                await _tail_file(node, path, api)
                continue
            except OSError as e:
                log.info("witness %s: events file: %s", node.node, e)
        node.event_source = "none"
        await asyncio.sleep(1.0)
