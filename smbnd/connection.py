"""One SMB2 transport connection: framing-independent request pipeline (MS-SMB2 3.3.5.2).

`Connection.frame_received(frame)` takes one NetBIOS-session-service payload and writes the
responses through the `write(parts)` callback; the asyncio glue (netio.py) only frames bytes.
"""
from __future__ import annotations

import logging
import struct
from typing import Callable

from cryptography.exceptions import InvalidTag

from . import replay
from . import status as st
from .credits import CreditWindow
from .crypto import SIGN_AES_GMAC
from .errors import Disconnect, SmbError
from .state import SESSION_EXPIRED, SESSION_VALID, Open, Session, TreeConnect
from .wire import header as hd
from .vfs import VfsError, map_oserror
from .wire.messages import ERROR_BODY, MessageError, pack_error
from .wire.negotiate import NegotiateError

log = logging.getLogger("smbnd.connection")

NO_SESSION_COMMANDS = {hd.NEGOTIATE, hd.SESSION_SETUP, hd.ECHO}
NO_TREE_COMMANDS = NO_SESSION_COMMANDS | {hd.LOGOFF, hd.TREE_CONNECT, hd.CANCEL}
ALL_FF16 = b"\xff" * 16


class Reply:
    """A handler's result: status and body buffers (kept as a list to avoid copying data)."""

    __slots__ = ("status", "body", "session", "tree_id", "sign", "signer", "after_pack", "pending", "no_response")

    def __init__(self, body=None, status: int = st.STATUS_SUCCESS):
        self.status = status
        self.body = body if isinstance(body, list) else [body if body is not None else ERROR_BODY]
        self.session: Session | None = None      # overrides request session (SESSION_SETUP)
        self.tree_id: int | None = None
        self.sign: bool | None = None            # force signing on/off
        self.signer = None                       # key other than this channel's (binding, 3.3.5.5.2)
        self.after_pack: Callable[[bytes], None] | None = None
        self.pending: "AsyncOp | None" = None
        self.no_response = False


class AsyncOp:
    """An operation answered with an interim STATUS_PENDING (MS-SMB2 3.3.4.2)."""

    __slots__ = ("conn", "async_id", "message_id", "command", "session", "tree_id", "signed", "encrypted",
                 "cancel_cb", "done", "chan_open")

    def __init__(self, conn, async_id, req: "Request", cancel_cb):
        self.conn = conn
        self.async_id = async_id
        self.message_id = req.hdr.message_id
        self.command = req.hdr.command
        self.session = req.session
        self.tree_id = req.tree.tree_id if req.tree else req.hdr.tree_id
        self.signed = req.signed
        self.encrypted = req.encrypted
        self.cancel_cb = cancel_cb
        self.done = False
        self.chan_open, req.chan_open = req.chan_open, None   # counted until the final response

    def complete(self, status: int, body) -> None:
        if self.done:
            return
        self.done = True
        replay.request_done(self)
        self.conn.async_ops.pop(self.async_id, None)
        self.conn.send_async_final(self, status, body)

    def cancel(self) -> None:
        if not self.done and self.cancel_cb:
            self.cancel_cb(self)
        if not self.done:
            self.complete(st.STATUS_CANCELLED, [ERROR_BODY])


class Request:
    """One command of a (possibly compounded) request."""

    __slots__ = ("conn", "hdr", "msg", "session", "tree", "encrypted", "signed", "related_file_id",
                 "is_related", "server", "chain_error", "is_last", "chan_open")

    def __init__(self, conn, hdr, msg, encrypted):
        self.conn = conn
        self.server = conn.server
        self.hdr = hdr
        self.msg = msg
        self.session: Session | None = None
        self.tree: TreeConnect | None = None
        self.encrypted = encrypted
        self.signed = bool(hdr.flags & hd.FLAGS_SIGNED)
        self.related_file_id: bytes | None = None
        self.is_related = bool(hdr.flags & hd.FLAGS_RELATED_OPERATIONS)
        self.is_last = hdr.next_command == 0
        self.chain_error: int | None = None   # status of a failed CREATE earlier in a related chain
        self.chan_open = None   # (Open, ChannelSequence, generation) while counted (smbnd.replay)

    def open(self, file_id: bytes) -> Open:
        """Look up an Open (MS-SMB2 3.3.5.2.7.2 for related FileIds)."""
        if file_id == ALL_FF16 and self.is_related and self.related_file_id is not None:
            file_id = self.related_file_id
        persistent, volatile = struct.unpack("<QQ", file_id)
        o = self.server.opens.get(volatile)
        if o is None or o.persistent_id != persistent or o.closed or o.tree is not self.tree \
                or o.session is not self.session:
            raise SmbError(st.STATUS_FILE_CLOSED)
        replay.on_open_resolved(self, o)     # 3.3.5.2.10 ChannelSequence
        self.related_file_id = o.file_id
        return o

    def go_async(self, cancel_cb=None) -> AsyncOp:
        return self.conn.new_async(self, cancel_cb)


class Connection:
    def __init__(self, server, write: Callable[[list], None], close: Callable[[], None], peer: str = "?"):
        self.server = server
        self._write = write
        self._close = close
        self.peer = peer
        self.dialect = 0
        self.negotiated = False
        self.client_guid = b""
        self.client_capabilities = 0
        self.client_security_mode = 0
        self.server_capabilities = 0
        self.server_security_mode = 0
        self.preauth_hash = b"\0" * 64
        self.cipher_id = 0
        self.signing_algorithm = 0
        self.credits = CreditWindow(server.config.max_credits)
        self.sessions: dict[int, Session] = {}
        self.async_ops: dict[int, AsyncOp] = {}
        self._next_async_id = 1
        self.closed = False
        self.supports_multi_credit = False
        self.read_body_padding = 0      # smbtorture FSCTL (torture_fsctls only)
        self.force_unacked_timeout = False   # smbtorture FSCTL: breaks sent here count as unacknowledged
        self.local_addr = ""             # address the client connected to (netio)
        self.lif = ""                    # cluster: the LIF of that address (ServerConfig.lifs), else ""
        self.vanish = False              # close without FIN/RST: its LIF moved away (netio._close)

    # ---- entry point
    def frame_received(self, frame) -> None:
        if self.closed:
            return
        try:
            proto = bytes(frame[:4])
            if proto == hd.PROTOCOL_SMB2:
                self._process_chain(frame, None)
            elif proto == hd.PROTOCOL_TRANSFORM:
                session, plain = self._decrypt(frame)
                self._process_chain(plain, session)
            elif proto == hd.PROTOCOL_SMB1 and not self.negotiated:
                from .handlers.negotiate import smb1_negotiate
                smb1_negotiate(self, frame)
            else:
                raise Disconnect("unknown protocol id")
        except Disconnect as e:
            log.info("disconnecting %s: %s", self.peer, e)
            self.close()
        except hd.HeaderError as e:
            # MS-SMB2 3.3.5.2: a header (or transform header) that cannot be parsed -> disconnect
            log.info("disconnecting %s: %s", self.peer, e)
            self.close()
        except Exception:  # a bug must cost this connection only
            log.exception("internal error on connection %s; disconnecting", self.peer)
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for op in list(self.async_ops.values()):
            op.done = True
            replay.request_done(op)
            if op.cancel_cb:
                try:
                    op.cancel_cb(op)
                except Exception:
                    log.exception("cancel on close")
        self.async_ops.clear()
        for sess in list(self.sessions.values()):
            self._drop_channel(sess)
        self.sessions.clear()
        self._close()

    def _drop_channel(self, sess: Session) -> None:
        """MS-SMB2 3.3.7.1: the channel of this connection leaves Session.ChannelList; the session
        (its opens, trees) is torn down only when no channel is left."""
        sess.binding.pop(self, None)
        sess.channels.pop(self, None)
        live = [c for c in sess.channels if not c.closed]
        if not live:
            self.server.destroy_session(sess)
            return
        if sess.connection is self:
            sess.connection = live[0]   # a live channel answers for the session (breaks, 3.3.4.6/7)

    # ---- encryption (MS-SMB2 3.3.5.2.1)
    def _decrypt(self, frame):
        if self.dialect < 0x0300:
            raise Disconnect("transform before 3.x")
        th = hd.parse_transform(frame)
        if th.flags != 1 or th.original_size + hd.TRANSFORM_SIZE > len(frame) or th.original_size < hd.HEADER_SIZE:
            raise Disconnect("bad transform header")
        session = self.server.sessions.get(th.session_id)
        if session is None or session.decryptor is None:
            raise Disconnect("transform for unknown session")
        nonce = th.nonce[:session.decryptor.nonce_len]
        aad = bytes(frame[20:52])
        try:
            plain = session.decryptor.decrypt(nonce, aad, memoryview(frame)[52:52 + th.original_size], th.signature)
        except InvalidTag:
            raise Disconnect("decryption failed") from None
        return session, plain

    def _encrypt(self, session: Session, parts: list) -> list:
        plain = b"".join(parts)
        enc = session.encryptor
        nonce = enc.next_nonce()
        aad = hd.transform_aad(nonce, len(plain), session.session_id)
        ct, tag = enc.encrypt(nonce, aad, plain)
        return [hd.pack_transform(tag, nonce, len(plain), session.session_id), ct]

    # ---- request chain (MS-SMB2 3.3.5.2.7)
    def _process_chain(self, buf, enc_session: Session | None) -> None:
        encrypted = enc_session is not None
        out: list[tuple[bytearray, list, Session | None, bool]] = []   # (header, body, sign-session, encrypt)
        offset = 0
        prev_status = st.STATUS_SUCCESS
        prev_req: Request | None = None
        n = len(buf)
        while True:
            hdr = hd.parse_header(buf, offset)
            if hdr.next_command:
                if hdr.next_command % 8 or offset + hdr.next_command > n or hdr.next_command < hd.HEADER_SIZE:
                    raise Disconnect("bad NextCommand")
                end = offset + hdr.next_command
            else:
                end = n
            msg = memoryview(buf)[offset:end] if not isinstance(buf, memoryview) else buf[offset:end]
            req = Request(self, hdr, msg, encrypted)
            if req.is_related:
                if prev_req is None:
                    # 3.3.5.2.7.2: related flag on the first request -> STATUS_INVALID_PARAMETER
                    # (Windows <259>); its MessageId is still used up
                    req.is_related = False
                    if not self.credits.consume(hdr.message_id, max(hdr.credit_charge, 1)
                                                if self.supports_multi_credit else 1):
                        raise Disconnect(f"MessageId {hdr.message_id} outside the window")
                    reply = Reply(status=st.STATUS_INVALID_PARAMETER)
                    resp = self._finish(req, reply)
                    if resp:
                        out.append(resp)
                    if not hdr.next_command:
                        break
                    offset = end
                    continue
                req.related_file_id = prev_req.related_file_id
            reply = self._process_one(req, prev_req, prev_status, enc_session)
            if reply is not None:
                prev_status = reply.status
                resp = self._finish(req, reply)
                if resp:
                    out.append(resp)
            prev_req = req
            if not hdr.next_command:
                break
            offset = end
        if out:
            self._send_chain(out, pad_last=offset > 0)

    def _process_one(self, req: Request, prev_req, prev_status, enc_session) -> Reply | None:
        hdr = req.hdr
        if hdr.command == hd.CANCEL:
            self._cancel(hdr)
            return None
        # 3.3.5.2.3 sequence numbers and credit charge
        charge = hdr.credit_charge
        if self.dialect > 0x0202 and self.supports_multi_credit:
            need = self._payload_charge(req)
            if charge == 0:
                charge = 1
            if need > charge:
                if not self.credits.consume(hdr.message_id, charge):
                    raise Disconnect("MessageId outside the window")
                return Reply(status=st.STATUS_INVALID_PARAMETER)
        else:
            charge = 1
        if not self.credits.consume(hdr.message_id, charge):
            raise Disconnect(f"MessageId {hdr.message_id} outside the window")
        if not self.negotiated and hdr.command != hd.NEGOTIATE:
            raise Disconnect("request before NEGOTIATE")
        if hdr.is_async and hdr.command != hd.CANCEL:
            return Reply(status=st.STATUS_INVALID_PARAMETER)
        # related operations use the previous operation's session / tree (3.3.5.2.7.2)
        sid, tid = hdr.session_id, hdr.tree_id
        cmd = hdr.command
        if req.is_related and prev_req is not None:
            # a failed CREATE fails every later related operation with its status (the chain's
            # FileId never existed; Samba's compound_create_err does the same)
            if prev_req.chain_error is not None or (prev_status != st.STATUS_SUCCESS
                                                    and prev_req.hdr.command == hd.CREATE):
                req.session, req.tree = prev_req.session, prev_req.tree   # respond as them (signing)
                req.chain_error = prev_req.chain_error if prev_req.chain_error is not None else prev_status
                return Reply(status=req.chain_error)
            # no session (tree) from the previous operation: STATUS_INVALID_PARAMETER
            if cmd not in NO_SESSION_COMMANDS:
                if prev_req.session is None:
                    return Reply(status=st.STATUS_INVALID_PARAMETER)
                sid = prev_req.session.session_id
            if cmd not in NO_TREE_COMMANDS:
                if prev_req.tree is None:
                    return Reply(status=st.STATUS_INVALID_PARAMETER)
                tid = prev_req.tree.tree_id
        if cmd == hd.IOCTL and sid == 0 and self.server.config.torture_fsctls:
            # smbtorture's FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT comes without session or tree
            # (as Samba's smbd:FSCTL_SMBTORTURE allows it)
            from .handlers.oplock_break import torture_force_unacked
            reply = torture_force_unacked(req)
            if reply is not None:
                return reply
        try:
            if cmd not in NO_SESSION_COMMANDS:
                req.session = self._verify_session(req, sid, enc_session)
            elif sid and cmd != hd.NEGOTIATE:
                req.session = self.server.sessions.get(sid)
                if req.session is not None and req.signed and req.session.signer is not None \
                        and req.session.state == SESSION_VALID and cmd != hd.SESSION_SETUP:
                    self._verify_signature(req, req.session)
            if cmd not in NO_TREE_COMMANDS:
                tree = req.session.trees.get(tid)
                if tree is None:
                    raise SmbError(st.STATUS_NETWORK_NAME_DELETED)
                if tree.encrypt_data and not req.encrypted and self.server.config.reject_unencrypted \
                        and self.dialect >= 0x0300:
                    raise SmbError(st.STATUS_ACCESS_DENIED)
                req.tree = tree
            handler = self.server.handlers.get(cmd)
            if handler is None:
                raise SmbError(st.STATUS_INVALID_PARAMETER)
            return handler(req)
        except SmbError as e:
            return Reply(pack_error(e.data), e.status)
        except (MessageError, NegotiateError):   # 3.3.5.2.6 / 3.3.5.4: malformed request body
            return Reply(status=st.STATUS_INVALID_PARAMETER)
        except VfsError as e:
            return Reply(status=e.status)
        except OSError as e:
            log.info("I/O error in %s: %s", hd.COMMAND_NAMES.get(cmd), e)
            return Reply(status=map_oserror(e))
        except hd.HeaderError:
            return Reply(status=st.STATUS_INVALID_PARAMETER)

    def _payload_charge(self, req: Request) -> int:
        """CreditCharge a request needs for its payload size (MS-SMB2 3.3.5.2.5)."""
        m = req.msg
        cmd = req.hdr.command
        size = 0
        try:
            if cmd == hd.READ:
                size = struct.unpack_from("<I", m, 64 + 4)[0]
            elif cmd == hd.WRITE:
                size = struct.unpack_from("<I", m, 64 + 4)[0]
            elif cmd == hd.IOCTL:
                ilen, = struct.unpack_from("<I", m, 64 + 28)
                olen, = struct.unpack_from("<I", m, 64 + 44)
                size = max(ilen, olen)
            elif cmd == hd.QUERY_DIRECTORY:
                size = struct.unpack_from("<I", m, 64 + 28)[0]
            elif cmd == hd.QUERY_INFO:
                size = struct.unpack_from("<I", m, 64 + 4)[0]
            elif cmd == hd.CHANGE_NOTIFY:
                size = struct.unpack_from("<I", m, 64 + 4)[0]
        except struct.error:
            return 1
        return max(1, (size - 1) // 65536 + 1) if size else 1

    def _verify_session(self, req: Request, sid: int, enc_session) -> Session:
        session = self.server.sessions.get(sid)
        if session is None:
            raise SmbError(st.STATUS_USER_SESSION_DELETED)
        if not (session.connection is self or self in session.channels):
            # another channel's session of this client (multichannel, 3.3.5.2.9): a request signed
            # with Session.SigningKey gets a signed USER_SESSION_DELETED (Samba; smbtorture
            # smb2.session.bind2 needs the SIGNED flag), otherwise ACCESS_DENIED (3.3.5.2.4)
            other = session.connection
            if req.signed and session.signer is not None and session.state == SESSION_VALID \
                    and other is not None and other.client_guid == self.client_guid and not req.encrypted:
                self._verify_signature(req, session, session.signer)
                req.session = session
            raise SmbError(st.STATUS_USER_SESSION_DELETED)
        if enc_session is not None and enc_session is not session:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        if session.state == SESSION_EXPIRED:
            raise SmbError(st.STATUS_NETWORK_SESSION_EXPIRED)
        if session.state != SESSION_VALID:
            raise SmbError(st.STATUS_USER_SESSION_DELETED)
        if req.signed and not req.encrypted:
            self._verify_signature(req, session)
        elif not req.encrypted:
            if session.encrypt_data and self.server.config.reject_unencrypted:
                raise SmbError(st.STATUS_ACCESS_DENIED)
            if session.signing_required and session.signer is not None:
                raise SmbError(st.STATUS_ACCESS_DENIED)
        return session

    def _verify_signature(self, req: Request, session: Session, signer=None) -> None:
        """3.3.5.2.4: Channel.SigningKey of this connection (Session.SigningKey when binding)."""
        if signer is None:
            signer = session.signer_for(self)
        if signer is None:
            raise SmbError(st.STATUS_ACCESS_DENIED)
        msg = req.msg
        sig = bytes(msg[48:64])
        if signer.algorithm == SIGN_AES_GMAC:
            m = bytearray(msg)          # GMAC needs the AAD contiguous: one copy
            m[48:64] = bytes(16)
            parts = [m]
        else:
            parts = [msg[:48], bytes(16), msg[64:]]
        want = signer.signature(parts, req.hdr.message_id, is_response=False,
                                        is_cancel=req.hdr.command == hd.CANCEL)
        if want != sig:
            log.info("bad signature from %s (command %s)", self.peer, hd.COMMAND_NAMES.get(req.hdr.command))
            raise SmbError(st.STATUS_ACCESS_DENIED)

    def _cancel(self, hdr: hd.Header) -> None:
        """MS-SMB2 3.3.5.16: no response to CANCEL itself."""
        if hdr.is_async:
            op = self.async_ops.get(hdr.async_id)
        else:
            op = next((o for o in self.async_ops.values() if o.message_id == hdr.message_id), None)
        if op is not None:
            op.cancel()

    # ---- responses
    def _finish(self, req: Request, reply: Reply):
        if reply.pending is None:
            replay.request_done(req)     # 3.3.4.1: the request is no longer outstanding
        if reply.no_response:
            return None
        hdr = req.hdr
        session = reply.session or req.session
        flags = hd.FLAGS_SERVER_TO_REDIR | (hdr.flags & hd.FLAGS_RELATED_OPERATIONS)
        credits = self.credits.grant(hdr.credits, max(hdr.credit_charge, 1))
        rh = hd.Header(credit_charge=hdr.credit_charge, status=reply.status, command=hdr.command,
                       credits=credits, flags=flags, message_id=hdr.message_id,
                       tree_id=reply.tree_id if reply.tree_id is not None else
                       (req.tree.tree_id if req.tree else hdr.tree_id),
                       session_id=session.session_id if session else hdr.session_id)
        if reply.pending is not None:
            rh.flags |= hd.FLAGS_ASYNC_COMMAND
            rh.async_id = reply.pending.async_id
        raw = hd.pack_header(rh)
        # signing decision (MS-SMB2 3.3.4.1.1)
        sign_with = None
        if session is not None and session.signer is not None and reply.pending is None:
            want = reply.sign if reply.sign is not None else (
                (req.signed or session.signing_required) and session.state == SESSION_VALID)
            if want:
                sign_with = reply.signer or session.signer_for(self)
        elif req.signed and reply.status == st.STATUS_USER_SESSION_DELETED:
            # no key left to sign with (the session is gone, e.g. a failed re-authentication on
            # another channel): keep SMB2_FLAGS_SIGNED, clients that require signing check the flag
            # and skip the signature for this status (Samba's smbXcli; ksmbd does the same)
            struct.pack_into("<I", raw, 16, struct.unpack_from("<I", raw, 16)[0] | hd.FLAGS_SIGNED)
        if reply.after_pack is not None:
            if sign_with is not None:
                # a signed SESSION_SETUP response (binding, 3.3.5.5.2) enters the 3.1.1 preauth
                # hash as sent: sign it here (SESSION_SETUP is not compounded in practice)
                self._sign(raw, [raw, *reply.body], sign_with)
                sign_with = None
            reply.after_pack(bytes(raw) + b"".join(bytes(b) for b in reply.body))
        encrypt_with = None
        if session is not None and session.encryptor is not None and session.state == SESSION_VALID:
            if req.encrypted or (hdr.command not in (hd.NEGOTIATE, hd.SESSION_SETUP) and
                                 (session.encrypt_data or (req.tree is not None and req.tree.encrypt_data))):
                encrypt_with = session
        return raw, reply.body, sign_with, encrypt_with

    def _send_chain(self, out, pad_last: bool = False) -> None:
        """Pad, link, sign each response; encrypt the whole chain if any part needs it.
        Answering a compound request, the last response is padded to 8 bytes too (3.3.4.1.3;
        Windows and Samba, smb2.compound.compound-padding)."""
        parts: list = []
        last = len(out) - 1
        enc_session = None
        for i, (raw, body, sign_with, encrypt_with) in enumerate(out):
            msg_parts = [raw, *body]
            if i != last or pad_last:
                length = sum(len(b) for b in msg_parts)
                padlen = (8 - length % 8) % 8
                if padlen:
                    msg_parts.append(b"\0" * padlen)
                if i != last:
                    hd.set_next_command(raw, 0, length + padlen)
            if encrypt_with is not None:
                enc_session = enc_session or encrypt_with
            elif sign_with is not None:
                self._sign(raw, msg_parts, sign_with)
            parts.extend(msg_parts)
        if enc_session is not None:
            parts = self._encrypt(enc_session, parts)
        self.write(parts)

    @staticmethod
    def _sign(raw: bytearray, msg_parts: list, signer) -> None:
        flags = struct.unpack_from("<I", raw, 16)[0] | hd.FLAGS_SIGNED
        struct.pack_into("<I", raw, 16, flags)
        mid = struct.unpack_from("<Q", raw, 24)[0]
        hd.set_signature(raw, 0, signer.signature(msg_parts, mid, is_response=True))

    def write(self, parts: list) -> None:
        if not self.closed:
            self._write(parts)

    # ---- async
    def new_async(self, req: Request, cancel_cb) -> AsyncOp:
        if not req.is_last:
            # only the last request of a compound may go async (MS-SMB2 <159>, as Windows and Samba)
            raise SmbError(st.STATUS_INTERNAL_ERROR)
        aid = self._next_async_id
        self._next_async_id += 1
        op = AsyncOp(self, aid, req, cancel_cb)
        self.async_ops[aid] = op
        return op

    def send_async_final(self, op: AsyncOp, status: int, body) -> None:
        if self.closed:
            return
        if not isinstance(body, list):
            body = [body]
        session = op.session
        rh = hd.Header(credit_charge=0, status=status, command=op.command, credits=0,
                       flags=hd.FLAGS_SERVER_TO_REDIR | hd.FLAGS_ASYNC_COMMAND, message_id=op.message_id,
                       async_id=op.async_id, session_id=session.session_id if session else 0)
        raw = hd.pack_header(rh)
        parts = [raw, *body]
        encrypt = bool(session and session.encryptor and (op.encrypted or session.encrypt_data))
        if session and session.signer and not encrypt and (op.signed or session.signing_required):
            self._sign(raw, parts, session.signer_for(self))
        if encrypt:
            parts = self._encrypt(session, parts)
        self.write(parts)

    def send_notification(self, command: int, body: bytes, session: Session | None = None, tree=None,
                          with_session_id: bool = False) -> None:
        """Unsolicited server message: oplock break (MS-SMB2 3.3.4.6: MessageId -1, TreeId 0, SessionId
        the open's session <SHOULD>) or lease break (3.3.4.7: SessionId 0). Never signed; encrypted
        with the session's keys when the session or the open's tree requires encryption (3.3.4.1.4),
        which needs the SessionId in the transform header."""
        if self.closed:
            return
        encrypt = session is not None and session.encryptor is not None and self.dialect >= 0x0300 \
            and (session.encrypt_data or (tree is not None and tree.encrypt_data))
        sid = session.session_id if session is not None and (with_session_id or encrypt) else 0
        rh = hd.Header(command=command, flags=hd.FLAGS_SERVER_TO_REDIR, message_id=0xFFFFFFFFFFFFFFFF,
                       session_id=sid)
        parts = [hd.pack_header(rh), body]
        if encrypt:
            parts = self._encrypt(session, parts)
        self.write(parts)
