"""Lease and oplock state as plain data (MS-SMB2 3.3.1.4 Lease / LeaseTable, MS-FSA 2.1.1.10 Oplock).

No I/O and no timers here, so that a later handle-state store can persist these objects; the
break machinery lives in smbnd.oplock.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .wire import create as cr

# caching flags (MS-SMB2 2.2.13.2.8 LeaseState; MS-FSA 2.1.1.10 READ/WRITE/HANDLE_CACHING)
R = cr.LEASE_READ
H = cr.LEASE_HANDLE
W = cr.LEASE_WRITE
RWH = R | W | H

# the lease states a server can grant (MS-FSA 2.1.5.18: legal RequestedOplockLevel combinations)
GRANTABLE = {0, R, R | H, R | W, RWH}

_OPLOCK_TO_CACHING = {cr.OPLOCK_LEVEL_NONE: 0, cr.OPLOCK_LEVEL_II: R,
                      cr.OPLOCK_LEVEL_EXCLUSIVE: R | W, cr.OPLOCK_LEVEL_BATCH: RWH}


def oplock_caching(level: int) -> int:
    """Caching an oplock level amounts to: batch = RWH, exclusive = RW, level II = R."""
    return _OPLOCK_TO_CACHING.get(level, 0)


def caching_oplock(caching: int) -> int:
    """The oplock level that carries `caching` (MS-FSA 2.1.5.18.3: level II can't cache handles)."""
    if caching & (R | W | H) == RWH:
        return cr.OPLOCK_LEVEL_BATCH
    if caching & (R | W) == R | W:
        return cr.OPLOCK_LEVEL_EXCLUSIVE
    if caching & R:
        return cr.OPLOCK_LEVEL_II
    return cr.OPLOCK_LEVEL_NONE


def state_str(state: int) -> str:
    return "".join(c for c, b in (("R", R), ("H", H), ("W", W)) if state & b) or "-"


@dataclass(eq=False)
class Lease:
    """One entry of the server's LeaseTable (MS-SMB2 3.3.1.4), identified by ClientGuid + LeaseKey.

    All opens of the same client that carry the same key share it, whatever connection they
    arrive on. `opens` lists them (Open objects; Open.lease points back here).
    """
    client_guid: bytes
    key: bytes
    file_key: tuple                     # (st_dev, st_ino) of the one file the key is bound to
    version: int = 1                    # 1 = SMB2_CREATE_REQUEST_LEASE, 2 = ..._V2 (first opener's)
    state: int = 0                      # Lease.LeaseState
    epoch: int = 0                      # Lease.Epoch (v2), incremented on every state change
    parent_key: bytes | None = None     # Lease.ParentLeaseKey (v2)
    breaking: bool = False              # Lease.Breaking
    breaking_to_requested: int = 0      # Lease.BreakToLeaseState: what the last notification asked for
    breaking_to_required: int = 0       # the least the pending conflicts need (breaks go in steps)
    is_dir: bool = False                # a directory lease (MS-SMB2 3.3.5.9.11, 3.x only)
    opens: list = field(default_factory=list)

    @property
    def table_key(self) -> tuple[bytes, bytes]:
        return self.client_guid, self.key


class LeaseTable:
    """Server-global GlobalLeaseTableList, flattened: (ClientGuid, LeaseKey) -> Lease."""

    def __init__(self):
        self.by_key: dict[tuple[bytes, bytes], Lease] = {}
        self.miss = None        # (client_guid, key) -> None: rebuild lazily restored holders (smbnd.pending)

    def get(self, client_guid: bytes, key: bytes) -> Lease | None:
        lease = self.by_key.get((client_guid, key))
        if lease is None and self.miss is not None:
            self.miss(client_guid, key)
            lease = self.by_key.get((client_guid, key))
        return lease

    def add(self, lease: Lease) -> None:
        self.by_key[lease.table_key] = lease

    def remove(self, lease: Lease) -> None:
        if self.by_key.get(lease.table_key) is lease:
            del self.by_key[lease.table_key]

    def __len__(self) -> int:
        return len(self.by_key)
