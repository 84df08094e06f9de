"""SPNEGO acceptor tests against pyspnego and impacket initiators."""

from __future__ import annotations

import pytest
import spnego
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from impacket import ntlm as imp_ntlm
from impacket.spnego import SPNEGO_NegTokenInit, SPNEGO_NegTokenResp, TypesMech
from spnego._spnego import NegState, NegTokenInit as PyInit, unpack_token

from smbnd.auth import NTLMSSP_OID, Acceptor, AuthError, UserDB, negprot_token
from smbnd.auth.spnego import (
    KRB5_OID, MS_KRB5_OID, encode_init, encode_oid, encode_resp, parse_token, read_tlv, tlv,
)

PASSWORD = "Secret1!"
NAMES = dict(netbios_name="SRV", netbios_domain="WG", dns_name="srv.example.test",
             dns_domain="example.test")
NTLM_DOTTED = "1.3.6.1.4.1.311.2.2.10"


@pytest.fixture(autouse=True)
def _no_kerberos(monkeypatch, tmp_path):
    # keep pyspnego's Negotiate from trying Kerberos: no krb5 config, no ccache
    (tmp_path / "krb5.conf").write_text("")
    monkeypatch.setenv("KRB5_CONFIG", str(tmp_path / "krb5.conf"))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path}/nocc")


@pytest.fixture
def users():
    return UserDB.from_mapping({"Alice": PASSWORD})


def acceptor(users, **kw):
    return Acceptor(users, **NAMES, **kw)


def drive(acc, c):
    tok = c.step()
    while True:
        res = acc.step(tok)
        if res.state != "continue":
            return res
        tok = c.step(res.out_token)


def negotiate_client(user="alice", password=PASSWORD):
    return spnego.client(user, password, hostname="srv", protocol="negotiate")


# --- DER / tokens ------------------------------------------------------------------------------

def test_oid_encoding():
    assert NTLMSSP_OID == bytes.fromhex("060a2b0601040182370202 0a".replace(" ", ""))
    assert encode_oid("1.2.840.113554.1.2.2") == b"\x06\x09" + bytes.fromhex("2a864886f712010202")


def test_negprot_token_parses_with_pyspnego_and_impacket():
    tok = negprot_token()
    init = unpack_token(tok)
    assert isinstance(init, PyInit)
    assert init.mech_types == [NTLM_DOTTED]
    assert init.hint_name == b"not_defined_in_RFC4178@please_ignore"
    imp = SPNEGO_NegTokenInit(tok)
    assert imp["MechTypes"] == [TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]]


@pytest.mark.parametrize("bad", [
    b"", b"\x60", b"\x60\x80\x00\x00", b"\x60\x85\x00\x00\x00\x00\x01", b"\x60\x7f",
    b"\x61\x00", b"\xa1\x03\x30\x01", b"\x1f\x01\x00", b"\xa1\x05\x30\x03\xa0\x01\x0a",
    b"\xa1\x08\x30\x06\xa1\x01\x06\xa0\x01\x0a",
])
def test_der_rejects_malformed(bad):
    with pytest.raises(AuthError):
        parse_token(bad)


def test_der_fields_out_of_order_rejected():
    body = tlv(0xA2, tlv(0x04, b"x")) + tlv(0xA0, tlv(0x0A, b"\x01"))
    with pytest.raises(AuthError):
        parse_token(tlv(0xA1, tlv(0x30, body)))


def test_read_tlv_long_form():
    buf = b"\x04\x82\x01\x00" + b"a" * 256
    assert read_tlv(buf, 0, len(buf)) == (4, 4, 260)


# --- pyspnego Negotiate ------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["alice", "WG\\ALICE"])
def test_pyspnego_negotiate_ok(users, user):
    acc = acceptor(users)
    c = negotiate_client(user)
    first = c.step()
    assert first[:1] == b"\x60"
    r1 = acc.step(first)
    assert r1.state == "continue"
    resp1 = unpack_token(r1.out_token)
    assert resp1.neg_state == NegState.accept_incomplete and resp1.supported_mech == NTLM_DOTTED
    r2 = acc.step(c.step(r1.out_token))
    assert r2.state == "ok", r2.reason
    final = unpack_token(r2.out_token)
    assert final.neg_state == NegState.accept_complete and final.mech_list_mic
    assert final.supported_mech is None
    c.step(r2.out_token)  # client verifies our mechListMIC
    assert c.complete and c.session_key == r2.session_key and r2.user == "Alice"
    # NTLM crypto after the mechListMIC exchange (RC4 reset, seq numbers continue)
    w = c.wrap(b"after mic").data
    assert acc.security.unseal(1, w[16:], w[:16]) == b"after mic"
    sealed, sig = acc.security.seal(1, b"reply")
    assert c.unwrap(sig + sealed).data == b"reply"


def test_pyspnego_wrong_password_rejects(users):
    res = drive(acceptor(users), negotiate_client(password="bad"))
    assert res.state == "fail" and res.session_key is None
    assert unpack_token(res.out_token).neg_state == NegState.reject
    res2 = drive(acceptor(users), negotiate_client(user="nobody", password="bad"))
    assert (res2.state, res2.out_token, res2.reason) == (res.state, res.out_token, res.reason)


def test_bad_client_mechlistmic(users):
    acc = acceptor(users)
    c = negotiate_client()
    out = c.step(acc.step(c.step()).out_token)
    resp = unpack_token(out)
    assert resp.mech_list_mic
    bad = bytearray(resp.mech_list_mic)
    bad[5] ^= 1
    tampered = encode_resp(None, None, resp.response_token, bytes(bad))
    res = acc.step(tampered)
    assert res.state == "fail" and acc.security is None


def test_step_after_completion_fails(users):
    acc = acceptor(users)
    res = drive(acc, negotiate_client())
    assert res.state == "ok" and acc.complete
    assert acc.step(res.out_token).state == "fail"


def test_empty_first_token_gets_negprot(users):
    acc = acceptor(users)
    res = acc.step(b"")
    assert res.state == "continue" and res.out_token == negprot_token()
    assert drive(acc, negotiate_client()).state == "ok"


def test_no_ntlm_offered(users):
    res = acceptor(users).step(encode_init([KRB5_OID], b"\x60\x00"))
    assert res.state == "fail" and unpack_token(res.out_token).neg_state == NegState.reject


# --- impacket SPNEGO -----------------------------------------------------------------------------

@pytest.mark.parametrize("signing", [False, True])
def test_impacket_spnego(users, signing):
    acc = acceptor(users)
    t1 = imp_ntlm.getNTLMSSPType1("WS", "", signingRequired=signing)
    init = SPNEGO_NegTokenInit()
    init["MechTypes"] = [TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]]
    init["MechToken"] = t1.getData()
    r1 = acc.step(init.getData())
    assert r1.state == "continue"
    resp = SPNEGO_NegTokenResp(r1.out_token)
    assert resp["SupportedMech"] == TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]
    t3, key = imp_ntlm.getNTLMSSPType3(t1, resp["ResponseToken"], "alice", PASSWORD, "WG")
    out = SPNEGO_NegTokenResp()
    out["ResponseToken"] = t3.getData()
    r2 = acc.step(out.getData())
    assert r2.state == "ok", r2.reason
    assert r2.session_key == key
    final = unpack_token(r2.out_token)
    assert final.neg_state == NegState.accept_complete
    # mechListMIC only because SIGN was negotiated (impacket sends none itself)
    assert bool(final.mech_list_mic) == signing


# --- mech negotiation away from Kerberos (RFC 4178 5) ------------------------------------------

def _krb_first_flow(users, send_mic: bool):
    acc = acceptor(users)
    mechs = [MS_KRB5_OID, KRB5_OID, NTLMSSP_OID]
    r1 = acc.step(encode_init(mechs, b"\x60\x03\x06\x01\x00"))  # optimistic (bogus) krb5 token
    assert r1.state == "continue"
    resp = unpack_token(r1.out_token)
    assert resp.neg_state == NegState.accept_incomplete
    assert resp.supported_mech == NTLM_DOTTED and resp.response_token is None
    c = spnego.client("alice", PASSWORD, hostname="srv", protocol="ntlm")
    r2 = acc.step(encode_resp(None, None, c.step()))
    assert r2.state == "continue"
    chal = unpack_token(r2.out_token)
    assert chal.supported_mech is None
    auth = c.step(chal.response_token)
    mech_types_der = tlv(0x30, b"".join(mechs))
    mic = None
    if send_mic:
        mic = c.sign(mech_types_der)
        c._reset_ntlm_crypto_state(outgoing=True)  # MS-SPNG 3.3.5.1, as pyspnego's Negotiate does
    r3 = acc.step(encode_resp(None, None, auth, mic))
    return acc, c, r3, mech_types_der


def test_krb5_first_then_ntlm_with_mic(users):
    acc, c, r3, der = _krb_first_flow(users, send_mic=True)
    assert r3.state == "ok", r3.reason
    final = unpack_token(r3.out_token)
    assert final.neg_state == NegState.accept_complete
    c.verify(der, final.mech_list_mic)
    assert r3.session_key == c.session_key


def test_krb5_first_mic_mandatory(users):
    acc, c, r3, der = _krb_first_flow(users, send_mic=False)
    assert r3.state == "continue"  # server sends its MIC and waits for the initiator's
    resp = unpack_token(r3.out_token)
    assert resp.neg_state == NegState.accept_incomplete
    c.verify(der, resp.mech_list_mic)
    r4 = acc.step(encode_resp(None, None, None, c.sign(der)))
    assert r4.state == "ok" and unpack_token(r4.out_token).neg_state == NegState.accept_complete
    assert r4.session_key == c.session_key


def test_krb5_first_missing_mic_then_garbage(users):
    acc, c, r3, der = _krb_first_flow(users, send_mic=False)
    assert acc.step(encode_resp(None, None, b"x")).state == "fail"


# --- robustness --------------------------------------------------------------------------------

def _tokens(users):
    acc = acceptor(users)
    c = negotiate_client()
    t1 = c.step()
    t3 = c.step(acc.step(t1).out_token)
    return acc, t1, t3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from([b"", b"\x60", b"\xa0", b"\xa1", b"\x60\x82"]), data=st.binary(max_size=200))
def test_fuzz_garbage(users, prefix, data):
    res = acceptor(users).step(prefix + data)
    assert res.state in ("fail", "continue") and res.reason != "internal error"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_tokens(users, data):
    acc, t1, t3 = _tokens(users)
    which = data.draw(st.sampled_from(["init", "auth"]))
    buf = bytearray(t1 if which == "init" else t3)
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
    buf = buf[:data.draw(st.integers(0, len(buf)))]
    if which == "init":
        res = acceptor(users).step(bytes(buf))
    else:
        res = acc.step(bytes(buf))
    assert res.state in ("fail", "continue", "ok") and res.reason != "internal error"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120))
def test_parse_token_raises_only_autherror(data):
    for d in (data, b"\x60" + bytes([len(data) & 0x7F]) + data, b"\xa1" + bytes([len(data) & 0x7F]) + data):
        try:
            parse_token(d)
        except AuthError:
            pass
