"""asyncio glue: NetBIOS session-service framing (MS-SMB2 2.1 Direct TCP).

Receive side is a BufferedProtocol: small frames are parsed out of a reusable scratch buffer;
a frame larger than that (a big WRITE) gets its own exact-size buffer that the kernel fills
directly, so its payload is never copied on the way in. Large responses go out with one
sendmsg() of the parts (no join copy) when the transport has nothing queued.

Cluster nodes add and remove listeners at runtime (``Listeners``: one per LIF address; moving a LIF
= stop listening and close the connections that came in on its address, docs/cluster-design.md),
and frames for a frozen or slowed share wait in a per-(connection, share) queue (smbnd.vfs_gate).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time

from .connection import Connection

log = logging.getLogger("smbnd.netio")
SCRATCH = 256 * 1024
LARGE = 64 * 1024


TCP_REPAIR = 19          # linux/tcp.h; needs CAP_NET_ADMIN


class SmbProtocol(asyncio.BufferedProtocol):
    def __init__(self, server):
        self.server = server
        self.transport = None
        self.conn: Connection | None = None
        self._sock = None
        self._scratch = bytearray(SCRATCH)
        self._view = memoryview(self._scratch)
        self._start = 0
        self._end = 0
        self._big: bytearray | None = None
        self._big_pos = 0
        self._held: dict[str, collections.deque] = {}    # share -> (frame, arrival) waiting at the gate

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        raw = getattr(sock, "_sock", sock)   # asyncio wraps it in a TransportSocket
        self._sock = raw if isinstance(raw, socket.socket) else None
        try:
            if self._sock is not None:
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.conn = Connection(self.server, self._write, self._close, f"{peer}")
        local = transport.get_extra_info("sockname")
        if local:
            self.conn.local_addr = local[0]
            self.conn.lif = self.server.config.lifs.get(local[0], "")
        self.server.connections.add(self.conn)

    # ---- send
    def _write(self, parts) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        n = sum(len(p) for p in parts)
        head = n.to_bytes(4, "big")
        if n >= LARGE and self._sock is not None and t.get_write_buffer_size() == 0:
            bufs = [head, *parts]
            try:
                sent = self._sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0   # let the transport report the error on its own write
            rest = []
            for b in bufs:
                if sent >= len(b):
                    sent -= len(b)
                    continue
                rest.append(memoryview(b)[sent:] if sent else b)
                sent = 0
            if rest:
                t.write(b"".join(rest))
            return
        t.writelines([head, *parts])

    def _close(self):
        if self.transport is not None:
            if self.conn is not None and self.conn.vanish:
                # the LIF's address has moved to another node (netns backend): leave like a host that
                # is gone -- no FIN, no RST (TCP_REPAIR close). The peer's next segment reaches the new
                # owner, whose RST makes the client reconnect and replay, instead of an EPIPE in the
                # middle of sending a request (the Linux client fails such a write).
                try:
                    self.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
                except (OSError, AttributeError):
                    pass
                self.transport.abort()
                return
            self.transport.close()

    # ---- receive
    def get_buffer(self, sizehint):
        if self._big is not None:
            return memoryview(self._big)[self._big_pos:]
        if self._end == SCRATCH:
            self._compact()
        return self._view[self._end:]

    def _compact(self) -> None:
        n = self._end - self._start
        self._scratch[:n] = self._scratch[self._start:self._end]
        self._start, self._end = 0, n

    def buffer_updated(self, nbytes):
        if self._big is not None:
            self._big_pos += nbytes
            if self._big_pos == len(self._big):
                frame, self._big = self._big, None
                self._deliver(frame)
            return
        self._end += nbytes
        self._drain()

    def _drain(self) -> None:
        sc = self._scratch
        while self.conn is not None and not self.conn.closed and self._end - self._start >= 4:
            s = self._start
            if sc[s] != 0:
                log.info("bad NetBIOS frame type %#x from %s", sc[s], self.conn.peer)
                self.conn.close()
                return
            n = int.from_bytes(sc[s + 1:s + 4], "big")
            avail = self._end - s - 4
            if avail >= n:
                frame = bytes(sc[s + 4:s + 4 + n])
                self._start += 4 + n
                self._deliver(frame)
                continue
            if n + 4 > SCRATCH:
                big = bytearray(n)
                big[:avail] = sc[s + 4:self._end]
                self._big, self._big_pos = big, avail
                self._start = self._end = 0
                return
            if s + 4 + n > SCRATCH:
                self._compact()
            return
        if self._start == self._end:
            self._start = self._end = 0

    def _deliver(self, frame) -> None:
        gates = self.server.gates
        if gates.active or self._held:
            share = gates.share_of_frame(self.conn, frame)
            if share is not None and (share in self._held or gates.must_hold(share)):
                q = self._held.get(share)
                if q is None:
                    q = self._held[share] = collections.deque()
                    asyncio.get_running_loop().create_task(self._pump(share, q))
                q.append((frame, time.monotonic()))
                return
        self.conn.frame_received(frame)

    async def _pump(self, share: str, q: collections.deque) -> None:
        """Deliver the held frames of one share in order, each when the gate lets it through."""
        try:
            while q and self.conn is not None and not self.conn.closed:
                frame, arrived = q[0]
                await self.server.gates.ready(share, arrived)
                q.popleft()
                if self.conn is None or self.conn.closed:
                    break
                self.conn.frame_received(frame)
        finally:
            q.clear()
            if self._held.get(share) is q:
                del self._held[share]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if self.conn is not None:
            self.conn.close()
            self.server.connections.discard(self.conn)
        self.transport = None


class Listeners:
    """Listening sockets by address, started and stopped at runtime (a cluster node's LIFs)."""

    def __init__(self, server):
        self.server = server
        self.by_addr: dict[str, asyncio.AbstractServer] = {}

    async def start(self, host: str, port: int) -> tuple:
        srv = self.by_addr.get(host)
        if srv is None:
            loop = asyncio.get_running_loop()
            srv = await loop.create_server(lambda: SmbProtocol(self.server), host, port, reuse_address=True)
            self.by_addr[host] = srv
        return srv.sockets[0].getsockname()

    def stop(self, host: str) -> bool:
        """Stop accepting on `host` (established connections stay: close_connections)."""
        srv = self.by_addr.pop(host, None)
        if srv is None:
            return False
        srv.close()
        return True

    def close_connections(self, host: str) -> int:
        """Close every connection that arrived on `host` (MS-SMB2 3.3.7.1 runs for each)."""
        conns = [c for c in self.server.connections if c.local_addr == host]
        for c in conns:
            c.close()
        return len(conns)

    def addresses(self) -> list[str]:
        return sorted(self.by_addr)

    async def close_all(self) -> None:
        for host in list(self.by_addr):
            self.stop(host)


async def serve(server, hosts_ports, ready_cb=None):
    loop = asyncio.get_running_loop()
    servers = []
    for host, port in hosts_ports:
        srv = await loop.create_server(lambda: SmbProtocol(server), host, port, reuse_address=True)
        servers.append(srv)
    if ready_cb:
        ready_cb([s.sockets[0].getsockname() for s in servers])
    return servers
