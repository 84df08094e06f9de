"""SESSION_SETUP (MS-SMB2 3.3.5.5), LOGOFF (3.3.5.6), ECHO (3.3.5.17)."""
from __future__ import annotations

import logging
import time

from .. import crypto
from .. import status as st
from ..auth import Acceptor
from ..connection import Reply
from ..errors import SmbError
from ..state import SESSION_IN_PROGRESS, SESSION_VALID, Session
from ..wire import messages as m
from ..wire import negotiate as ng

log = logging.getLogger("smbnd.session")


def _acceptor(server) -> Acceptor:
    cfg = server.config
    return Acceptor(server.users, netbios_name=cfg.name[:15].upper(), netbios_domain=cfg.domain.upper(),
                    dns_name=f"{cfg.name.lower()}.{cfg.dns_domain}", dns_domain=cfg.dns_domain,
                    allow_anonymous=cfg.allow_anonymous, allow_guest=cfg.allow_guest)


def session_setup(req) -> Reply:
    conn, server = req.conn, req.server
    r = m.parse_session_setup(req.msg)
    if r.flags & m.SESSION_FLAG_BINDING:
        # 3.3.5.5: no multichannel binding support
        raise SmbError(st.STATUS_REQUEST_NOT_ACCEPTED)
    sid = req.hdr.session_id
    new = sid == 0
    if new:
        session = Session(server.new_session_id(), conn, conn.dialect, created=time.monotonic())
        session.preauth_hash = conn.preauth_hash
        session.acceptor = _acceptor(server)
        server.sessions[session.session_id] = session
        conn.sessions[session.session_id] = session
    else:
        session = server.sessions.get(sid)
        if session is None or session.connection is not conn:
            raise SmbError(st.STATUS_USER_SESSION_DELETED)
        if session.acceptor is None:       # re-authentication of a valid session (3.3.5.5.2)
            session.acceptor = _acceptor(server)
            session.preauth_hash = conn.preauth_hash
    if conn.dialect == ng.DIALECT_311:
        session.preauth_hash = crypto.sha512(session.preauth_hash + bytes(req.msg))
    result = session.acceptor.step(r.security_buffer)
    if result.state == "continue":
        reply = Reply(m.pack_session_setup_response(0, result.out_token), st.STATUS_MORE_PROCESSING_REQUIRED)
        reply.session = session
        reply.sign = False
        if conn.dialect == ng.DIALECT_311:
            def _after(resp: bytes) -> None:
                session.preauth_hash = crypto.sha512(session.preauth_hash + resp)
            reply.after_pack = _after
        return reply
    session.acceptor = None
    if result.state != "ok":
        log.info("logon failure from %s", conn.peer)
        if session.state == SESSION_IN_PROGRESS:
            _drop(server, conn, session)
        else:
            # a failed re-authentication ends the session: its opens close, pending requests on them
            # complete, and later requests get USER_SESSION_DELETED (Windows; smb2.notify.invalid-reauth)
            server.destroy_session(session)
            conn.sessions.pop(session.session_id, None)
        reply = Reply(status=st.STATUS_LOGON_FAILURE)
        reply.session = session
        reply.sign = False
        return reply
    if session.state == SESSION_VALID:
        # re-authentication: the user must stay the same, keys are not re-derived
        if (result.user or "").lower() != (session.user or "").lower():
            raise SmbError(st.STATUS_ACCESS_DENIED)
        reply = Reply(m.pack_session_setup_response(_flags(session), result.out_token))
        reply.session = session
        return reply
    session.user, session.domain = result.user, result.domain
    session.is_guest, session.is_anonymous = result.guest, result.anonymous
    flags = 0
    if not (session.is_guest or session.is_anonymous) and result.session_key:
        keys = crypto.SessionKeys(result.session_key, conn.dialect, session.preauth_hash, conn.cipher_id)
        session.keys = keys
        session.signer = crypto.Signer(conn.signing_algorithm, keys.signing_key)
        session.signing_required = bool(server.config.signing_required or
                                        (r.security_mode & ng.SIGNING_REQUIRED) or
                                        (conn.client_security_mode & ng.SIGNING_REQUIRED))
        if conn.dialect >= ng.DIALECT_300 and conn.cipher_id:
            session.encryptor = crypto.TransformCipher(conn.cipher_id, keys.encryption_key)
            session.decryptor = crypto.TransformCipher(conn.cipher_id, keys.decryption_key)
            if server.config.encrypt_data:
                session.encrypt_data = True
    elif server.config.encrypt_data and server.config.reject_unencrypted:
        _drop(server, conn, session)
        raise SmbError(st.STATUS_ACCESS_DENIED)
    session.state = SESSION_VALID
    _close_previous_session(server, session, r.previous_session_id)
    flags = _flags(session)
    reply = Reply(m.pack_session_setup_response(flags, result.out_token))
    reply.session = session
    # 3.3.5.5.3: sign the final response on 3.1.1 (and whenever signing is required)
    reply.sign = session.signer is not None and (conn.dialect >= ng.DIALECT_311 or session.signing_required)
    return reply


def _flags(session: Session) -> int:
    if session.is_anonymous:
        return m.SESSION_FLAG_IS_NULL
    if session.is_guest:
        return m.SESSION_FLAG_IS_GUEST
    return m.SESSION_FLAG_ENCRYPT_DATA if session.encrypt_data else 0


def _close_previous_session(server, session: Session, previous_id: int) -> None:
    """MS-SMB2 3.3.5.5.3: a PreviousSessionId naming another session of the same user ends that
    session (the client reconnected and will not use it again)."""
    if not previous_id or previous_id == session.session_id:
        return
    old = server.sessions.get(previous_id)
    if old is None or old.state != SESSION_VALID or old.is_anonymous or old.is_guest:
        return
    if (old.user or "").lower() != (session.user or "").lower() \
            or (old.domain or "").lower() != (session.domain or "").lower():
        return
    server.destroy_session(old)
    if old.connection is not None:
        old.connection.sessions.pop(previous_id, None)


def _drop(server, conn, session: Session) -> None:
    server.sessions.pop(session.session_id, None)
    conn.sessions.pop(session.session_id, None)


def logoff(req) -> Reply:
    m.check_size(req.msg, 4)
    session = req.session
    req.server.destroy_session(session)
    req.conn.sessions.pop(session.session_id, None)
    reply = Reply(m.EMPTY4)
    reply.session = session
    return reply


def echo(req) -> Reply:
    m.check_size(req.msg, 4)
    return Reply(m.EMPTY4)
