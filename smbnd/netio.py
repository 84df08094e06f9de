"""asyncio glue: NetBIOS session-service framing (MS-SMB2 2.1 Direct TCP) over a Protocol."""
from __future__ import annotations

import asyncio
import logging
import struct

from .connection import Connection

log = logging.getLogger("smbnd.netio")
MAX_FRAME = 0xFFFFFF


class SmbProtocol(asyncio.Protocol):
    def __init__(self, server):
        self.server = server
        self.transport = None
        self.conn: Connection | None = None
        self._buf = bytearray()

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.conn = Connection(self.server, self._write, self._close, f"{peer}")
        self.server.connections.add(self.conn)

    def _write(self, parts):
        n = sum(len(p) for p in parts)
        self.transport.writelines([struct.pack(">I", n), *parts])

    def _close(self):
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data):
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            if buf[0] != 0:
                log.info("bad NetBIOS frame type %#x from %s", buf[0], self.conn.peer)
                self.conn.close()
                buf.clear()
                return
            n = int.from_bytes(buf[1:4], "big")
            if len(buf) < 4 + n:
                break
            frame = bytes(buf[4:4 + n])
            del buf[:4 + n]
            self.conn.frame_received(frame)
            if self.conn.closed:
                buf.clear()
                return

    def connection_lost(self, exc):
        if self.conn is not None:
            self.conn.close()
            self.server.connections.discard(self.conn)
        self.transport = None


async def serve(server, hosts_ports, ready_cb=None):
    loop = asyncio.get_running_loop()
    servers = []
    for host, port in hosts_ports:
        srv = await loop.create_server(lambda: SmbProtocol(server), host, port, reuse_address=True)
        servers.append(srv)
    if ready_cb:
        ready_cb([s.sockets[0].getsockname() for s in servers])
    return servers
