"""Server side of NTLM (MS-NLMP), sans-I/O.

NTLMv2 only.  Responses are verified over the raw bytes the client sent (never re-serialised).
Nothing here logs passwords, hashes or keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
except ImportError:  # cryptography < 43
    from cryptography.hazmat.primitives.ciphers.algorithms import ARC4  # type: ignore[no-redef]

from .users import UserDB, win_upper

log = logging.getLogger(__name__)

__all__ = [
    "AuthError", "AuthResult", "NtlmAcceptor", "NtlmSecurity", "is_ntlmssp",
    "NTLMSSP_SIGNATURE",
]

NTLMSSP_SIGNATURE = b"NTLMSSP\x00"

# MS-NLMP 2.2.2.5 NEGOTIATE flags
NEG_UNICODE = 0x00000001
NEG_OEM = 0x00000002
REQUEST_TARGET = 0x00000004
NEG_SIGN = 0x00000010
NEG_SEAL = 0x00000020
NEG_DATAGRAM = 0x00000040
NEG_LM_KEY = 0x00000080
NEG_NTLM = 0x00000200
NEG_ANONYMOUS = 0x00000800
NEG_ALWAYS_SIGN = 0x00008000
TARGET_TYPE_DOMAIN = 0x00010000
TARGET_TYPE_SERVER = 0x00020000
NEG_ESS = 0x00080000
NEG_TARGET_INFO = 0x00800000
NEG_VERSION = 0x02000000
NEG_128 = 0x20000000
NEG_KEY_EXCH = 0x40000000
NEG_56 = 0x80000000

# Flags echoed in CHALLENGE when the client asked for them (MS-NLMP 3.2.5.1.1).
_ECHO = (NEG_UNICODE | REQUEST_TARGET | NEG_SIGN | NEG_SEAL | NEG_NTLM | NEG_ALWAYS_SIGN | NEG_ESS
         | NEG_VERSION | NEG_128 | NEG_56 | NEG_KEY_EXCH)

# MS-NLMP 2.2.2.1 AV_PAIR ids
AV_EOL, AV_NB_COMPUTER, AV_NB_DOMAIN, AV_DNS_COMPUTER, AV_DNS_DOMAIN = 0, 1, 2, 3, 4
AV_DNS_TREE, AV_FLAGS, AV_TIMESTAMP = 5, 6, 7
AV_FLAG_MIC = 0x00000002

# MS-NLMP 2.2.2.10 VERSION: 10.0 build 20348, NTLMSSP_REVISION_W2K3 (15)
SERVER_VERSION = struct.pack("<BBH3xB", 10, 0, 20348, 15)

_AUTH_MIC_OFFSET = 72  # MS-NLMP 2.2.1.3: MIC follows the 8-byte Version at offset 64


class AuthError(Exception):
    """Malformed token or failed authentication.  The message is for server logs only."""


@dataclass
class AuthResult:
    state: str                      # "continue" | "ok" | "fail"
    out_token: bytes = b""
    session_key: bytes | None = None
    user: str | None = None
    domain: str | None = None
    anonymous: bool = False
    guest: bool = False
    reason: str | None = None       # server-side diagnostics only; never sent to the client


def is_ntlmssp(token: bytes) -> bool:
    return token[:8] == NTLMSSP_SIGNATURE


# --- crypto primitives ----------------------------------------------------------------------

def hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def _rc4(key: bytes):
    return Cipher(ARC4(key), mode=None).encryptor()


def rc4k(key: bytes, data: bytes) -> bytes:
    return _rc4(key).update(data)


def ntowfv2(nt_hash: bytes, user: str, domain: str) -> bytes:
    # MS-NLMP 3.3.2 NTOWFv2
    return hmac_md5(nt_hash, (win_upper(user) + domain).encode("utf-16-le", "surrogatepass"))


def filetime_now() -> bytes:
    return struct.pack("<Q", (int(time.time()) + 11644473600) * 10_000_000)


# --- message parsing (MS-NLMP 2.2.1) --------------------------------------------------------

def _u32(msg: bytes, off: int) -> int:
    if off + 4 > len(msg):
        raise AuthError("NTLM message truncated")
    return struct.unpack_from("<I", msg, off)[0]


def _field(msg: bytes, off: int) -> bytes:
    """Len/MaxLen/BufferOffset triple (MS-NLMP 2.2.1.1) -> payload bytes, bounds-checked."""
    if off + 8 > len(msg):
        raise AuthError("NTLM message truncated")
    ln, _maxln, boff = struct.unpack_from("<HHI", msg, off)
    if ln == 0:
        return b""
    if boff > len(msg) or boff + ln > len(msg):
        raise AuthError("NTLM field out of bounds")
    return msg[boff:boff + ln]


def _check_header(msg: bytes, mtype: int, min_len: int) -> None:
    if len(msg) < min_len or msg[:8] != NTLMSSP_SIGNATURE:
        raise AuthError("not an NTLMSSP message")
    if _u32(msg, 8) != mtype:
        raise AuthError(f"expected NTLM message type {mtype}")


def parse_av_pairs(data: bytes) -> dict[int, bytes]:
    """MS-NLMP 2.2.2.1; stops at MsvAvEOL; first occurrence of an id wins."""
    out: dict[int, bytes] = {}
    pos = 0
    while True:
        if pos + 4 > len(data):
            raise AuthError("AV_PAIR list not terminated")
        av_id, av_len = struct.unpack_from("<HH", data, pos)
        pos += 4
        if av_id == AV_EOL:
            return out
        if pos + av_len > len(data):
            raise AuthError("AV_PAIR out of bounds")
        out.setdefault(av_id, data[pos:pos + av_len])
        pos += av_len


def build_av_pairs(pairs: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HH", i, len(v)) + v for i, v in pairs)
    return body + struct.pack("<HH", AV_EOL, 0)


def _decode(raw: bytes, unicode: bool) -> str:
    try:
        return raw.decode("utf-16-le") if unicode else raw.decode("cp437")
    except UnicodeDecodeError:
        raise AuthError("undecodable string in AUTHENTICATE") from None


# --- session security (MS-NLMP 3.4) ---------------------------------------------------------

_C2S_SIGN = b"session key to client-to-server signing key magic constant\x00"
_S2C_SIGN = b"session key to server-to-client signing key magic constant\x00"
_C2S_SEAL = b"session key to client-to-server sealing key magic constant\x00"
_S2C_SEAL = b"session key to server-to-client sealing key magic constant\x00"


class NtlmSecurity:
    """NTLM message integrity/confidentiality (MS-NLMP 3.4.2-3.4.4) for one side of a context.

    ``seq`` is explicit: connection-oriented callers (DCE/RPC) keep their own counters.  RC4
    handles are stateful, so calls must be made in wire order.  For DCE/RPC, where the
    signature covers more than the encrypted stub, use ``encrypt``/``decrypt`` together with
    ``sign``/``verify`` (MS-NLMP 3.4.3: encrypt first, then sign the plaintext, same handle).
    """

    def __init__(self, session_key: bytes, flags: int, *, server: bool = True) -> None:
        if len(session_key) != 16:
            raise ValueError("session key must be 16 bytes")
        self.flags = flags
        self._key = bytes(session_key)
        self._ess = bool(flags & NEG_ESS)
        if self._ess:
            # MS-NLMP 3.4.5.2 SIGNKEY, 3.4.5.3 SEALKEY
            if flags & NEG_128:
                sk = self._key
            elif flags & NEG_56:
                sk = self._key[:7]
            else:
                sk = self._key[:5]
            c2s_sign = hashlib.md5(self._key + _C2S_SIGN).digest()
            s2c_sign = hashlib.md5(self._key + _S2C_SIGN).digest()
            c2s_seal = hashlib.md5(sk + _C2S_SEAL).digest()
            s2c_seal = hashlib.md5(sk + _S2C_SEAL).digest()
            if server:
                self._out_sign, self._in_sign = s2c_sign, c2s_sign
                self._out_seal_key, self._in_seal_key = s2c_seal, c2s_seal
            else:
                self._out_sign, self._in_sign = c2s_sign, s2c_sign
                self._out_seal_key, self._in_seal_key = c2s_seal, s2c_seal
        else:
            # MS-NLMP 3.4.5.3: without ESS (and no LM_KEY, which we never negotiate) the seal
            # key is the session key and a single RC4 handle serves both directions.
            self._out_sign = self._in_sign = b""
            self._out_seal_key = self._in_seal_key = self._key
        self.reset_rc4()

    def reset_rc4(self, outgoing: bool | None = None) -> None:
        """Re-initialise RC4 state (both directions when ``outgoing`` is None).  SPNEGO does
        this after processing a mechListMIC (MS-SPNG 3.3.5.1)."""
        if not self._ess:
            self._out = self._in = _rc4(self._out_seal_key)
            return
        if outgoing in (None, True):
            self._out = _rc4(self._out_seal_key)
        if outgoing in (None, False):
            self._in = _rc4(self._in_seal_key)

    def _mac(self, handle, sign_key: bytes, seq: int, msg: bytes) -> bytes:
        if not self.flags & (NEG_SIGN | NEG_SEAL):
            # No integrity negotiated: SSPI's dummy signature (MS-NLMP 3.4.4 note), as pyspnego.
            return b"\x01" + b"\x00" * 15
        seq_b = struct.pack("<I", seq & 0xFFFFFFFF)
        if self._ess:
            # MS-NLMP 3.4.4.2
            checksum = hmac_md5(sign_key, seq_b + msg)[:8]
            if self.flags & NEG_KEY_EXCH:
                checksum = handle.update(checksum)
            return b"\x01\x00\x00\x00" + checksum + seq_b
        # MS-NLMP 3.4.4.1
        crc = struct.pack("<I", zlib.crc32(msg) & 0xFFFFFFFF)
        handle.update(b"\x00" * 4)
        checksum = handle.update(crc)
        rseq = struct.unpack("<I", handle.update(b"\x00" * 4))[0] ^ (seq & 0xFFFFFFFF)
        return b"\x01\x00\x00\x00" + b"\x00" * 4 + checksum + struct.pack("<I", rseq)

    def sign(self, seq: int, msg: bytes) -> bytes:
        """16-byte NTLMSSP_MESSAGE_SIGNATURE for an outgoing message."""
        return self._mac(self._out, self._out_sign, seq, msg)

    def verify(self, seq: int, msg: bytes, sig: bytes) -> bool:
        expected = self._mac(self._in, self._in_sign, seq, msg)
        return hmac.compare_digest(expected, bytes(sig))

    def encrypt(self, data: bytes) -> bytes:
        return self._out.update(data)

    def decrypt(self, data: bytes) -> bytes:
        return self._in.update(data)

    def seal(self, seq: int, msg: bytes, sign_data: bytes | None = None) -> tuple[bytes, bytes]:
        """MS-NLMP 3.4.3 SEAL -> (sealed message, signature over ``sign_data`` or ``msg``)."""
        sealed = self.encrypt(msg)
        return sealed, self.sign(seq, msg if sign_data is None else sign_data)

    def unseal(self, seq: int, sealed: bytes, sig: bytes) -> bytes:
        msg = self.decrypt(sealed)
        if not self.verify(seq, msg, sig):
            raise AuthError("NTLM signature mismatch")
        return msg

    def __repr__(self) -> str:
        return f"<NtlmSecurity flags=0x{self.flags:08x}>"


# --- acceptor (MS-NLMP 3.2.5) ---------------------------------------------------------------

@dataclass
class _Authenticated:
    user: str
    domain: str
    session_key: bytes | None
    flags: int
    anonymous: bool = False
    guest: bool = False
    mic_present: bool = False


class NtlmAcceptor:
    """Consumes NEGOTIATE, produces CHALLENGE, verifies AUTHENTICATE.  Raises AuthError."""

    def __init__(self, users: UserDB, *, netbios_name: str, netbios_domain: str, dns_name: str,
                 dns_domain: str, allow_anonymous: bool = False, allow_guest: bool = False) -> None:
        self.users = users
        self.netbios_name = netbios_name
        self.netbios_domain = netbios_domain
        self.dns_name = dns_name
        self.dns_domain = dns_domain
        self.allow_anonymous = allow_anonymous
        self.allow_guest = allow_guest
        self.negotiate_msg: bytes | None = None
        self.challenge_msg: bytes | None = None
        self.server_challenge = b""
        self.challenge_flags = 0
        self.security: NtlmSecurity | None = None
        self._authenticated = False

    def _account_name(self, user: str, domain: str) -> str:
        """UPN logon (user@dnsdomain, empty domain) maps to the local account (MS-NLMP 3.3.2
        computes NTOWFv2 over the name exactly as sent, so only the lookup changes)."""
        if not domain and "@" in user and self.users.nt_hash(user) is None:
            name, _, suffix = user.rpartition("@")
            if suffix.upper() in (self.dns_domain.upper(), self.netbios_domain.upper()):
                return name
        return user

    def negotiate(self, msg: bytes) -> bytes:
        """NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1) -> CHALLENGE_MESSAGE (2.2.1.2)."""
        if self.negotiate_msg is not None:
            raise AuthError("duplicate NEGOTIATE")
        msg = bytes(msg)
        _check_header(msg, 1, 16)
        cflags = _u32(msg, 12)
        flags = (cflags & _ECHO) | NEG_TARGET_INFO | TARGET_TYPE_SERVER | REQUEST_TARGET
        if not cflags & NEG_UNICODE:
            if not cflags & NEG_OEM:
                raise AuthError("client supports neither UNICODE nor OEM")
            flags |= NEG_OEM
        unicode = bool(flags & NEG_UNICODE)

        def enc(s: str) -> bytes:
            return s.encode("utf-16-le")

        target_name = enc(self.netbios_domain) if unicode else self.netbios_domain.encode("ascii", "replace")
        target_info = build_av_pairs([
            (AV_NB_DOMAIN, enc(self.netbios_domain)),
            (AV_NB_COMPUTER, enc(self.netbios_name)),
            (AV_DNS_DOMAIN, enc(self.dns_domain)),
            (AV_DNS_COMPUTER, enc(self.dns_name)),
            (AV_TIMESTAMP, filetime_now()),
        ])
        self.server_challenge = os.urandom(8)
        hdr_len = 56
        ti_off = hdr_len + len(target_name)
        out = (NTLMSSP_SIGNATURE + struct.pack("<I", 2)
               + struct.pack("<HHI", len(target_name), len(target_name), hdr_len)
               + struct.pack("<I", flags) + self.server_challenge + b"\x00" * 8
               + struct.pack("<HHI", len(target_info), len(target_info), ti_off)
               + SERVER_VERSION + target_name + target_info)
        self.negotiate_msg, self.challenge_msg, self.challenge_flags = msg, out, flags
        return out

    def authenticate(self, msg: bytes) -> _Authenticated:
        """AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3), server processing per 3.3.2 / 3.2.5.1.2."""
        if self.challenge_msg is None or self._authenticated:
            raise AuthError("AUTHENTICATE out of sequence")
        self._authenticated = True  # one attempt per challenge, pass or fail
        msg = bytes(msg)
        _check_header(msg, 3, 64)
        lm_resp = _field(msg, 12)
        nt_resp = _field(msg, 20)
        raw_domain = _field(msg, 28)
        raw_user = _field(msg, 36)
        _field(msg, 44)  # Workstation: bounds check only
        enc_key = _field(msg, 52)
        aflags = _u32(msg, 60)
        flags = (aflags & self.challenge_flags) if aflags else self.challenge_flags
        unicode = bool((aflags or self.challenge_flags) & NEG_UNICODE)
        user = _decode(raw_user, unicode)
        domain = _decode(raw_domain, unicode)

        # MS-NLMP 3.3.2: anonymous = empty user, empty NT response, LM response empty or Z(1).
        if not user and not nt_resp and lm_resp in (b"", b"\x00"):
            if not self.allow_anonymous:
                raise AuthError("anonymous logon refused")
            return _Authenticated(user="", domain=domain, session_key=None, flags=flags, anonymous=True)

        if len(nt_resp) <= 24:
            raise AuthError("NTLMv1/LM response refused")
        # MS-NLMP 2.2.2.8 NTLMv2_RESPONSE = NTProofStr(16) || NTLMv2_CLIENT_CHALLENGE (raw)
        nt_proof, blob = nt_resp[:16], nt_resp[16:]
        if len(blob) < 28 or blob[0] != 1 or blob[1] != 1:
            raise AuthError("bad NTLMv2 client challenge")
        avs = parse_av_pairs(blob[28:])
        av_flags = struct.unpack("<I", avs[AV_FLAGS])[0] if len(avs.get(AV_FLAGS, b"")) == 4 else 0
        mic_present = bool(av_flags & AV_FLAG_MIC)

        account = self._account_name(user, domain)
        nt_hash = self.users.nt_hash(account) if account else None
        known = nt_hash is not None
        # Unknown users still pay for the HMACs so timing does not reveal account existence.
        key = nt_hash if known else os.urandom(16)
        base_key = None
        for dom in dict.fromkeys((domain, "", self.netbios_domain)):
            ntowf = ntowfv2(key, user, dom)
            expected = hmac_md5(ntowf, self.server_challenge + blob)
            if hmac.compare_digest(expected, nt_proof) and known and base_key is None:
                base_key = hmac_md5(ntowf, nt_proof)  # MS-NLMP 3.3.2 SessionBaseKey
        if base_key is None:
            if not known and account and self.allow_guest:
                return _Authenticated(user=user, domain=domain, session_key=None, flags=flags,
                                      guest=True)
            raise AuthError("logon failure")

        # MS-NLMP 3.4.5.1 KXKEY: NTLMv2 -> KeyExchangeKey = SessionBaseKey
        if flags & NEG_KEY_EXCH:
            if len(enc_key) != 16:
                raise AuthError("KEY_EXCH without a 16-byte EncryptedRandomSessionKey")
            session_key = rc4k(base_key, enc_key)
        else:
            session_key = base_key

        if mic_present:
            if len(msg) < _AUTH_MIC_OFFSET + 16:
                raise AuthError("MIC flagged but AUTHENTICATE too short")
            mic = msg[_AUTH_MIC_OFFSET:_AUTH_MIC_OFFSET + 16]
            zeroed = msg[:_AUTH_MIC_OFFSET] + b"\x00" * 16 + msg[_AUTH_MIC_OFFSET + 16:]
            # MS-NLMP 3.2.5.1.2 / 3.1.5.1.2
            expected_mic = hmac_md5(session_key, self.negotiate_msg + self.challenge_msg + zeroed)  # type: ignore[operator]
            if not hmac.compare_digest(expected_mic, mic):
                raise AuthError("AUTHENTICATE MIC mismatch")

        self.security = NtlmSecurity(session_key, flags, server=True)
        canon = self.users.canonical_name(account) or account
        return _Authenticated(user=canon, domain=domain, session_key=session_key, flags=flags,
                              mic_present=mic_present)


def _ntlm_result(auth: _Authenticated, out_token: bytes = b"") -> AuthResult:
    return AuthResult(state="ok", out_token=out_token, session_key=auth.session_key, user=auth.user,
                      domain=auth.domain, anonymous=auth.anonymous, guest=auth.guest)
