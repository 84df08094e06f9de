"""SPNEGO (RFC 4178, MS-SPNG) acceptor wrapping the NTLM acceptor, sans-I/O.

Only NTLMSSP is offered.  A minimal, bounds-checked DER codec is included; every malformed
input surfaces as AuthError.
"""

from __future__ import annotations

import logging

from .ntlm import (
    NEG_SIGN, AuthError, AuthResult, NtlmAcceptor, NtlmSecurity, _ntlm_result, is_ntlmssp,
)
from .users import UserDB

log = logging.getLogger(__name__)

__all__ = ["Acceptor", "negprot_token", "NTLMSSP_OID", "SPNEGO_OID", "KRB5_OID", "MS_KRB5_OID"]

HINT_NAME = "not_defined_in_RFC4178@please_ignore"
MAX_DEPTH = 8

# RFC 4178 4.2.2 NegState
ACCEPT_COMPLETED, ACCEPT_INCOMPLETE, REJECT, REQUEST_MIC = 0, 1, 2, 3


# --- DER ------------------------------------------------------------------------------------

def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def encode_oid(dotted: str) -> bytes:
    """X.690 8.19 OBJECT IDENTIFIER, full TLV."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


SPNEGO_OID = encode_oid("1.3.6.1.5.5.2")
NTLMSSP_OID = encode_oid("1.3.6.1.4.1.311.2.2.10")
KRB5_OID = encode_oid("1.2.840.113554.1.2.2")
MS_KRB5_OID = encode_oid("1.2.840.48018.1.2.2")


def read_tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """-> (tag, content_start, content_end).  Single-byte tags, definite lengths only."""
    if pos + 2 > end:
        raise AuthError("DER: truncated header")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise AuthError("DER: high tag numbers unsupported")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise AuthError("DER: indefinite or oversized length")
        if pos + n > end:
            raise AuthError("DER: truncated length")
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    if length > end - pos:
        raise AuthError("DER: length exceeds buffer")
    return tag, pos, pos + length


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """Children of a constructed value -> [(tag, tlv_start, content_start, content_end)]."""
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = read_tlv(buf, pos, end)
        out.append((tag, pos, cs, ce))
        pos = ce
    return out


def _expect(buf: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    t, cs, ce = read_tlv(buf, pos, end)
    if t != tag:
        raise AuthError(f"DER: expected tag 0x{tag:02x}, got 0x{t:02x}")
    return cs, ce


def _ctx_fields(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """SEQUENCE body of [n] EXPLICIT fields -> {n: (inner_start, inner_end)}; DER order enforced."""
    fields: dict[int, tuple[int, int]] = {}
    last = -1
    for tag, _ts, cs, ce in _children(buf, start, end):
        if tag & 0xE0 != 0xA0:
            raise AuthError("DER: expected context-specific constructed field")
        n = tag & 0x1F
        if n <= last:
            raise AuthError("DER: fields out of order or duplicated")
        last = n
        fields[n] = (cs, ce)
    return fields


def _octets(buf: bytes, span: tuple[int, int]) -> bytes:
    cs, ce = _expect(buf, span[0], span[1], 0x04)
    return bytes(buf[cs:ce])


class NegTokenInit:
    def __init__(self, mech_types_raw: bytes, mechs: list[bytes], mech_token: bytes | None,
                 mech_list_mic: bytes | None) -> None:
        self.mech_types_raw = mech_types_raw  # DER of MechTypeList exactly as received
        self.mechs = mechs                    # each a full OID TLV
        self.mech_token = mech_token
        self.mech_list_mic = mech_list_mic


class NegTokenResp:
    def __init__(self, neg_state: int | None, supported_mech: bytes | None,
                 response_token: bytes | None, mech_list_mic: bytes | None) -> None:
        self.neg_state = neg_state
        self.supported_mech = supported_mech
        self.response_token = response_token
        self.mech_list_mic = mech_list_mic


def parse_token(token: bytes) -> NegTokenInit | NegTokenResp:
    """GSS InitialContextToken{spnego, NegTokenInit} (RFC 2743 3.1) or NegTokenResp [1]."""
    buf = bytes(token)
    tag, cs, ce = read_tlv(buf, 0, len(buf))
    if tag == 0x60:
        ocs, oce = _expect(buf, cs, ce, 0x06)
        if buf[cs:oce] != SPNEGO_OID:
            raise AuthError("not a SPNEGO token")
        tag, cs, ce = read_tlv(buf, oce, ce)
    if tag == 0xA0:  # RFC 4178 4.2.1 NegTokenInit (also MS-SPNG NegTokenInit2)
        scs, sce = _expect(buf, cs, ce, 0x30)
        f = _ctx_fields(buf, scs, sce)
        if 0 not in f:
            raise AuthError("NegTokenInit without mechTypes")
        mt, mts_end = f[0]
        _t, lcs, lce = read_tlv(buf, mt, mts_end)
        if _t != 0x30 or lce != mts_end:
            raise AuthError("bad mechTypes")
        mechs = []
        for t, ts, _c, e in _children(buf, lcs, lce):
            if t != 0x06:
                raise AuthError("mechTypes entry is not an OID")
            mechs.append(buf[ts:e])
        if not mechs:
            raise AuthError("empty mechTypes")
        mech_token = _octets(buf, f[2]) if 2 in f else None
        mic = None
        if 3 in f and f[3][0] < f[3][1] and buf[f[3][0]] == 0x04:  # [3] mechListMIC (RFC 4178); negHints is a SEQUENCE
            mic = _octets(buf, f[3])
        if 4 in f:
            mic = _octets(buf, f[4])
        return NegTokenInit(buf[mt:mts_end], mechs, mech_token, mic)
    if tag == 0xA1:  # RFC 4178 4.2.2 NegTokenResp
        scs, sce = _expect(buf, cs, ce, 0x30)
        f = _ctx_fields(buf, scs, sce)
        state = None
        if 0 in f:
            ecs, ece = _expect(buf, f[0][0], f[0][1], 0x0A)
            if ece - ecs != 1:
                raise AuthError("bad negState")
            state = buf[ecs]
        mech = None
        if 1 in f:
            ocs, oce = _expect(buf, f[1][0], f[1][1], 0x06)
            mech = buf[f[1][0]:oce]
        tok = _octets(buf, f[2]) if 2 in f else None
        mic = _octets(buf, f[3]) if 3 in f else None
        return NegTokenResp(state, mech, tok, mic)
    raise AuthError(f"unknown SPNEGO token tag 0x{tag:02x}")


def encode_resp(neg_state: int | None, supported_mech: bytes | None = None,
                response_token: bytes | None = None, mech_list_mic: bytes | None = None) -> bytes:
    body = b""
    if neg_state is not None:
        body += tlv(0xA0, tlv(0x0A, bytes([neg_state])))
    if supported_mech is not None:
        body += tlv(0xA1, supported_mech)
    if response_token is not None:
        body += tlv(0xA2, tlv(0x04, response_token))
    if mech_list_mic is not None:
        body += tlv(0xA3, tlv(0x04, mech_list_mic))
    return tlv(0xA1, tlv(0x30, body))


def encode_init(mechs: list[bytes], mech_token: bytes | None = None,
                mech_list_mic: bytes | None = None) -> bytes:
    """Client-style NegTokenInit in a GSS InitialContextToken (used by tests/tools)."""
    body = tlv(0xA0, tlv(0x30, b"".join(mechs)))
    if mech_token is not None:
        body += tlv(0xA2, tlv(0x04, mech_token))
    if mech_list_mic is not None:
        body += tlv(0xA3, tlv(0x04, mech_list_mic))
    return tlv(0x60, SPNEGO_OID + tlv(0xA0, tlv(0x30, body)))


def negprot_token(hint_name: str = HINT_NAME, mechs: tuple[bytes, ...] = (NTLMSSP_OID,)) -> bytes:
    """NegTokenInit2 (MS-SPNG 2.2.1) for the SMB2 NEGOTIATE response security buffer."""
    body = tlv(0xA0, tlv(0x30, b"".join(mechs)))
    if hint_name:   # negHints: clients ignore them (MS-SPNG 2.2.1); Wireshark reads [3] as mechListMIC
        body += tlv(0xA3, tlv(0x30, tlv(0xA0, tlv(0x1B, hint_name.encode("ascii")))))
    return tlv(0x60, SPNEGO_OID + tlv(0xA0, tlv(0x30, body)))


# --- acceptor -------------------------------------------------------------------------------

class Acceptor:
    """One per SESSION_SETUP exchange.  ``step()`` never raises: failures are results."""

    def __init__(self, users: UserDB, *, netbios_name: str, netbios_domain: str, dns_name: str,
                 dns_domain: str, allow_anonymous: bool = False, allow_guest: bool = False) -> None:
        self._ntlm = NtlmAcceptor(users, netbios_name=netbios_name, netbios_domain=netbios_domain,
                                  dns_name=dns_name, dns_domain=dns_domain,
                                  allow_anonymous=allow_anonymous, allow_guest=allow_guest)
        self._framing: str | None = None   # "raw" | "spnego"
        self._phase = "init"                # init -> negotiate -> authenticate -> mic -> done
        self._mech_types_raw = b""
        self._mic_mandatory = False         # NTLM was not the initiator's first choice (RFC 4178 5)
        self._supported_sent = False
        self._pending: AuthResult | None = None
        self.security: NtlmSecurity | None = None
        self.result: AuthResult | None = None

    @property
    def complete(self) -> bool:
        return self._phase == "done"

    def step(self, token: bytes) -> AuthResult:
        try:
            res = self._step(bytes(token))
        except AuthError as e:
            res = self._fail(str(e))
        except Exception:  # never let a malformed token take the connection down
            log.exception("internal error in SPNEGO/NTLM acceptor")
            res = self._fail("internal error")
        if res.state != "continue":
            self._phase = "done"
            self.result = res
            if res.state != "ok":
                self.security = None
        return res

    def _fail(self, reason: str) -> AuthResult:
        log.info("authentication failed: %s", reason)
        out = encode_resp(REJECT) if self._framing == "spnego" else b""
        return AuthResult(state="fail", out_token=out, reason=reason)

    def _resp(self, state: int, token: bytes | None = None, mic: bytes | None = None) -> bytes:
        mech = None
        if not self._supported_sent:
            mech, self._supported_sent = NTLMSSP_OID, True
        return encode_resp(state, mech, token, mic)

    def _step(self, token: bytes) -> AuthResult:
        if self._phase == "done":
            raise AuthError("exchange already finished")
        if self._framing is None:
            if not token:
                # Empty first buffer: offer our mechs (MS-SMB2 3.3.5.5.3 behaviour of Windows).
                return AuthResult(state="continue", out_token=negprot_token())
            self._framing = "raw" if is_ntlmssp(token) else "spnego"
        if self._framing == "raw":
            return self._step_raw(token)
        return self._step_spnego(token)

    def _step_raw(self, token: bytes) -> AuthResult:
        if self._phase == "init":
            self._phase = "authenticate"
            return AuthResult(state="continue", out_token=self._ntlm.negotiate(token))
        if self._phase == "authenticate":
            auth = self._ntlm.authenticate(token)
            self.security = self._ntlm.security
            return _ntlm_result(auth)
        raise AuthError("unexpected raw NTLMSSP token")

    def _step_spnego(self, token: bytes) -> AuthResult:
        tok = parse_token(token)
        if self._phase == "init":
            if not isinstance(tok, NegTokenInit):
                raise AuthError("first SPNEGO token is not a NegTokenInit")
            if NTLMSSP_OID not in tok.mechs:
                raise AuthError("initiator does not offer NTLMSSP")
            self._mech_types_raw = tok.mech_types_raw
            if tok.mechs[0] != NTLMSSP_OID or tok.mech_token is None:
                # Optimistic token is for another mech (or absent): select NTLMSSP, no token.
                self._mic_mandatory = tok.mechs[0] != NTLMSSP_OID
                self._phase = "negotiate"
                return AuthResult(state="continue", out_token=self._resp(ACCEPT_INCOMPLETE))
            self._phase = "authenticate"
            challenge = self._ntlm.negotiate(tok.mech_token)
            return AuthResult(state="continue", out_token=self._resp(ACCEPT_INCOMPLETE, challenge))

        if not isinstance(tok, NegTokenResp):
            raise AuthError("expected NegTokenResp")
        if tok.neg_state == REJECT:
            raise AuthError("initiator rejected")
        if self._phase == "negotiate":
            if not tok.response_token:
                raise AuthError("missing NTLM NEGOTIATE")
            self._phase = "authenticate"
            challenge = self._ntlm.negotiate(tok.response_token)
            return AuthResult(state="continue", out_token=self._resp(ACCEPT_INCOMPLETE, challenge))
        if self._phase == "authenticate":
            if not tok.response_token:
                raise AuthError("missing NTLM AUTHENTICATE")
            auth = self._ntlm.authenticate(tok.response_token)
            sec = self._ntlm.security
            result = _ntlm_result(auth)
            if sec is None:  # anonymous / guest: no key, no mechListMIC (MS-SPNG 3.3.5.1)
                result.out_token = self._resp(ACCEPT_COMPLETED)
                return result
            self.security = sec
            client_mic = tok.mech_list_mic
            if client_mic is not None and client_mic == tok.response_token:
                client_mic = None  # buggy old initiators echo the token here (pyspnego note)
            if client_mic is not None:
                self._check_client_mic(sec, client_mic)
            need_mic = (client_mic is not None or self._mic_mandatory or auth.mic_present
                        or bool(auth.flags & NEG_SIGN))
            server_mic = None
            if need_mic:
                server_mic = sec.sign(0, self._mech_types_raw)
                sec.reset_rc4(outgoing=True)
            if self._mic_mandatory and client_mic is None:
                # RFC 4178 5: the initiator's mechListMIC is required; ask for it.
                self._phase = "mic"
                self._pending = result
                return AuthResult(state="continue",
                                  out_token=self._resp(ACCEPT_INCOMPLETE, None, server_mic))
            result.out_token = self._resp(ACCEPT_COMPLETED, None, server_mic)
            return result
        if self._phase == "mic":
            if tok.mech_list_mic is None or self._pending is None or self.security is None:
                raise AuthError("required mechListMIC missing")
            self._check_client_mic(self.security, tok.mech_list_mic)
            result, self._pending = self._pending, None
            result.out_token = self._resp(ACCEPT_COMPLETED)
            return result
        raise AuthError("unexpected SPNEGO token")

    def _check_client_mic(self, sec: NtlmSecurity, mic: bytes) -> None:
        # MS-SPNG 3.3.5.1: client signs the raw mechTypes DER with its send key, seq 0.
        if not sec.verify(0, self._mech_types_raw, mic):
            raise AuthError("mechListMIC mismatch")
        sec.reset_rc4(outgoing=False)
