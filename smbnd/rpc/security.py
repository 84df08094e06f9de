"""Pluggable authentication for DCE/RPC associations (MS-RPCE 3.3.1.5.2, 3.3.1.5.5).

An association asks its ``SecurityProvider`` for a ``SecurityContext`` when a bind carries an
auth verifier. The context runs the token legs (``step``) and then protects PDUs. Only the
PDU-level operations are seen by the runtime, so another mechanism (Kerberos, Netlogon secure
channel) plugs in by implementing the same four methods.

PDU protection follows MS-RPCE 2.2.2.11 / 3.3.1.5.2.2 as Windows and Samba do it for NTLMSSP:
the signature covers the whole PDU from the common header through the sec_trailer (auth_value
excluded), with the stub in plaintext; privacy encrypts the stub and its auth padding in place.
NTLMSSP sequence numbers count PDUs, separately per direction (MS-NLMP 3.4.4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..auth import Acceptor, UserDB
from ..auth.ntlm import is_ntlmssp
from ..auth.spnego import NegTokenResp, parse_token
from . import pdu as p


class SecurityError(Exception):
    """Signature mismatch or unusable context (-> fault nca_s_fault_sec_pkg_error)."""


@dataclass(slots=True)
class Principal:
    user: str | None
    domain: str | None = None
    anonymous: bool = False
    guest: bool = False


@dataclass(slots=True)
class StepResult:
    state: str                       # "continue" | "ok" | "fail"
    out_token: bytes = b""
    principal: Principal | None = None


class SecurityContext(Protocol):
    sig_size: int

    def step(self, token: bytes) -> StepResult: ...

    def sign(self, pdu: bytes) -> bytes: ...

    def verify(self, pdu: bytes, sig: bytes) -> None: ...

    def seal(self, pdu: bytearray, start: int, end: int) -> bytes: ...

    def unseal(self, pdu: bytearray, start: int, end: int, sig: bytes) -> None: ...


class SecurityProvider(Protocol):
    def supports(self, auth_type: int) -> bool: ...

    def new_context(self, auth_type: int, auth_level: int) -> SecurityContext: ...


class NtlmContext:
    """NTLMSSP directly (RPC_C_AUTHN_WINNT) or inside SPNEGO (RPC_C_AUTHN_GSS_NEGOTIATE), on top of
    the SMB acceptor, so RPC and SMB accept the same users."""

    sig_size = 16

    def __init__(self, acceptor: Acceptor, auth_type: int):
        self._acceptor = acceptor
        self._auth_type = auth_type
        self._sec = None
        self._send_seq = 0
        self._recv_seq = 0

    def step(self, token: bytes) -> StepResult:
        if self._auth_type == p.AUTHN_WINNT and not is_ntlmssp(token):
            return StepResult("fail")          # WINNT carries raw NTLMSSP only (MS-RPCE 2.2.1.1.7)
        client_mic = _has_mic(token)
        res = self._acceptor.step(token)
        if res.state == "fail":
            return StepResult("fail", res.out_token)
        # SPNEGO mechListMICs are signed with NTLM sequence number 0 in each direction; the RC4
        # state is reset afterwards but the numbers go on (MS-SPNG 3.3.5.1; Samba and Windows)
        self._recv_seq += client_mic
        self._send_seq += _has_mic(res.out_token)
        if res.state == "continue":
            return StepResult("continue", res.out_token)
        self._sec = self._acceptor.security
        return StepResult("ok", res.out_token,
                          Principal(res.user, res.domain, anonymous=res.anonymous, guest=res.guest))

    def _security(self):
        if self._sec is None:
            raise SecurityError("no session key (anonymous or guest context)")
        return self._sec

    def sign(self, pdu: bytes) -> bytes:
        sig = self._security().sign(self._send_seq, bytes(pdu))
        self._send_seq += 1
        return sig

    def verify(self, pdu: bytes, sig: bytes) -> None:
        ok = self._security().verify(self._recv_seq, bytes(pdu), sig)
        self._recv_seq += 1
        if not ok:
            raise SecurityError("bad PDU signature")

    def seal(self, pdu: bytearray, start: int, end: int) -> bytes:
        # MS-NLMP 3.4.3: encrypt first, then sign the plaintext with the same RC4 handle
        sec = self._security()
        plain = bytes(pdu)
        pdu[start:end] = sec.encrypt(plain[start:end])
        sig = sec.sign(self._send_seq, plain)
        self._send_seq += 1
        return sig

    def unseal(self, pdu: bytearray, start: int, end: int, sig: bytes) -> None:
        sec = self._security()
        pdu[start:end] = sec.decrypt(bytes(pdu[start:end]))
        ok = sec.verify(self._recv_seq, bytes(pdu), sig)
        self._recv_seq += 1
        if not ok:
            raise SecurityError("bad PDU signature")


def _has_mic(token: bytes) -> int:
    if not token or is_ntlmssp(token):
        return 0
    try:
        tok = parse_token(bytes(token))
    except Exception:
        return 0
    return int(isinstance(tok, NegTokenResp) and tok.mech_list_mic is not None)


class NtlmProvider:
    """WINNT and GSS_NEGOTIATE with NTLMSSP, against the server's UserDB."""

    def __init__(self, users: UserDB, *, netbios_name: str, netbios_domain: str, dns_name: str,
                 dns_domain: str, allow_anonymous: bool = False, allow_guest: bool = False):
        self._kw = dict(netbios_name=netbios_name, netbios_domain=netbios_domain, dns_name=dns_name,
                        dns_domain=dns_domain, allow_anonymous=allow_anonymous, allow_guest=allow_guest)
        self.users = users

    @classmethod
    def for_server(cls, server) -> "NtlmProvider":
        cfg = server.config
        return cls(server.users, netbios_name=cfg.name[:15].upper(), netbios_domain=cfg.domain.upper(),
                   dns_name=f"{cfg.name.lower()}.{cfg.dns_domain}", dns_domain=cfg.dns_domain,
                   allow_anonymous=cfg.allow_anonymous, allow_guest=cfg.allow_guest)

    def supports(self, auth_type: int) -> bool:
        return auth_type in (p.AUTHN_WINNT, p.AUTHN_GSS_NEGOTIATE)

    def new_context(self, auth_type: int, auth_level: int) -> NtlmContext:
        return NtlmContext(Acceptor(self.users, **self._kw), auth_type)
