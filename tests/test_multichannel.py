"""SMB 3.x multichannel session binding (MS-SMB2 3.3.5.5 / 3.3.5.5.2 / 3.3.5.5.3) with a raw client
over two TCP connections (smbprotocol cannot bind): each connection negotiates with the same
ClientGuid, the second binds to the first's session with a SESSION_SETUP carrying
SMB2_SESSION_FLAG_BINDING, signed with Session.SigningKey, and then uses its own
Channel.SigningKey (3.1.1: derived with that connection's preauth integrity hash)."""
from __future__ import annotations

import hashlib
import os
import struct
import time
import uuid

import pytest
import spnego

from smbnd import crypto
from smbnd import status as st
from smbnd_server import PASSWORD, PASSWORD2, USER, USER2, SmbndServer
from test_malformed import (CLOSE, CREATE, LOGOFF, NEGOTIATE, READ, SESSION_SETUP, TREE_CONNECT, WRITE, Raw,
                            close_body, create_body, read_body, session_setup_body, tree_connect_body, write_body)

FLAGS_SIGNED = 0x8
SESSION_FLAG_BINDING = 0x01
DATA = b"multichannel-data-" * 50


def _negotiate_body(dialects, guid: bytes) -> bytes:
    """NEGOTIATE (2.2.3) with the given ClientGuid; a preauth integrity context for 3.1.1."""
    caps = 0x08 if max(dialects) >= 0x0300 else 0          # SMB2_GLOBAL_CAP_MULTI_CHANNEL
    d = struct.pack(f"<{len(dialects)}H", *dialects)
    if 0x0311 not in dialects:
        return struct.pack("<HHHHI16s8s", 36, len(dialects), 1, 0, caps, guid, b"\0" * 8) + d
    off = 64 + 36 + len(d)
    off += (8 - off % 8) % 8
    ctx_data = struct.pack("<HHH", 1, 32, 1) + os.urandom(32)    # SHA-512, 32-byte salt
    ctx = struct.pack("<HHI", 1, len(ctx_data), 0) + ctx_data
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, caps, guid, off, 1, 0) + d
    return body + b"\0" * (off - 64 - len(body)) + ctx


class Chan(Raw):
    """One connection of the test client: signs with `signer` once set."""

    def __init__(self, server, guid: bytes):
        super().__init__(server)
        self.guid = guid
        self.preauth = b"\0" * 64
        self.signer: crypto.Signer | None = None
        self.dialect = 0

    def neg(self, dialects=(0x0302,)) -> None:
        body = _negotiate_body(dialects, self.guid)
        h = self.header(NEGOTIATE)
        self.send_frame(h + body)
        status, m = self.recv()
        assert status == 0, hex(status)
        self.dialect = struct.unpack_from("<H", m, 64 + 4)[0]
        if self.dialect == 0x0311:
            self.preauth = hashlib.sha512(hashlib.sha512(self.preauth + h + body).digest() + m).digest()

    def signed_call(self, cmd, body: bytes, signer=None, **kw) -> tuple[int, bytes]:
        signer = signer or self.signer
        h = bytearray(self.header(cmd, flags=FLAGS_SIGNED | kw.pop("flags", 0), **kw))
        msg = bytes(h) + body
        h[48:64] = signer.signature([msg], struct.unpack_from("<Q", h, 24)[0], is_response=False)
        self.send_frame(bytes(h) + body)
        return self.recv()

    def verify(self, m: bytes, signer) -> bool:
        flags = struct.unpack_from("<I", m, 16)[0]
        if not flags & FLAGS_SIGNED:
            return False
        z = m[:48] + b"\0" * 16 + m[64:]
        return signer.signature([z], struct.unpack_from("<Q", m, 24)[0]) == m[48:64]

    def auth(self, user=USER, password=PASSWORD, bind_to: "Chan | None" = None, sign_bind=True):
        """SESSION_SETUP rounds (NTLM in SPNEGO). With `bind_to`: a binding to its session, each
        request signed with its Session.SigningKey. Returns (status, last response)."""
        ctx = spnego.client(user, password, hostname="smbnd", service="cifs", protocol="ntlm")
        tok = ctx.step()
        hash_ = self.preauth
        flags = SESSION_FLAG_BINDING if bind_to is not None else 0
        if bind_to is not None:
            self.sid = bind_to.sid
        while True:
            body = struct.pack("<HBBIIHHQ", 25, flags, 1, 0, 0, 88, len(tok), 0) + tok
            h = bytearray(self.header(SESSION_SETUP))
            if bind_to is not None and sign_bind:
                struct.pack_into("<I", h, 16, FLAGS_SIGNED)
                h[48:64] = bind_to.session_signer.signature([bytes(h) + body],
                                                            struct.unpack_from("<Q", h, 24)[0], is_response=False)
            req = bytes(h) + body
            hash_ = hashlib.sha512(hash_ + req).digest()
            self.send_frame(req)
            status, m = self.recv()
            if status != st.STATUS_MORE_PROCESSING_REQUIRED:
                break
            hash_ = hashlib.sha512(hash_ + m).digest()
            if bind_to is None:
                self.sid = struct.unpack_from("<Q", m, 40)[0]
            off, ln = struct.unpack_from("<HH", m, 64 + 4)
            tok = ctx.step(m[off:off + ln])
        if status == 0:
            off, ln = struct.unpack_from("<HH", m, 64 + 4)
            if ln:
                ctx.step(m[off:off + ln])
            keys = crypto.SessionKeys(ctx.session_key, self.dialect, hash_, 0)
            self.signer = crypto.Signer(crypto.SIGN_AES_CMAC, keys.signing_key)
            if bind_to is None:
                self.sid = struct.unpack_from("<Q", m, 40)[0]
                self.session_signer = self.signer
        return status, m

    def setup(self, dialects=(0x0302,)) -> "Chan":
        self.neg(dialects)
        status, _ = self.auth()
        assert status == 0, hex(status)
        status, m = self.signed_call(TREE_CONNECT, tree_connect_body(self.server.host, "data"))
        assert status == 0, hex(status)
        self.tid = struct.unpack_from("<I", m, 36)[0]
        return self


@pytest.fixture(scope="module")
def server():
    with SmbndServer("--multichannel") as s:
        yield s


@pytest.fixture(scope="module")
def server_no_mc():
    with SmbndServer() as s:
        yield s


def _pair(server, dialect=0x0302, guid=None):
    guid = guid or uuid.uuid4().bytes
    a = Chan(server, guid).setup((dialect,))
    b = Chan(server, guid)
    b.neg((dialect,))
    return a, b


@pytest.mark.parametrize("dialect", [0x0300, 0x0302, 0x0311])
def test_bind_second_channel(server, dialect):
    a, b = _pair(server, dialect)
    try:
        status, m = a.signed_call(CREATE, create_body(f"mc-{dialect:x}.bin", disp=5))
        assert status == 0, hex(status)
        fid = m[128:144]
        assert a.signed_call(WRITE, write_body(fid, DATA))[0] == 0
        # before binding the session is not this connection's (3.3.5.2.9)
        b.sid, b.tid = a.sid, a.tid
        status, m = b.signed_call(READ, read_body(fid, len(DATA)), signer=a.signer)
        assert status == st.STATUS_USER_SESSION_DELETED
        assert b.verify(m, a.signer)        # signed with Session.SigningKey, as Samba does
        status, m = b.auth(bind_to=a)
        assert status == 0, st.name(status)
        # the final binding response is signed with the new Channel.SigningKey (3.3.5.5.3)
        assert b.verify(m, b.signer)
        if dialect == 0x0311:   # channel key from this connection's own preauth hash
            assert b.signer.key != a.signer.key
        status, m = b.signed_call(READ, read_body(fid, len(DATA)))
        assert status == 0, st.name(status)
        assert b.verify(m, b.signer)
        assert m[80:80 + len(DATA)] == DATA
        # the first channel still works, with its own key
        status, m = a.signed_call(READ, read_body(fid, len(DATA)))
        assert status == 0 and a.verify(m, a.signer)
        # a request signed with the other channel's key is refused (3.3.5.2.4) on 3.1.1
        if dialect == 0x0311:
            status, _ = b.signed_call(READ, read_body(fid, len(DATA)), signer=a.signer)
            assert status == st.STATUS_ACCESS_DENIED
        # the first connection drops: the session and its open live on through the second (3.3.7.1)
        a.close()
        time.sleep(0.3)     # let the server see the disconnect
        status, m = b.signed_call(READ, read_body(fid, len(DATA)))
        assert status == 0, st.name(status)
        assert m[80:80 + len(DATA)] == DATA
        assert b.signed_call(CLOSE, close_body(fid))[0] == 0
    finally:
        a.close()
        b.close()


def test_last_channel_drop_ends_session(server):
    a, b = _pair(server)
    assert b.auth(bind_to=a)[0] == 0
    b.tid = a.tid
    a.close()
    b.close()
    time.sleep(0.3)
    c = Chan(server, a.guid)
    c.neg()
    c.sid = a.sid
    assert c.auth(bind_to=a)[0] == st.STATUS_USER_SESSION_DELETED
    c.close()


def test_logoff_on_one_channel_ends_the_session(server):
    a, b = _pair(server)
    try:
        assert b.auth(bind_to=a)[0] == 0
        b.tid = a.tid
        assert b.signed_call(LOGOFF, struct.pack("<HH", 4, 0))[0] == 0
        status, _ = a.signed_call(CREATE, create_body("after-logoff.bin"))
        assert status == st.STATUS_USER_SESSION_DELETED
    finally:
        a.close()
        b.close()


def test_bind_negative(server):
    a, b = _pair(server)
    try:
        # not signed: STATUS_INVALID_PARAMETER (3.3.5.5.2)
        assert b.auth(bind_to=a, sign_bind=False)[0] == st.STATUS_INVALID_PARAMETER
        # unknown session: STATUS_USER_SESSION_DELETED
        ghost = Chan(server, a.guid)
        ghost.sid, ghost.session_signer = a.sid ^ 0x5A5A, a.session_signer
        assert b.auth(bind_to=ghost)[0] == st.STATUS_USER_SESSION_DELETED
        # another user: STATUS_ACCESS_DENIED; the session lives on
        assert b.auth(USER2, PASSWORD2, bind_to=a)[0] == st.STATUS_ACCESS_DENIED
        assert b.auth(USER, "wrong", bind_to=a)[0] == st.STATUS_LOGON_FAILURE
        assert a.signed_call(CREATE, create_body("still-here.bin"))[0] == 0
        # a good bind after the failures; binding again on the same connection is refused: it is a
        # channel now, so its Channel.SigningKey verifies the request (3.3.5.2.4, as Samba), and one
        # signed with Session.SigningKey fails (smbtorture smb2.session.bind_negative_smb3sign*s)
        assert b.auth(bind_to=a)[0] == 0
        assert b.auth(bind_to=a)[0] == st.STATUS_ACCESS_DENIED
    finally:
        a.close()
        b.close()
    # at most 32 channels a session (Windows, Samba): the 33rd gets STATUS_INSUFFICIENT_RESOURCES
    a, b = _pair(server)
    extra = [b]
    try:
        assert b.auth(bind_to=a)[0] == 0
        for _ in range(30):
            c = Chan(server, a.guid)
            extra.append(c)
            c.neg()
            assert c.auth(bind_to=a)[0] == 0
        c = Chan(server, a.guid)
        extra.append(c)
        c.neg()
        assert c.auth(bind_to=a)[0] == st.STATUS_INSUFFICIENT_RESOURCES
    finally:
        a.close()
        for c in extra:
            c.close()
    # other dialect: STATUS_INVALID_PARAMETER
    a, _ = _pair(server, 0x0302)
    c = Chan(server, a.guid)
    c.neg((0x0300,))
    try:
        assert c.auth(bind_to=a)[0] == st.STATUS_INVALID_PARAMETER
    finally:
        a.close()
        c.close()
    # other ClientGuid (another client's session): refused as Samba does
    a, _ = _pair(server)
    c = Chan(server, uuid.uuid4().bytes)
    c.neg()
    try:
        assert c.auth(bind_to=a)[0] == st.STATUS_REQUEST_NOT_ACCEPTED
    finally:
        a.close()
        c.close()
    # SMB 2.1 connection: STATUS_REQUEST_NOT_ACCEPTED (3.3.5.5)
    a, _ = _pair(server)
    c = Chan(server, a.guid)
    c.neg((0x0210,))
    try:
        assert c.auth(bind_to=a)[0] == st.STATUS_REQUEST_NOT_ACCEPTED
    finally:
        a.close()
        c.close()


def test_bind_refused_without_multichannel(server_no_mc):
    a, b = _pair(server_no_mc)
    try:
        assert b.auth(bind_to=a)[0] == st.STATUS_REQUEST_NOT_ACCEPTED
        assert a.signed_call(CREATE, create_body("no-mc.bin"))[0] == 0
    finally:
        a.close()
        b.close()
