"""Named pipes on IPC$ (MS-SMB2 3.3.5.9, 3.3.5.12, 3.3.5.13, 3.3.5.15.3-4 for pipes).

Each open of a pipe gets its own DCE/RPC association (ncacn_np, MS-RPCE 2.1.1.2). The pipe is
in message mode, as Windows' RPC pipes are: every PDU the association produces is one message;
a READ (or the read half of FSCTL_PIPE_TRANSCEIVE) returns at most one message, and a message
larger than the read gets STATUS_BUFFER_OVERFLOW with the rest left for the next READ
(MS-FSCC 2.3.48 / Windows NPFS). A READ on an empty pipe waits (STATUS_PENDING) until a response
is produced. The SMB session's user is the caller identity; RPC-level auth is optional.
"""
from __future__ import annotations

import struct
from collections import deque
from typing import Callable

from .. import status as st
from ..connection import Reply
from ..errors import SmbError
from ..state import Open
from ..wire import create as cr
from ..wire import fscc
from ..wire import messages as m
from ..wire import query as q

STATUS_INVALID_PIPE_STATE = 0xC00000AD
STATUS_PIPE_BROKEN = 0xC000014B
STATUS_PIPE_DISCONNECTED = 0xC00000B0
STATUS_BUFFER_TOO_SMALL = 0xC0000023

FSCTL_PIPE_PEEK = 0x0011400C
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FILE_ATTRIBUTE_NORMAL = 0x80
# MS-FSCC 2.4.36 FilePipeInformation / 2.4.37 FilePipeLocalInformation
FilePipeInformation = 23
FilePipeLocalInformation = 24
FILE_PIPE_MESSAGE_MODE = 1
FILE_PIPE_QUEUE_OPERATION = 0
FILE_PIPE_MESSAGE_TYPE = 1
FILE_PIPE_FULL_DUPLEX = 2
FILE_PIPE_CONNECTED_STATE = 3
FILE_PIPE_CLOSING_STATE = 4
FILE_PIPE_CLIENT_END = 0
PIPE_QUOTA = 4096


def _srvsvc(server, session):
    from ..rpc.srvsvc import Srvsvc
    return [Srvsvc(server).interface()]


# pipe name (lower case) -> factory(server, session) -> interfaces served on it
PIPE_SERVICES: dict[str, Callable] = {"srvsvc": _srvsvc}


def pipe_name(name: str) -> str:
    """'srvsvc', '\\srvsvc', 'PIPE\\srvsvc', '\\PIPE\\srvsvc' -> 'srvsvc'."""
    n = name.lstrip("\\")
    if n.lower().startswith("pipe\\"):
        n = n[5:]
    return n.lower()


class Pipe:
    """Server end of one pipe instance: association + message queue + waiting readers."""

    def __init__(self, name: str, association):
        self.name = name
        self.association = association
        self.messages: deque[bytearray] = deque()
        self.waiters: deque = deque()      # (AsyncOp, max length, packer)
        self.closed = False
        association.on_output = self._pull

    # -- data flow
    def write(self, data) -> None:
        self.association.receive_data(data)
        self._pull()

    def _pull(self) -> None:
        for msg in self.association.data_to_send():
            if msg:
                self.messages.append(bytearray(msg))
        while self.waiters and self.messages:
            op, length, pack = self.waiters.popleft()
            data, status = self.read(length)
            op.complete(status, pack(data))
        if self.disconnected:
            self._fail_waiters(STATUS_PIPE_DISCONNECTED)

    @property
    def disconnected(self) -> bool:
        """The association gave up (protocol error) and everything it sent has been read."""
        return not self.messages and (self.association.want_close or self.association.closed)

    @property
    def available(self) -> int:
        return sum(len(x) for x in self.messages)

    def read(self, length: int) -> tuple[bytes, int]:
        """One message, or its first ``length`` bytes with STATUS_BUFFER_OVERFLOW."""
        msg = self.messages[0]
        if len(msg) <= length:
            self.messages.popleft()
            return bytes(msg), st.STATUS_SUCCESS
        data = bytes(msg[:length])
        del msg[:length]
        return data, st.STATUS_BUFFER_OVERFLOW

    def wait(self, req, length: int, pack) -> Reply:
        def cancel(op):
            for w in list(self.waiters):
                if w[0] is op:
                    self.waiters.remove(w)
        op = req.go_async(cancel)
        self.waiters.append((op, length, pack))
        reply = Reply(status=st.STATUS_PENDING)
        reply.pending = op
        return reply

    def _fail_waiters(self, status: int) -> None:
        while self.waiters:
            op, _n, _p = self.waiters.popleft()
            op.complete(status, [m.ERROR_BODY])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._fail_waiters(STATUS_PIPE_BROKEN)
        self.association.connection_lost()
        self.messages.clear()


def pipe_create(req, r) -> Reply:
    from ..rpc.association import Association
    from ..rpc.security import NtlmProvider, Principal
    server, session = req.server, req.session
    name = pipe_name(r.name)
    factory = PIPE_SERVICES.get(name)
    if factory is None or r.options & cr.FILE_DIRECTORY_FILE:
        raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
    principal = Principal(session.user, session.domain, anonymous=session.is_anonymous, guest=session.is_guest)
    assoc = Association(factory(server, session), security=NtlmProvider.for_server(server), principal=principal,
                        secondary_address=f"\\PIPE\\{name}", name=f"{name}@{req.conn.peer}")
    pid, vid = server.new_file_ids()
    o = Open(persistent_id=pid, volatile_id=vid, tree=req.tree, session=session, name=name, host_path="",
             is_directory=False, access=r.desired_access, share_access=r.share_access,
             create_options=r.options, is_pipe=True, pipe=Pipe(name, assoc))
    server.opens[vid] = o
    req.tree.open_count += 1
    req.related_file_id = o.file_id
    # MS-SMB2 3.3.5.9: a pipe has no times; Windows and Samba answer 4096 / 0 / NORMAL
    return Reply(cr.pack_create_response(0, 0, cr.FILE_OPENED, (0, 0, 0, 0), PIPE_QUOTA, 0,
                                         FILE_ATTRIBUTE_NORMAL, o.file_id, []))


def _pipe(o) -> Pipe:
    p = o.pipe
    if not isinstance(p, Pipe) or p.closed:
        raise SmbError(STATUS_PIPE_DISCONNECTED)
    return p


def _read_body(data: bytes) -> list:
    return [m.pack_read_response_fixed(len(data)), data]


def pipe_read(req, o, r) -> Reply:
    p = _pipe(o)
    if r.length > req.server.config.max_read_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    if p.messages:
        if r.length == 0:
            return Reply(_read_body(b""))
        data, status = p.read(r.length)
        return Reply(_read_body(data), status)
    if p.disconnected:
        raise SmbError(STATUS_PIPE_DISCONNECTED)
    return p.wait(req, r.length, _read_body)


def pipe_write(req, o, r) -> Reply:
    p = _pipe(o)
    if p.disconnected:
        raise SmbError(STATUS_PIPE_DISCONNECTED)
    if r.length > req.server.config.max_write_size:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    p.write(req.msg[r.data_offset:r.data_offset + r.length])
    return Reply(m.pack_write_response(r.length))


def pipe_transceive(req, o, r) -> Reply:
    """IOCTL on a pipe handle: FSCTL_PIPE_TRANSCEIVE (MS-SMB2 3.3.5.15.3, MS-FSCC 2.3.47-48),
    FSCTL_PIPE_PEEK (3.3.5.15.4)."""
    p = _pipe(o)
    code = r.ctl_code

    def body(data: bytes) -> list:
        return [q.pack_ioctl_response(code, o.file_id, data)]

    if code == FSCTL_PIPE_PEEK:
        return _peek(p, r, body)
    if code != FSCTL_PIPE_TRANSCEIVE:
        raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)
    if p.disconnected:
        raise SmbError(STATUS_PIPE_DISCONNECTED)
    p.write(r.input)
    if p.messages:
        data, status = p.read(r.max_output_response)
        return Reply(body(data), status)
    if p.disconnected:
        raise SmbError(STATUS_PIPE_DISCONNECTED)
    return p.wait(req, r.max_output_response, body)


def _peek(p: Pipe, r, body) -> Reply:
    """FSCTL_PIPE_PEEK reply (MS-FSCC 2.3.46): state, bytes available, messages, first message
    length, then as much of the data as fits; nothing is consumed."""
    if r.max_output_response < 16:
        raise SmbError(STATUS_BUFFER_TOO_SMALL)
    first = bytes(p.messages[0]) if p.messages else b""
    room = r.max_output_response - 16
    state = FILE_PIPE_CLOSING_STATE if p.disconnected else FILE_PIPE_CONNECTED_STATE
    out = struct.pack("<IIII", state, p.available, len(p.messages), len(first)) + first[:room]
    return Reply(body(out), st.STATUS_BUFFER_OVERFLOW if len(first) > room else st.STATUS_SUCCESS)


def pipe_query_info(req, o, r) -> Reply:
    """QUERY_INFO on a pipe (MS-SMB2 3.3.5.20.1 via MS-FSCC): the classes named pipes answer."""
    p = _pipe(o)
    if r.info_type != q.INFO_FILE:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    cls = r.info_class
    if cls == fscc.FileStandardInformation:
        # NPFS reports the pipe as delete-pending (it vanishes with its last handle), as Samba does
        data = struct.pack("<qqIBBxx", PIPE_QUOTA, p.available, 1, 1, 0)
    elif cls == fscc.FileBasicInformation:
        data = struct.pack("<qqqqII", 0, 0, 0, 0, FILE_ATTRIBUTE_NORMAL, 0)
    elif cls == FilePipeInformation:
        data = struct.pack("<II", FILE_PIPE_MESSAGE_MODE, FILE_PIPE_QUEUE_OPERATION)
    elif cls == FilePipeLocalInformation:
        state = FILE_PIPE_CLOSING_STATE if p.disconnected else FILE_PIPE_CONNECTED_STATE
        data = struct.pack("<IIIIIIIIII", FILE_PIPE_MESSAGE_TYPE, FILE_PIPE_FULL_DUPLEX, 0xFFFFFFFF, 1,
                           PIPE_QUOTA, p.available, PIPE_QUOTA, PIPE_QUOTA, state, FILE_PIPE_CLIENT_END)
    else:
        raise SmbError(st.STATUS_NOT_SUPPORTED)
    if r.output_length < len(data):
        raise SmbError(st.STATUS_INFO_LENGTH_MISMATCH)
    return Reply(q.pack_output_buffer(data))


def pipe_wait(req, r) -> Reply:
    """FSCTL_PIPE_WAIT (MS-FSCC 2.3.49, FILE_PIPE_WAIT_FOR_BUFFER): our pipes always have a free
    instance, so a known name succeeds at once."""
    if len(r.input) < 14:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    _timeout, nlen, _specified, _pad = struct.unpack_from("<qIBB", r.input, 0)
    if 14 + nlen > len(r.input):
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    name = r.input[14:14 + nlen].decode("utf-16-le", "replace")
    if pipe_name(name) not in PIPE_SERVICES:
        raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)
    return Reply(q.pack_ioctl_response(r.ctl_code, r.file_id, b""))
