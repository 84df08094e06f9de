"""User database for NTLM authentication.

Only NT one-way functions are kept (MS-NLMP 3.3.1 NTOWFv1 = MD4(UNICODE(Passwd))); the
clear-text password is discarded as soon as the hash is computed.
"""

from __future__ import annotations

import os
import struct

__all__ = ["UserDB", "nt_hash_of", "md4", "win_upper"]


# --- MD4 (RFC 1320) -----------------------------------------------------------------------
# OpenSSL 3 moved MD4 to the legacy provider, so cryptography/hashlib cannot be relied on.

def _rotl(x: int, n: int) -> int:
    x &= 0xFFFFFFFF
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


def md4(data: bytes) -> bytes:
    """MD4 digest (RFC 1320)."""
    msg = bytes(data)
    bit_len = (8 * len(msg)) & 0xFFFFFFFFFFFFFFFF
    msg += b"\x80" + b"\x00" * ((55 - len(msg)) % 64) + struct.pack("<Q", bit_len)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(msg), 64):
        x = struct.unpack_from("<16I", msg, off)
        aa, bb, cc, dd = a, b, c, d
        # Round 1 (RFC 1320 3.4)
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            f = (b & c) | (~b & d)
            a, b, c, d = d, _rotl(a + f + x[k], s), b, c
        # Round 2
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            g = (b & c) | (b & d) | (c & d)
            a, b, c, d = d, _rotl(a + g + x[k] + 0x5A827999, s), b, c
        # Round 3
        for i in range(16):
            k, s = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i], (3, 9, 11, 15)[i % 4]
            h = b ^ c ^ d
            a, b, c, d = d, _rotl(a + h + x[k] + 0x6ED9EBA1, s), b, c
        a, b, c, d = (a + aa) & 0xFFFFFFFF, (b + bb) & 0xFFFFFFFF, (c + cc) & 0xFFFFFFFF, (d + dd) & 0xFFFFFFFF
    return struct.pack("<4I", a, b, c, d)


def nt_hash_of(password: str) -> bytes:
    """NT hash = MD4(UTF-16LE(password)) (MS-NLMP 3.3.1)."""
    return md4(password.encode("utf-16-le", "surrogatepass"))


def win_upper(s: str) -> str:
    """Per-character upper-casing as RtlUpcaseUnicodeString does: never changes the length
    (Python's str.upper() maps e.g. U+00DF to 'SS'; Windows leaves it alone)."""
    out = []
    for ch in s:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


class UserDB:
    """name -> NT hash; names are matched case-insensitively (Windows semantics)."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[str, bytes]] = {}

    @classmethod
    def from_mapping(cls, users: dict[str, str]) -> "UserDB":
        db = cls()
        for name, password in users.items():
            db.add(name, password=password)
        return db

    @classmethod
    def load(cls, path: str | os.PathLike) -> "UserDB":
        """Users file: ``name:password`` or ``name:{NT}<32 hex>``; '#' comments, blank lines ignored."""
        db = cls()
        with open(path, encoding="utf-8") as fh:
            for lineno, raw in enumerate(fh, 1):
                line = raw.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                name, sep, secret = line.partition(":")
                name = name.strip()
                # The message never includes the line itself (it holds a secret).
                if not sep or not name:
                    raise ValueError(f"{os.fspath(path)}: line {lineno}: expected 'name:password'")
                if secret.startswith("{NT}"):
                    hx = secret[4:].strip()
                    try:
                        if len(hx) != 32:
                            raise ValueError
                        h = bytes.fromhex(hx)
                    except ValueError:
                        raise ValueError(
                            f"{os.fspath(path)}: line {lineno}: {{NT}} needs 32 hex digits"
                        ) from None
                    db.add(name, nt_hash=h)
                else:
                    db.add(name, password=secret)
        return db

    def add(self, name: str, password: str | None = None, nt_hash: bytes | None = None) -> None:
        if not name:
            raise ValueError("empty user name")
        if (password is None) == (nt_hash is None):
            raise ValueError("give exactly one of password / nt_hash")
        if nt_hash is None:
            nt_hash = nt_hash_of(password)  # type: ignore[arg-type]
        if len(nt_hash) != 16:
            raise ValueError("NT hash must be 16 bytes")
        self._users[win_upper(name)] = (name, bytes(nt_hash))

    def nt_hash(self, name: str) -> bytes | None:
        ent = self._users.get(win_upper(name))
        return ent[1] if ent else None

    def canonical_name(self, name: str) -> str | None:
        ent = self._users.get(win_upper(name))
        return ent[0] if ent else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and win_upper(name) in self._users

    def __len__(self) -> int:
        return len(self._users)

    def __repr__(self) -> str:  # never show hashes
        return f"<UserDB {len(self._users)} users>"
