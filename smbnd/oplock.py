"""Oplocks and leases (MS-SMB2 3.3.5.9.8, 3.3.4.6/3.3.4.7, 3.3.5.22).

This first slice grants no caching (OplockLevel NONE, no lease): always correct, never fast.
Breaks, lease state and durable handles come with the CA-share work.
"""
from __future__ import annotations

from .wire import create as cr


class OplockManager:
    leasing = False

    def __init__(self, server):
        self.server = server

    def on_create(self, req, o, r) -> tuple[int, bytes | None]:
        return cr.OPLOCK_LEVEL_NONE, None

    def on_close(self, o) -> None:
        pass

    def on_write(self, o) -> None:
        pass
