"""The cluster event log: ``<state_dir>/events.jsonl`` plus live subscribers.

Every event is ``{"seq": int, "ts": unix float, "type": str, ...}`` with the types and fields of
docs/cluster-design.md ("Events"). ``seq`` increases by one per event and continues across
supervisor restarts (the log is read back at start). Each line is written and flushed before
``emit`` returns, so a reader tailing the file (the witness, a drill) sees events in order.
Subscribers (``GET /v1/events?follow=1``) get an ``asyncio.Queue``; a subscriber that stops
reading is dropped once its queue holds ``MAX_QUEUE`` events rather than growing without bound.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque

EVENT_TYPES = {
    "cluster_up", "cluster_down", "node_up", "node_down", "node_fenced", "takeover_start", "takeover_done",
    "giveback_start", "giveback_done", "lif_moving", "lif_moved", "lif_down", "lif_up", "aggr_relocating",
    "aggr_relocated", "vol_moving", "vol_moved", "partition_detected", "fault", "fault_cleared", "placement",
}
MAX_MEMORY = 100_000      # events kept in memory for ?since=; older ones are read from the file
MAX_QUEUE = 10_000


class EventLog:
    def __init__(self, path: str, clock=time.time):
        self.path = path
        self._clock = clock
        self._recent: deque[dict] = deque(maxlen=MAX_MEMORY)
        self._subs: set[asyncio.Queue] = set()
        self.seq = 0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        for ev in self._read_file():
            self._recent.append(ev)
            self.seq = max(self.seq, ev.get("seq", 0))
        self._f = open(path, "a", encoding="utf-8")
        if self._f.tell() > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._f.write("\n")      # end a torn last line; the next event starts clean

    def _read_file(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue        # a torn last line after a crash
                    if isinstance(ev, dict) and isinstance(ev.get("seq"), int):
                        yield ev
        except FileNotFoundError:
            return

    def emit(self, type_: str, **fields) -> dict:
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
        self.seq += 1
        ev = {"seq": self.seq, "ts": round(self._clock(), 6), "type": type_, **fields}
        self._f.write(json.dumps(ev, separators=(",", ":")) + "\n")
        self._f.flush()
        self._recent.append(ev)
        for q in list(self._subs):
            if q.qsize() >= MAX_QUEUE:
                self._subs.discard(q)
                q.put_nowait(None)      # tells the reader it was dropped
            else:
                q.put_nowait(ev)
        return ev

    def since(self, seq: int = 0) -> list[dict]:
        """Events with seq > ``seq`` (from memory, or the file when older than what memory holds)."""
        if self._recent and seq + 1 >= self._recent[0]["seq"]:
            return [e for e in self._recent if e["seq"] > seq]
        return [e for e in self._read_file() if e["seq"] > seq]

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subs.discard(q)

    def close(self) -> None:
        for q in list(self._subs):
            q.put_nowait(None)
        self._subs.clear()
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except (OSError, ValueError):
            pass
        self._f.close()
