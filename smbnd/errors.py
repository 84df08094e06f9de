"""Exceptions carrying an NTSTATUS back to the dispatcher."""
from __future__ import annotations


class SmbError(Exception):
    """Fail the current request with `status` (and an optional error-data payload)."""

    def __init__(self, status: int, data: bytes = b""):
        super().__init__(f"0x{status:08X}")
        self.status = status
        self.data = data


class Disconnect(Exception):
    """Drop this connection (MS-SMB2 says 'disconnect'); other connections are untouched."""
