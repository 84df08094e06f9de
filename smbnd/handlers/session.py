"""SESSION_SETUP (MS-SMB2 3.3.5.5), LOGOFF (3.3.5.6), ECHO (3.3.5.17)."""
from __future__ import annotations

import logging
import time

from .. import crypto
from .. import status as st
from ..auth import Acceptor
from ..connection import Reply
from ..errors import SmbError
from ..state import SESSION_EXPIRED, SESSION_IN_PROGRESS, SESSION_VALID, Channel, Session
from ..wire import messages as m
from ..wire import negotiate as ng

log = logging.getLogger("smbnd.session")
MAX_CHANNELS = 32      # channels per session, as Windows and Samba (smb2.multichannel.generic.num_channels)


def _acceptor(server) -> Acceptor:
    cfg = server.config
    return Acceptor(server.users, netbios_name=cfg.name[:15].upper(), netbios_domain=cfg.domain.upper(),
                    dns_name=f"{cfg.name.lower()}.{cfg.dns_domain}", dns_domain=cfg.dns_domain,
                    allow_anonymous=cfg.allow_anonymous, allow_guest=cfg.allow_guest)


def session_setup(req) -> Reply:
    conn, server = req.conn, req.server
    r = m.parse_session_setup(req.msg)
    if r.flags & m.SESSION_FLAG_BINDING:
        return _bind(req, r)
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
        if session is None or not session.on(conn):
            raise SmbError(st.STATUS_USER_SESSION_DELETED)
        if session.state == SESSION_VALID and session.signer is not None and not req.encrypted:
            # 3.3.5.2.4: a re-authentication is verified with this connection's Channel.SigningKey
            # (smbtorture smb2.session.bind_negative_smb3sign*s: signed with another key, or not
            # signed on a session that requires signing -> STATUS_ACCESS_DENIED)
            if req.signed:
                conn._verify_signature(req, session)
            elif session.signing_required:
                raise SmbError(st.STATUS_ACCESS_DENIED)
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
    session.channels[conn] = Channel(conn, session.signer)     # the first channel: Session.SigningKey
    _close_previous_session(server, session, r.previous_session_id)
    flags = _flags(session)
    reply = Reply(m.pack_session_setup_response(flags, result.out_token))
    reply.session = session
    # 3.3.5.5.3: sign the final response on 3.1.1 (and whenever signing is required)
    reply.sign = session.signer is not None and (conn.dialect >= ng.DIALECT_311 or session.signing_required)
    return reply


def _bind(req, r) -> Reply:
    """MS-SMB2 3.3.5.5 / 3.3.5.5.2: bind this connection to an existing session as a new channel
    (multichannel). Checks in Samba's order (smb2_sesssetup.c), which the smbtorture
    smb2.session.bind_negative_* tests pin down. The request is signed with Session.SigningKey
    (3.3.5.2.4); responses before the channel exists are signed with it too."""
    conn, server = req.conn, req.server
    sid = req.hdr.session_id
    if sid == 0:
        raise SmbError(st.STATUS_INVALID_PARAMETER)
    session = server.sessions.get(sid)
    if session is None:
        raise SmbError(st.STATUS_USER_SESSION_DELETED)
    ch = session.binding.get(conn)
    if req.signed and session.signer is not None and session.state == SESSION_VALID:
        # 3.3.5.2.4: a binding request is verified with Session.SigningKey (ACCESS_DENIED if bad);
        # on a connection that is already a channel of the session, with its Channel.SigningKey
        # (as Samba; smbtorture smb2.session.bind_negative_smb3sign*s)
        bound = session.channels.get(conn)
        conn._verify_signature(req, session, bound.signer if bound is not None and bound.signer
                               else session.signer)

    def fail(status: int) -> Reply:
        reply = Reply(status=status)
        reply.session = session
        reply.sign = req.signed and session.signer is not None and session.state == SESSION_VALID
        reply.signer = session.signer
        return reply

    if ch is None:
        sess_alg = session.signer.algorithm if session.signer is not None else None
        if sess_alg == crypto.SIGN_AES_GMAC and conn.signing_algorithm != sess_alg:
            return fail(st.STATUS_REQUEST_OUT_OF_SEQUENCE)
        if conn.signing_algorithm == crypto.SIGN_AES_GMAC and sess_alg is not None \
                and sess_alg != conn.signing_algorithm:
            return fail(st.STATUS_NOT_SUPPORTED)
        # 3.3.5.5 step 4: only 3.x connections of a multichannel-capable server bind
        if conn.dialect < ng.DIALECT_300 or not server.config.multichannel:
            return fail(st.STATUS_REQUEST_NOT_ACCEPTED)
        if not req.signed:                                   # 3.3.5.5.2
            return fail(st.STATUS_INVALID_PARAMETER)
        old = session.connection
        if session.dialect != conn.dialect:                  # 3.3.5.5.2: Session.Connection.Dialect
            return fail(st.STATUS_INVALID_PARAMETER)
        if old is not None and old.cipher_id != conn.cipher_id:
            return fail(st.STATUS_INVALID_PARAMETER)
        if old is not None and old.client_guid != conn.client_guid:
            # another client's session: Samba answers this cross-client bind so
            return fail(st.STATUS_REQUEST_NOT_ACCEPTED)
        if session.state == SESSION_EXPIRED:
            return fail(st.STATUS_NETWORK_SESSION_EXPIRED)
        if session.state != SESSION_VALID or conn in session.channels:
            return fail(st.STATUS_REQUEST_NOT_ACCEPTED)
        if session.is_anonymous or session.is_guest:         # 3.3.5.5.2: STATUS_NOT_SUPPORTED
            return fail(st.STATUS_NOT_SUPPORTED)
        if len(session.channels) >= MAX_CHANNELS:
            return fail(st.STATUS_INSUFFICIENT_RESOURCES)
        # 3.3.5.5.2: a new Channel; for 3.1.1 its preauth hash starts from this connection's
        ch = Channel(conn, acceptor=_acceptor(server), preauth_hash=conn.preauth_hash)
        session.binding[conn] = ch
    if conn.dialect == ng.DIALECT_311:
        ch.preauth_hash = crypto.sha512(ch.preauth_hash + bytes(req.msg))
    result = ch.acceptor.step(r.security_buffer)
    if result.state == "continue":
        reply = fail(st.STATUS_MORE_PROCESSING_REQUIRED)
        reply.body = [m.pack_session_setup_response(0, result.out_token)]
        if conn.dialect == ng.DIALECT_311:
            def _after(resp: bytes) -> None:
                ch.preauth_hash = crypto.sha512(ch.preauth_hash + resp)
            reply.after_pack = _after
        return reply
    session.binding.pop(conn, None)
    if result.state != "ok":
        log.info("binding logon failure from %s", conn.peer)
        return fail(st.STATUS_LOGON_FAILURE)       # the session itself lives on
    # 3.3.5.5.3: the same user (Samba compares the SIDs), with a session key for the channel's key
    if (result.user or "").lower() != (session.user or "").lower() or result.guest or result.anonymous:
        return fail(st.STATUS_ACCESS_DENIED)
    if not result.session_key:
        return fail(st.STATUS_NOT_SUPPORTED)
    # Channel.SigningKey (3.3.5.5.3): from this authentication's session key; on 3.1.1 with the
    # channel's own preauth integrity hash
    keys = crypto.SessionKeys(result.session_key, conn.dialect, ch.preauth_hash, conn.cipher_id)
    ch.signer = crypto.Signer(conn.signing_algorithm, keys.signing_key)
    ch.acceptor = None
    session.channels[conn] = ch
    conn.sessions[session.session_id] = session         # Connection.SessionTable (3.3.5.5.3)
    reply = Reply(m.pack_session_setup_response(_flags(session), result.out_token))
    reply.session = session
    reply.sign = True                                    # with the new Channel.SigningKey
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
    server.destroy_session(old)       # also leaves every channel's Connection.SessionTable
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
