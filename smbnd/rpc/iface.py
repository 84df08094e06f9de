"""What services plug into the DCE/RPC runtime: interfaces with opnum handlers, the faults they
raise, and association groups for state shared by associations (C706 12.6.4.3 assoc_group_id)."""
from __future__ import annotations

import itertools
import logging
import os
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from . import pdu as p

if TYPE_CHECKING:
    from .association import Call

log = logging.getLogger("smbnd.rpc")

# fault status codes (C706 appendix E, MS-RPCE 2.2.2.7, MS-ERREF)
NCA_S_OP_RNG_ERROR = 0x1C010002
NCA_S_UNK_IF = 0x1C010003
NCA_S_PROTO_ERROR = 0x1C01000B
NCA_S_FAULT_CANCEL = 0x1C00000D
FAULT_OTHER = 0x00000001
FAULT_ACCESS_DENIED = 0x00000005
FAULT_SERVER_TOO_BUSY = 0x000006BB      # RPC_S_SERVER_TOO_BUSY
FAULT_NDR = 0x000006F7                  # RPC_X_BAD_STUB_DATA
FAULT_SEC_PKG_ERROR = 0x00000721        # RPC_S_SEC_PKG_ERROR


class RpcFault(Exception):
    """Raised by a handler: answer the call with a fault PDU carrying ``status``."""

    def __init__(self, status: int, did_not_execute: bool = False):
        super().__init__(f"fault 0x{status:08x}")
        self.status = status
        self.did_not_execute = did_not_execute


Handler = Callable[["Call", bytes], "bytes | None"]


@dataclass(eq=False)
class Interface:
    """An RPC interface: abstract syntax and its operations (opnum -> handler)."""
    uuid: str
    version: tuple[int, int]
    name: str
    handlers: dict[int, Handler]
    min_auth_level: int = p.LEVEL_NONE      # e.g. PKT_INTEGRITY for the witness (MS-SWN 3.1.4)

    @property
    def syntax(self) -> p.SyntaxId:
        return p.SyntaxId.of(self.uuid, *self.version)

    def accepts(self, s: p.SyntaxId) -> bool:
        """C706 12.6.3.1: same UUID and major version, client minor not above ours."""
        return (s.uuid == uuidlib.UUID(self.uuid) and s.version & 0xFFFF == self.version[0]
                and s.version >> 16 <= self.version[1])


@dataclass(eq=False)
class AssocGroup:
    id: int
    refs: int = 0
    data: dict = field(default_factory=dict)          # per-group service state (context handles)
    on_empty: list = field(default_factory=list)


class AssocGroups:
    """Association groups (assoc_group_id, C706 12.6.4.3-4): associations binding with the same id
    share state, e.g. context handles."""

    def __init__(self) -> None:
        self._groups: dict[int, AssocGroup] = {}
        self._ids = itertools.count(int.from_bytes(os.urandom(2), "little") << 8 | 1)

    def create(self) -> AssocGroup:
        gid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        g = self._groups[gid] = AssocGroup(gid, 1)
        return g

    def join(self, gid: int) -> AssocGroup | None:
        g = self._groups.get(gid)
        if g is not None:
            g.refs += 1
        return g

    def leave(self, g: AssocGroup) -> None:
        g.refs -= 1
        if g.refs <= 0 and self._groups.pop(g.id, None) is not None:
            for cb in g.on_empty:
                try:
                    cb(g)
                except Exception:
                    log.exception("association group cleanup")
