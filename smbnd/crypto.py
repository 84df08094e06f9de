"""SMB 2/3 signing, key derivation and encryption (MS-SMB2 3.1.4, 3.2.4.1.4, 3.1.4.3).

Everything uses `cryptography`. Keys are bytes; nothing here logs or stores them.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from cryptography.hazmat.primitives.kdf.kbkdf import CounterLocation, KBKDFHMAC, Mode

# Signing algorithm ids (MS-SMB2 2.2.3.1.7)
SIGN_HMAC_SHA256 = 0
SIGN_AES_CMAC = 1
SIGN_AES_GMAC = 2

# Cipher ids (MS-SMB2 2.2.3.1.2)
AES_128_CCM = 1
AES_128_GCM = 2
AES_256_CCM = 3
AES_256_GCM = 4
CIPHER_NAMES = {AES_128_CCM: "AES-128-CCM", AES_128_GCM: "AES-128-GCM",
                AES_256_CCM: "AES-256-CCM", AES_256_GCM: "AES-256-GCM"}


def kdf(key: bytes, label: bytes, context: bytes, length_bits: int = 128) -> bytes:
    """SP800-108 counter-mode KDF with HMAC-SHA256, r=32 (MS-SMB2 3.1.4.2)."""
    k = KBKDFHMAC(algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=length_bits // 8,
                  rlen=4, llen=4, location=CounterLocation.BeforeFixed,
                  label=label, context=context, fixed=None)
    return k.derive(key)


class SessionKeys:
    """Keys derived for one session (MS-SMB2 3.3.5.5.3)."""

    __slots__ = ("session_key", "signing_key", "encryption_key", "decryption_key", "application_key")

    def __init__(self, session_key: bytes, dialect: int, preauth_hash: bytes | None, cipher: int | None):
        sk = session_key[:16].ljust(16, b"\0")
        self.session_key = sk
        cipher_bits = 256 if cipher in (AES_256_CCM, AES_256_GCM) else 128
        if dialect >= 0x0311:
            ctx = preauth_hash or b""
            self.signing_key = kdf(sk, b"SMBSigningKey\0", ctx)
            self.application_key = kdf(sk, b"SMBAppKey\0", ctx)
            # server decrypts with client->server key, encrypts with server->client key
            self.decryption_key = kdf(sk, b"SMBC2SCipherKey\0", ctx, cipher_bits)
            self.encryption_key = kdf(sk, b"SMBS2CCipherKey\0", ctx, cipher_bits)
        elif dialect >= 0x0300:
            self.signing_key = kdf(sk, b"SMB2AESCMAC\0", b"SmbSign\0")
            self.application_key = kdf(sk, b"SMB2APP\0", b"SmbRpc\0")
            self.decryption_key = kdf(sk, b"SMB2AESCCM\0", b"ServerIn \0")
            self.encryption_key = kdf(sk, b"SMB2AESCCM\0", b"ServerOut\0")
        else:
            self.signing_key = sk
            self.application_key = sk
            self.decryption_key = self.encryption_key = b""


class Signer:
    """Computes 16-byte SMB2 signatures (MS-SMB2 3.1.4.1)."""

    __slots__ = ("algorithm", "key", "_aesgcm")

    def __init__(self, algorithm: int, key: bytes):
        self.algorithm = algorithm
        self.key = key
        self._aesgcm = AESGCM(key) if algorithm == SIGN_AES_GMAC else None

    def signature(self, parts, message_id: int = 0, is_response: bool = True, is_cancel: bool = False) -> bytes:
        """`parts` is the message (header with zeroed signature first) as a list of buffers."""
        if self.algorithm == SIGN_HMAC_SHA256:
            h = hmac.new(self.key, digestmod=hashlib.sha256)
            for p in parts:
                h.update(p)
            return h.digest()[:16]
        if self.algorithm == SIGN_AES_CMAC:
            c = cmac.CMAC(algorithms.AES(self.key))
            for p in parts:
                c.update(p)
            return c.finalize()
        # AES-GMAC = AES-GCM with empty plaintext and the message as AAD (RFC 4543)
        nonce = struct.pack("<QI", message_id, (1 if is_response else 0) | (2 if is_cancel else 0))
        aad = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._aesgcm.encrypt(nonce, b"", aad)


class TransformCipher:
    """AEAD for the SMB2 TRANSFORM_HEADER (MS-SMB2 3.1.4.3)."""

    __slots__ = ("cipher_id", "_aead", "nonce_len", "_prefix", "_counter")

    def __init__(self, cipher_id: int, key: bytes):
        self.cipher_id = cipher_id
        if cipher_id in (AES_128_GCM, AES_256_GCM):
            self._aead = AESGCM(key)
            self.nonce_len = 12
        elif cipher_id in (AES_128_CCM, AES_256_CCM):
            self._aead = AESCCM(key, tag_length=16)
            self.nonce_len = 11
        else:
            raise ValueError(f"unknown cipher {cipher_id}")
        # nonce = random prefix + 64-bit counter: never reused within a key's lifetime
        self._prefix = os.urandom(self.nonce_len - 8)
        self._counter = 0

    def next_nonce(self) -> bytes:
        self._counter += 1
        return self._prefix + struct.pack("<Q", self._counter)

    def encrypt(self, nonce: bytes, aad: bytes, plaintext) -> tuple[memoryview, bytes]:
        """(ciphertext view, tag) without copying the ciphertext out of the AEAD output."""
        out = self._aead.encrypt(nonce, plaintext, aad)
        return memoryview(out)[:-16], out[-16:]

    def decrypt(self, nonce: bytes, aad: bytes, ciphertext, tag: bytes) -> bytes:
        # raises cryptography.exceptions.InvalidTag on failure; AEAD wants ciphertext||tag contiguous
        buf = bytearray(len(ciphertext) + 16)
        buf[:-16] = ciphertext
        buf[-16:] = tag
        return self._aead.decrypt(nonce, buf, aad)


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()
