"""ncacn_ip_tcp glue (C706 appendix I, MS-RPCE 2.1.1.1): an asyncio Protocol per connection that
feeds an Association and writes what it produces. Used by the witness service and tests."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .association import Association

log = logging.getLogger("smbnd.rpc.tcp")

AssociationFactory = Callable[[str, int], Association]    # (peer, local port) -> Association


class RpcTcpProtocol(asyncio.Protocol):
    def __init__(self, factory: AssociationFactory, registry: set | None = None):
        self._factory = factory
        self._registry = registry
        self.transport: asyncio.Transport | None = None
        self.association: Association | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        peer_s = f"{peer[0]}:{peer[1]}" if peer else "?"
        try:
            self.association = self._factory(peer_s, sock[1] if sock else 0)
        except Exception:
            log.exception("creating an RPC association for %s", peer_s)
            transport.close()
            return
        self.association.on_output = self._flush
        self.association.local_address = sock[0] if sock else ""     # for ept_map towers
        if self._registry is not None:
            self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        if self.association is None:
            return
        self.association.receive_data(data)
        self._flush()

    def _flush(self) -> None:
        a, t = self.association, self.transport
        if a is None or t is None or t.is_closing():
            return
        out = a.data_to_send()
        if out:
            t.writelines(out)
        if a.want_close:
            t.close()

    def shutdown(self) -> None:
        if self.association is not None:
            self.association.shutdown()
            self._flush()

    def connection_lost(self, exc) -> None:
        if self._registry is not None:
            self._registry.discard(self)
        if self.association is not None:
            self.association.connection_lost()


class RpcTcpServer:
    """A listening ncacn_ip_tcp endpoint; ``close()`` sends shutdown PDUs to open associations."""

    def __init__(self, factory: AssociationFactory):
        self._factory = factory
        self.protocols: set[RpcTcpProtocol] = set()
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: RpcTcpProtocol(self._factory, self.protocols), host, port)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for proto in list(self.protocols):
            proto.shutdown()
        if self.server is not None:
            await self.server.wait_closed()
