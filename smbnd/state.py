"""The server's abstract data model (MS-SMB2 3.3.1): Share, Session, TreeConnect, Open.

Plain objects with no I/O, so that the handle-state store can later persist and move them.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ShareConfig
    from .crypto import SessionKeys, Signer, TransformCipher


@dataclass(eq=False)
class Share:
    name: str
    config: "ShareConfig | None"      # None for IPC$
    fs: Any = None                      # smbnd.vfs.ShareFS for disk shares

    @property
    def is_ipc(self) -> bool:
        return self.config is None


@dataclass(eq=False)
class Channel:
    """Session.ChannelList entry (MS-SMB2 3.3.1.14): one connection bound to a session, with
    its own Channel.SigningKey (3.3.5.5.3). While a binding SESSION_SETUP (3.3.5.5.2) is in
    progress the channel sits in Session.binding with its acceptor and preauth hash."""
    connection: Any
    signer: "Signer | None" = None
    acceptor: Any = None
    preauth_hash: bytes = b""


# Session.State (3.3.1.8)
SESSION_IN_PROGRESS = "InProgress"
SESSION_VALID = "Valid"
SESSION_EXPIRED = "Expired"


@dataclass(eq=False)
class Session:
    session_id: int
    connection: Any
    dialect: int
    state: str = SESSION_IN_PROGRESS
    user: str | None = None
    domain: str | None = None
    is_guest: bool = False
    is_anonymous: bool = False
    keys: "SessionKeys | None" = None
    signer: "Signer | None" = None
    encryptor: "TransformCipher | None" = None
    decryptor: "TransformCipher | None" = None
    signing_required: bool = False
    encrypt_data: bool = False
    preauth_hash: bytes = b""
    acceptor: Any = None
    trees: dict[int, "TreeConnect"] = field(default_factory=dict)
    next_tree_id: int = 1
    created: float = 0.0
    # Session.ChannelList (3.3.1.8/3.3.1.14): connection -> Channel, the first connection's
    # channel included once the session is valid; `connection` stays one live channel's connection
    channels: dict = field(default_factory=dict)
    binding: dict = field(default_factory=dict)      # connection -> Channel, bind in progress

    def on(self, conn) -> bool:
        """Is `conn` one of this session's channels (or the connection setting it up)?"""
        return conn is self.connection or conn in self.channels

    def signer_for(self, conn) -> "Signer | None":
        """Channel.SigningKey for requests/responses on `conn` (3.3.5.2.4, 3.3.4.1.1)."""
        ch = self.channels.get(conn)
        return ch.signer if ch is not None else self.signer

    def add_tree(self, tree: "TreeConnect") -> None:
        self.trees[tree.tree_id] = tree


@dataclass(eq=False)
class TreeConnect:
    tree_id: int
    session: Session
    share: Share
    maximal_access: int
    encrypt_data: bool = False
    open_count: int = 0


def file_id_bytes(persistent: int, volatile: int) -> bytes:
    return struct.pack("<QQ", persistent, volatile)


@dataclass(eq=False)
class ByteRangeLock:
    offset: int
    length: int
    exclusive: bool
    owner: "Open"


@dataclass(eq=False)
class Open:
    persistent_id: int
    volatile_id: int
    tree: TreeConnect
    session: Session
    name: str                      # share-relative path as the client gave it (backslashes)
    host_path: str
    is_directory: bool
    access: int
    share_access: int
    create_options: int
    fd: int | None = None
    oplock_level: int = 0
    lease: Any = None
    delete_on_close: bool = False
    durable: bool = False
    persistent: bool = False
    resilient: bool = False
    create_guid: bytes = b""
    durable_timeout: int = 0        # ms: Open.DurableOpenTimeout (or ResiliencyTimeout)
    dh: Any = None                  # smbnd.durable.DurableInfo of a durable/persistent/resilient open
    app_instance_id: bytes = b""
    position: int = 0
    mode: int = 0
    locks: list[ByteRangeLock] = field(default_factory=list)
    # QUERY_DIRECTORY enumeration state
    dir_entries: list | None = None
    dir_pos: int = 0
    dir_pattern: str | None = None
    channel_sequence: int = 0
    outstanding_requests: int = 0
    # replay (smbnd.replay, MS-SMB2 3.3.1.10 / 3.3.5.2.10 / 3.3.5.9.10)
    outstanding_pre_requests: int = 0      # Open.OutstandingPreRequestCount
    channel_generation: int = 0            # bumped whenever ChannelSequence advances
    replay_eligible: bool = False          # Open.IsReplayEligible
    create_action: int = 0                 # CreateAction a replayed CREATE answers with
    client_guid: bytes = b""               # Open.ClientGuid (the creating connection's)
    lock_sequences: bytearray | None = None   # Open.LockSequenceArray (3.3.5.14), survives reconnect
    app_instance_version: tuple[int, int] | None = None   # (High, Low), 3.3.5.9.13 (3.1.1)
    is_pipe: bool = False
    pipe: Any = None
    file_key: Any = None           # identity of the underlying file (dev, ino) for sharing checks
    write_through: bool = False
    closed: bool = False
    # in-flight async operations that must finish before a CLOSE completes (Samba bug 14769)
    holds: list = field(default_factory=list)
    stream: str = ""               # named data stream ("" = the file/directory itself); host_path is the base
    ea_index: int = 0              # FileFullEaInformation enumeration position (MS-FSA 2.1.5.11)
    lif: str = ""                  # cluster: the LIF (by local address) the open was granted through

    @property
    def file_id(self) -> bytes:
        return file_id_bytes(self.persistent_id, self.volatile_id)

    def close_fd(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None
