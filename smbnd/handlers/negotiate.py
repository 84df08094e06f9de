"""NEGOTIATE (MS-SMB2 3.3.5.3, 3.3.5.4) and the SMB1 multi-protocol upgrade (3.3.5.3.1)."""
from __future__ import annotations

import time

from .. import crypto
from .. import status as st
from ..auth import negprot_token
from ..connection import Reply
from ..errors import Disconnect
from ..wire import header as hd
from ..wire import negotiate as ng

KNOWN = (ng.DIALECT_202, ng.DIALECT_210, ng.DIALECT_300, ng.DIALECT_302, ng.DIALECT_311)


def filetime_now() -> int:
    return int(time.time() * 10_000_000) + 116444736000000000


def _response(conn, dialect: int, contexts) -> bytes:
    cfg = conn.server.config
    small = dialect == ng.DIALECT_202 or not (conn.server_capabilities & ng.CAP_LARGE_MTU)
    limit = 65536 if small else None
    return ng.pack_negotiate_response(ng.NegotiateResponse(
        security_mode=conn.server_security_mode, dialect=dialect, server_guid=cfg.server_guid,
        capabilities=conn.server_capabilities,
        max_transact=limit or cfg.max_transact_size, max_read=limit or cfg.max_read_size,
        max_write=limit or cfg.max_write_size, system_time=filetime_now(),
        start_time=0, security_buffer=negprot_token(hint_name=""), contexts=contexts))


def _capabilities(conn, dialect: int) -> int:
    cfg = conn.server.config
    caps = 0
    if dialect >= ng.DIALECT_210:
        caps |= ng.CAP_LARGE_MTU
        if conn.server.oplocks.leasing:
            caps |= ng.CAP_LEASING
    if dialect >= ng.DIALECT_300:
        if cfg.multichannel:
            caps |= ng.CAP_MULTI_CHANNEL
        if conn.server.persistent_handles:
            caps |= ng.CAP_PERSISTENT_HANDLES
        # opt-in (server.directory_leasing): impacket 0.13's client breaks when it is advertised
        if conn.server.oplocks.leasing and conn.server.oplocks.directory_leasing and cfg.directory_leasing:
            caps |= ng.CAP_DIRECTORY_LEASING     # MS-SMB2 3.3.5.4: 3.x only
        if dialect < ng.DIALECT_311 and conn.client_capabilities & ng.CAP_ENCRYPTION and conn.cipher_id:
            caps |= ng.CAP_ENCRYPTION
    return caps


def negotiate(req) -> Reply:
    conn = req.conn
    if conn.negotiated:
        raise Disconnect("second NEGOTIATE")  # MS-SMB2 3.3.5.3
    r = ng.parse_negotiate_request(req.msg)
    cfg = conn.server.config
    offered = [d for d in r.dialects if d in KNOWN and cfg.min_dialect <= d <= cfg.max_dialect]
    if not offered:
        return Reply(status=st.STATUS_NOT_SUPPORTED)
    dialect = max(offered)
    # kept as sent: FSCTL_VALIDATE_NEGOTIATE_INFO compares against these (3.3.5.15.12)
    conn.client_capabilities = r.capabilities
    conn.client_security_mode = r.security_mode
    conn.client_guid = r.client_guid
    contexts = []
    if dialect == ng.DIALECT_311:
        by_type: dict[int, bytes] = {}
        for c in r.contexts:
            if c.type in by_type and c.type in (ng.PREAUTH_INTEGRITY_CAPABILITIES, ng.ENCRYPTION_CAPABILITIES,
                                                ng.COMPRESSION_CAPABILITIES, ng.SIGNING_CAPABILITIES):
                return Reply(status=st.STATUS_INVALID_PARAMETER)   # 3.3.5.4: duplicate context
            by_type[c.type] = c.data
        if ng.PREAUTH_INTEGRITY_CAPABILITIES not in by_type:
            return Reply(status=st.STATUS_INVALID_PARAMETER)
        algs, _salt = ng.parse_preauth(by_type[ng.PREAUTH_INTEGRITY_CAPABILITIES])
        if ng.HASH_SHA512 not in algs:
            return Reply(status=st.STATUS_SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP)
        contexts.append(ng.NegotiateContext(ng.PREAUTH_INTEGRITY_CAPABILITIES, ng.pack_preauth(_random(32))))
        if ng.ENCRYPTION_CAPABILITIES in by_type:
            client = ng.parse_id_list(by_type[ng.ENCRYPTION_CAPABILITIES], "encryption")
            pick = next((c for c in cfg.ciphers if c in client), 0)
            conn.cipher_id = pick
            contexts.append(ng.NegotiateContext(ng.ENCRYPTION_CAPABILITIES, ng.pack_id_list([pick])))
        if ng.SIGNING_CAPABILITIES in by_type:
            client = ng.parse_id_list(by_type[ng.SIGNING_CAPABILITIES], "signing")
            pick = next((a for a in cfg.signing_algorithms if a in client), crypto.SIGN_AES_CMAC)
            conn.signing_algorithm = pick
            contexts.append(ng.NegotiateContext(ng.SIGNING_CAPABILITIES, ng.pack_id_list([pick])))
        else:
            conn.signing_algorithm = crypto.SIGN_AES_CMAC
        # COMPRESSION, NETNAME, TRANSPORT, RDMA: accepted and not answered (no support)
    elif dialect >= ng.DIALECT_300:
        conn.signing_algorithm = crypto.SIGN_AES_CMAC
        if r.capabilities & ng.CAP_ENCRYPTION:
            conn.cipher_id = crypto.AES_128_CCM
    else:
        conn.signing_algorithm = crypto.SIGN_HMAC_SHA256
    conn.dialect = dialect
    conn.server_security_mode = ng.SIGNING_ENABLED | (ng.SIGNING_REQUIRED if cfg.signing_required else 0)
    conn.server_capabilities = _capabilities(conn, dialect)
    conn.supports_multi_credit = bool(conn.server_capabilities & ng.CAP_LARGE_MTU)
    conn.negotiated = True
    reply = Reply(_response(conn, dialect, contexts))
    if dialect == ng.DIALECT_311:
        conn.preauth_hash = crypto.sha512(b"\0" * 64 + bytes(req.msg))

        def _after(resp: bytes) -> None:
            conn.preauth_hash = crypto.sha512(conn.preauth_hash + resp)
        reply.after_pack = _after
    return reply


def _random(n: int) -> bytes:
    import os
    return os.urandom(n)


def smb1_negotiate(conn, frame) -> None:
    """An SMB1 NEGOTIATE listing SMB2 dialects gets an SMB2 NEGOTIATE response (3.3.5.3.1)."""
    names = ng.smb1_negotiate_dialects(bytes(frame))
    cfg = conn.server.config
    if "SMB 2.???" in names and cfg.max_dialect >= ng.DIALECT_210:
        dialect = ng.DIALECT_WILDCARD
    elif "SMB 2.002" in names and cfg.min_dialect <= ng.DIALECT_202:
        dialect = ng.DIALECT_202
    else:
        raise Disconnect("SMB1 negotiate without an SMB2 dialect")
    conn.server_security_mode = ng.SIGNING_ENABLED | (ng.SIGNING_REQUIRED if cfg.signing_required else 0)
    conn.server_capabilities = _capabilities(conn, ng.DIALECT_202 if dialect == ng.DIALECT_WILDCARD else dialect)
    body = _response(conn, dialect, [])
    rh = hd.Header(command=hd.NEGOTIATE, credits=1, flags=hd.FLAGS_SERVER_TO_REDIR, message_id=0)
    if dialect == ng.DIALECT_202:
        conn.dialect = dialect
        conn.negotiated = True
        conn.signing_algorithm = crypto.SIGN_HMAC_SHA256
    # the SMB1 request used MessageId 0; the client's next request is MessageId 1
    conn.credits.lo, conn.credits.hi, conn.credits.used = 1, 2, 0
    conn.write([hd.pack_header(rh), body])
