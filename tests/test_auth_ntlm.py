"""NTLM acceptor tests against real client implementations (pyspnego, impacket)."""

from __future__ import annotations

import struct

import pytest
import spnego
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from impacket import ntlm as imp_ntlm
from spnego._ntlm_raw.messages import NegotiateFlags

from smbnd.auth import Acceptor, AuthError, NtlmAcceptor, NtlmSecurity, UserDB, nt_hash_of
from smbnd.auth.ntlm import (
    AV_DNS_COMPUTER, AV_DNS_DOMAIN, AV_NB_COMPUTER, AV_NB_DOMAIN, AV_TIMESTAMP, NEG_ESS,
    NEG_KEY_EXCH, NEG_SEAL, NEG_SIGN, NEG_TARGET_INFO, NEG_UNICODE, NEG_VERSION, parse_av_pairs,
)
from smbnd.auth.users import md4

PASSWORD = "Secret1!"
NAMES = dict(netbios_name="SRV", netbios_domain="WG", dns_name="srv.example.test",
             dns_domain="example.test")


@pytest.fixture
def users():
    return UserDB.from_mapping({"Alice": PASSWORD, "bob": "hunter2"})


def acceptor(users, **kw):
    return Acceptor(users, **NAMES, **kw)


def run_pyspnego(acc, username, password, proto="ntlm", client=None):
    """Drive a pyspnego client against ``acc``; returns (client, last AuthResult)."""
    c = client or spnego.client(username, password, hostname="srv", protocol=proto)
    tok = c.step()
    while True:
        res = acc.step(tok)
        if res.state != "continue":
            return c, res
        tok = c.step(res.out_token)


# --- users --------------------------------------------------------------------------------

def test_md4_rfc1320_vectors():
    assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"
    assert md4(b"a" * 1000) == __import__("spnego._ntlm_raw.md4", fromlist=["md4"]).md4(b"a" * 1000)


def test_nt_hash_known_value():
    assert nt_hash_of("password").hex() == "8846f7eaee8fb117ad06bdd830b7586c"


def test_users_file(tmp_path):
    p = tmp_path / "users"
    p.write_text("# comment\n\nalice:pa:ss\n  \nBob:{NT}8846F7EAEE8FB117AD06BDD830B7586C\n")
    db = UserDB.load(p)
    assert db.nt_hash("ALICE") == nt_hash_of("pa:ss")
    assert db.nt_hash("bob") == nt_hash_of("password")
    assert db.canonical_name("BOB") == "Bob"
    assert db.nt_hash("carol") is None and db.canonical_name("carol") is None


@pytest.mark.parametrize("bad", ["nocolon", ":pw", "x:{NT}zz", "x:{NT}8846f7"])
def test_users_file_bad_line(tmp_path, bad):
    p = tmp_path / "users"
    p.write_text(f"# c\nok:pw\n{bad}\n")
    with pytest.raises(ValueError, match="line 3"):
        UserDB.load(p)


def test_userdb_add_and_repr():
    db = UserDB()
    db.add("Eve", nt_hash=nt_hash_of("x"))
    assert "eve" in db and len(db) == 1 and "x" not in repr(db)
    with pytest.raises(ValueError):
        db.add("z")


# --- pyspnego raw NTLM ----------------------------------------------------------------------

@pytest.mark.parametrize("username", ["alice", "ALICE", "WG\\alice", "OTHER\\Alice", "alice@example.test"])
def test_pyspnego_ntlm_ok(users, username):
    acc = acceptor(users)
    c, res = run_pyspnego(acc, username, PASSWORD)
    assert res.state == "ok", res.reason
    assert res.out_token == b""  # raw framing: nothing more to send
    assert c.complete and res.session_key == c.session_key and len(res.session_key) == 16
    assert res.user == "Alice" and not res.guest and not res.anonymous
    assert acc.security is not None


def test_challenge_contents(users):
    c = spnego.client("alice", PASSWORD, hostname="srv", protocol="ntlm")
    neg = c.step()
    acc = NtlmAcceptor(users, **NAMES)
    chal = acc.negotiate(neg)
    cflags = struct.unpack_from("<I", neg, 12)[0]
    flags = struct.unpack_from("<I", chal, 20)[0]
    for f in (NEG_UNICODE, NEG_SIGN, NEG_SEAL, NEG_ESS, NEG_KEY_EXCH, NEG_VERSION):
        assert bool(flags & f) == bool(cflags & f)
    assert flags & NEG_TARGET_INFO
    tn_len, _, tn_off = struct.unpack_from("<HHI", chal, 12)
    assert chal[tn_off:tn_off + tn_len].decode("utf-16-le") == "WG"
    ti_len, _, ti_off = struct.unpack_from("<HHI", chal, 40)
    avs = parse_av_pairs(chal[ti_off:ti_off + ti_len])
    assert avs[AV_NB_DOMAIN].decode("utf-16-le") == "WG"
    assert avs[AV_NB_COMPUTER].decode("utf-16-le") == "SRV"
    assert avs[AV_DNS_DOMAIN].decode("utf-16-le") == "example.test"
    assert avs[AV_DNS_COMPUTER].decode("utf-16-le") == "srv.example.test"
    assert len(avs[AV_TIMESTAMP]) == 8
    assert chal[48:56] == bytes([10, 0]) + struct.pack("<H", 20348) + b"\0\0\0\x0f"
    other = NtlmAcceptor(users, **NAMES)
    other.negotiate(neg)
    assert other.server_challenge != acc.server_challenge and len(acc.server_challenge) == 8


def test_wrong_password_and_unknown_user_indistinguishable(users):
    _, wrong = run_pyspnego(acceptor(users), "alice", "nope")
    _, unknown = run_pyspnego(acceptor(users), "mallory", "nope")
    for r in (wrong, unknown):
        assert r.state == "fail" and r.session_key is None and r.user is None
    assert (wrong.out_token, wrong.reason) == (unknown.out_token, unknown.reason)


def test_guest(users):
    _, res = run_pyspnego(acceptor(users, allow_guest=True), "mallory", "x")
    assert res.state == "ok" and res.guest and res.session_key is None
    # map-to-guest applies to unknown users only: a bad password stays a failure
    _, res = run_pyspnego(acceptor(users, allow_guest=True), "alice", "x")
    assert res.state == "fail"


def test_ntlmv1_refused(users, monkeypatch):
    monkeypatch.setenv("LM_COMPAT_LEVEL", "1")
    _, res = run_pyspnego(acceptor(users), "alice", PASSWORD)
    assert res.state == "fail"


def _auth_parts(users):
    """NEGOTIATE/CHALLENGE done; returns (acceptor, client, AUTHENTICATE bytes)."""
    c = spnego.client("alice", PASSWORD, hostname="srv", protocol="ntlm")
    acc = acceptor(users)
    chal = acc.step(c.step()).out_token
    return acc, c, bytearray(c.step(chal))


def _nt_resp_span(auth: bytes) -> tuple[int, int]:
    ln, _, off = struct.unpack_from("<HHI", auth, 20)
    return off, ln


def test_mic_tampered(users):
    acc, _, auth = _auth_parts(users)
    auth[72] ^= 1
    assert acc.step(bytes(auth)).state == "fail"


def test_mic_over_raw_negotiate(users):
    # any byte of the NEGOTIATE (even unparsed version bytes) is covered by the MIC
    c = spnego.client("alice", PASSWORD, hostname="srv", protocol="ntlm")
    neg = bytearray(c.step())
    neg[-1] ^= 0xFF
    acc = acceptor(users)
    auth = c.step(acc.step(bytes(neg)).out_token)
    assert acc.step(auth).state == "fail"


@pytest.mark.parametrize("where", [0, 20, 40, -6])
def test_blob_tampered(users, where):
    acc, _, auth = _auth_parts(users)
    off, ln = _nt_resp_span(auth)
    pos = off + 16 + where if where >= 0 else off + ln + where
    auth[pos] ^= 0x40
    assert acc.step(bytes(auth)).state == "fail"


def test_ntproofstr_tampered(users):
    acc, _, auth = _auth_parts(users)
    off, _ = _nt_resp_span(auth)
    auth[off] ^= 1
    assert acc.step(bytes(auth)).state == "fail"


# --- impacket --------------------------------------------------------------------------------

@pytest.mark.parametrize("signing", [False, True])
@pytest.mark.parametrize("domain", ["", "WG", "ELSEWHERE"])
def test_impacket_raw(users, signing, domain):
    acc = acceptor(users)
    t1 = imp_ntlm.getNTLMSSPType1("WS", "", signingRequired=signing)
    res = acc.step(t1.getData())
    assert res.state == "continue"
    t3, key = imp_ntlm.getNTLMSSPType3(t1, res.out_token, "alice", PASSWORD, domain)
    res = acc.step(t3.getData())
    assert res.state == "ok", res.reason
    assert res.session_key == key and res.user == "Alice" and res.domain == domain


@pytest.mark.parametrize("sent_domain", ["XX", ""])
def test_domain_fallbacks(users, sent_domain):
    """Client computed NTOWFv2 with the server's domain ("WG") but sent another one (no MIC
    from impacket, so the domain field can be rewritten): the acceptor also tries "" and
    its own NetBIOS domain."""
    acc = acceptor(users)
    t1 = imp_ntlm.getNTLMSSPType1("WS", "")
    chal = acc.step(t1.getData()).out_token
    t3, key = imp_ntlm.getNTLMSSPType3(t1, chal, "alice", PASSWORD, "WG")
    t3["domain_name"] = sent_domain.encode("utf-16-le")
    res = acc.step(t3.getData())
    assert res.state == "ok" and res.session_key == key and res.domain == sent_domain


def test_authenticate_replay_refused(users):
    acc = NtlmAcceptor(users, **NAMES)
    t1 = imp_ntlm.getNTLMSSPType1("WS", "")
    t3, _ = imp_ntlm.getNTLMSSPType3(t1, acc.negotiate(t1.getData()), "alice", PASSWORD, "")
    acc.authenticate(t3.getData())
    with pytest.raises(AuthError):
        acc.authenticate(t3.getData())


def test_impacket_nthash_and_wrong_password(users):
    acc = acceptor(users)
    t1 = imp_ntlm.getNTLMSSPType1("WS", "")
    chal = acc.step(t1.getData()).out_token
    t3, _ = imp_ntlm.getNTLMSSPType3(t1, chal, "bob", "", "", nthash=nt_hash_of("hunter2"))
    assert acc.step(t3.getData()).state == "ok"
    acc = acceptor(users)
    chal = acc.step(t1.getData()).out_token
    t3, _ = imp_ntlm.getNTLMSSPType3(t1, chal, "bob", "hunter3", "")
    assert acc.step(t3.getData()).state == "fail"


def test_impacket_ntlmv1_refused(users):
    acc = acceptor(users)
    t1 = imp_ntlm.getNTLMSSPType1("WS", "", use_ntlmv2=False)
    chal = acc.step(t1.getData()).out_token
    t3, _ = imp_ntlm.getNTLMSSPType3(t1, chal, "alice", PASSWORD, "", use_ntlmv2=False)
    assert acc.step(t3.getData()).state == "fail"


@pytest.mark.parametrize("allowed", [False, True])
def test_anonymous(users, allowed):
    acc = acceptor(users, allow_anonymous=allowed)
    t1 = imp_ntlm.getNTLMSSPType1("WS", "")
    chal = acc.step(t1.getData()).out_token
    t3, _ = imp_ntlm.getNTLMSSPType3(t1, chal, "", "", "")
    res = acc.step(t3.getData())
    assert res.state == ("ok" if allowed else "fail")
    assert res.anonymous == allowed and res.session_key is None


# --- NTLM session security -------------------------------------------------------------------

def test_security_against_pyspnego(users):
    acc = acceptor(users)
    c, res = run_pyspnego(acc, "alice", PASSWORD)
    sec = acc.security
    # client -> server, several messages (RC4 stream continuity)
    for seq, msg in enumerate([b"one", b"two" * 50, b""]):
        w = c.wrap(msg).data
        assert sec.unseal(seq, w[16:], w[:16]) == msg
    for seq, msg in enumerate([b"sig-a", b"sig-b"], start=3):
        assert sec.verify(seq, msg, c.sign(msg))
    # server -> client
    for seq, msg in enumerate([b"alpha", b"beta"]):
        sealed, sig = sec.seal(seq, msg)
        assert c.unwrap(sig + sealed).data == msg
    assert c.verify(b"gamma", sec.sign(2, b"gamma")) == 0
    # wrong signature rejected
    w = c.wrap(b"x").data
    with pytest.raises(AuthError):
        sec.unseal(99, w[16:], w[:16])


def test_security_without_ess(users):
    c = spnego.client("alice", PASSWORD, hostname="srv", protocol="ntlm")
    c._context_req &= ~NegotiateFlags.extended_session_security  # client-side knob only
    acc = acceptor(users)
    c, res = run_pyspnego(acc, "alice", PASSWORD, client=c)
    assert res.state == "ok" and not acc.security.flags & NEG_ESS
    assert res.session_key == c.session_key
    w = c.wrap(b"legacy").data          # client seq 0 on the shared handle
    assert acc.security.unseal(0, w[16:], w[:16]) == b"legacy"
    sealed, sig = acc.security.seal(1, b"reply")
    assert c.unwrap(sig + sealed).data == b"reply"


def test_security_client_server_pair():
    key = bytes(range(16))
    flags = NEG_ESS | NEG_KEY_EXCH | NEG_SIGN | NEG_SEAL | 0x20000000
    srv, cli = NtlmSecurity(key, flags, server=True), NtlmSecurity(key, flags, server=False)
    sealed, sig = cli.seal(0, b"payload")
    assert srv.unseal(0, sealed, sig) == b"payload"
    assert cli.verify(0, b"m", srv.sign(0, b"m"))
    assert key.hex() not in repr(srv)


# --- robustness --------------------------------------------------------------------------------

def _valid_auth(users):
    acc, _, auth = _auth_parts(users)
    return acc, bytes(auth)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_fuzz_raw_garbage(users, data):
    acc = acceptor(users)
    res = acc.step(b"NTLMSSP\x00" + data)
    assert res.state in ("continue", "fail") and res.reason != "internal error"
    if res.state == "continue":
        res = acc.step(b"NTLMSSP\x00" + data)
        assert res.state == "fail" and res.reason != "internal error"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_authenticate(users, data):
    acc, auth = _valid_auth(users)
    n = data.draw(st.integers(1, 6))
    buf = bytearray(auth)
    for _ in range(n):
        buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(buf)))
    token = bytes(buf[:cut]) if data.draw(st.booleans()) else bytes(buf)
    assume(token != auth)  # every byte is covered by the MIC, so any change must fail
    res = acc.step(token)
    assert res.state == "fail" and res.reason != "internal error"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_ntlm_parsers_raise_only_autherror(users, data):
    acc = NtlmAcceptor(users, **NAMES)
    for fn in (acc.negotiate, acc.authenticate, parse_av_pairs):
        try:
            fn(data)
        except AuthError:
            pass
