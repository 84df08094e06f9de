"""Server configuration: TOML file and/or `smbnd serve` flags. Errors name the offending key."""
from __future__ import annotations

import hashlib
import os
import tomllib
import uuid
from dataclasses import dataclass, field

from . import crypto

DIALECTS = {"2.0.2": 0x0202, "2.1": 0x0210, "3.0": 0x0300, "3.0.2": 0x0302, "3.1.1": 0x0311}
CIPHERS = {v: k for k, v in crypto.CIPHER_NAMES.items()}
SIGNING = {"HMAC-SHA256": crypto.SIGN_HMAC_SHA256, "AES-CMAC": crypto.SIGN_AES_CMAC,
           "AES-GMAC": crypto.SIGN_AES_GMAC}


class ConfigError(ValueError):
    def __init__(self, key: str, msg: str):
        super().__init__(f"{key}: {msg}")
        self.key = key


@dataclass
class ShareConfig:
    name: str
    path: str
    ca: bool = False
    encrypt: bool = False
    read_only: bool = False
    comment: str = ""
    state_dir: str = ""          # handle stores of this share; "" = ServerConfig.state_dir (cluster: aggregate's)


@dataclass
class InterfaceConfig:
    address: str
    if_index: int = 1
    speed: int = 10_000_000_000
    rss: bool = True


@dataclass
class ServerConfig:
    name: str = "SMBND"
    domain: str = "WORKGROUP"
    dns_domain: str = "smbnd.test"
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 4455)])
    shares: list[ShareConfig] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)
    users_file: str | None = None
    signing_required: bool = False
    encrypt_data: bool = False
    reject_unencrypted: bool = True
    min_dialect: int = 0x0202
    max_dialect: int = 0x0311
    ciphers: list[int] = field(default_factory=lambda: [crypto.AES_128_GCM, crypto.AES_128_CCM,
                                                         crypto.AES_256_GCM, crypto.AES_256_CCM])
    signing_algorithms: list[int] = field(default_factory=lambda: [crypto.SIGN_AES_GMAC, crypto.SIGN_AES_CMAC,
                                                                   crypto.SIGN_HMAC_SHA256])
    server_guid: bytes = b""
    max_read_size: int = 8 * 1024 * 1024
    max_write_size: int = 8 * 1024 * 1024
    max_transact_size: int = 8 * 1024 * 1024
    max_credits: int = 8192
    multichannel: bool = False
    directory_leasing: bool = False
    torture_fsctls: bool = False      # smbtorture's test-only FSCTLs (as Samba's smbd:FSCTL_SMBTORTURE)
    allow_guest: bool = False
    allow_anonymous: bool = False
    oplock_break_timeout: float = 35.0
    session_setup_timeout: float = 60.0
    durable_timeout: int = 60
    durable_max_timeout: int = 300
    durable_v1_timeout: int = 960             # s: DHnQ reconnect window (Windows: 16 minutes)
    max_resiliency_timeout: int = 300_000     # ms, MS-SMB2 3.3.5.15.9 MaxResiliencyTimeout
    state_dir: str = "./var/state"
    interfaces: list[InterfaceConfig] = field(default_factory=list)
    # cluster node mode (smbnd.cluster.node): the SVM's tree-connect flags and LIF names by address
    clustered: bool = False
    scale_out: bool = False
    asymmetric: bool = False
    lifs: dict[str, str] = field(default_factory=dict)     # local address -> LIF name (store keying)

    def finish(self) -> "ServerConfig":
        if not self.server_guid:
            # stable across restarts: derived from the server name
            self.server_guid = uuid.UUID(bytes=hashlib.sha256(b"smbnd:" + self.name.encode()).digest()[:16]).bytes_le
        if not self.shares:
            raise ConfigError("share", "at least one share is required")
        seen = set()
        for s in self.shares:
            if s.name.lower() in seen or s.name.upper() == "IPC$":
                raise ConfigError(f"share.{s.name}", "duplicate or reserved share name")
            seen.add(s.name.lower())
            if not os.path.isdir(s.path):
                raise ConfigError(f"share.{s.name}.path", f"not a directory: {s.path}")
        if not self.users and not self.users_file and not (self.allow_guest or self.allow_anonymous):
            raise ConfigError("users", "no users configured (and guest/anonymous disabled)")
        if self.min_dialect > self.max_dialect:
            raise ConfigError("server.min_dialect", "greater than server.max_dialect")
        return self


def parse_listen(value: str, key: str = "server.listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_share_spec(spec: str) -> ShareConfig:
    """NAME=PATH[:ca][:encrypt][:ro]"""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ConfigError("--share", f"expected NAME=PATH[:ca], got {spec!r}")
    parts = rest.split(":")
    path, flags = parts[0], parts[1:]
    bad = [f for f in flags if f not in ("ca", "encrypt", "ro")]
    if bad:
        raise ConfigError("--share", f"unknown share flag {bad[0]!r} (known: ca, encrypt, ro)")
    return ShareConfig(name=name, path=os.path.abspath(path), ca="ca" in flags, encrypt="encrypt" in flags,
                       read_only="ro" in flags)


_TYPES = {
    "name": str, "domain": str, "dns_domain": str, "users_file": str, "state_dir": str,
    "signing_required": bool, "encrypt_data": bool, "reject_unencrypted": bool, "multichannel": bool,
    "directory_leasing": bool, "torture_fsctls": bool,
    "allow_guest": bool, "allow_anonymous": bool,
    "max_read_size": int, "max_write_size": int, "max_transact_size": int, "max_credits": int,
    "durable_timeout": int, "durable_max_timeout": int, "durable_v1_timeout": int, "max_resiliency_timeout": int,
    "oplock_break_timeout": (int, float), "session_setup_timeout": (int, float),
}


def _typed(key: str, value, typ):
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, "must be an integer")
    if not isinstance(value, typ):
        raise ConfigError(key, f"must be {getattr(typ, '__name__', 'a number')}")
    return value


def load_toml(path: str, cfg: ServerConfig | None = None) -> ServerConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config", f"TOML syntax: {e}") from e
    return apply_doc(doc, cfg or ServerConfig(), base=os.path.dirname(os.path.abspath(path)))


def apply_doc(doc: dict, cfg: ServerConfig, base: str = ".") -> ServerConfig:
    for top in doc:
        if top not in ("server", "users", "share", "network_interface"):
            raise ConfigError(top, "unknown section")
    for key, value in doc.get("server", {}).items():
        k = f"server.{key}"
        if key in _TYPES:
            setattr(cfg, key, _typed(k, value, _TYPES[key]))
        elif key == "listen":
            vals = value if isinstance(value, list) else [value]
            cfg.listen = [parse_listen(str(v), k) for v in vals]
        elif key in ("min_dialect", "max_dialect"):
            if value not in DIALECTS:
                raise ConfigError(k, f"unknown dialect {value!r} (known: {', '.join(DIALECTS)})")
            setattr(cfg, key, DIALECTS[value])
        elif key == "ciphers":
            try:
                cfg.ciphers = [CIPHERS[v] for v in value]
            except (KeyError, TypeError):
                raise ConfigError(k, f"known ciphers: {', '.join(CIPHERS)}") from None
        elif key == "signing_algorithms":
            try:
                cfg.signing_algorithms = [SIGNING[v] for v in value]
            except (KeyError, TypeError):
                raise ConfigError(k, f"known algorithms: {', '.join(SIGNING)}") from None
        elif key == "server_guid":
            try:
                cfg.server_guid = uuid.UUID(str(value)).bytes_le
            except ValueError:
                raise ConfigError(k, "not a GUID") from None
        else:
            raise ConfigError(k, "unknown key")
    for name, pw in doc.get("users", {}).items():
        if not isinstance(pw, str):
            raise ConfigError(f"users.{name}", "password must be a string")
        cfg.users[name] = pw
    if cfg.users_file and not os.path.isabs(cfg.users_file):
        cfg.users_file = os.path.join(base, cfg.users_file)
    for i, s in enumerate(doc.get("share", [])):
        k = f"share[{i}]"
        if not isinstance(s, dict) or "name" not in s or "path" not in s:
            raise ConfigError(k, "needs name and path")
        unknown = set(s) - {"name", "path", "ca", "encrypt", "read_only", "comment"}
        if unknown:
            raise ConfigError(f"{k}.{sorted(unknown)[0]}", "unknown key")
        path = s["path"] if os.path.isabs(s["path"]) else os.path.join(base, s["path"])
        cfg.shares.append(ShareConfig(name=str(s["name"]), path=os.path.abspath(path),
                                      ca=bool(s.get("ca", False)), encrypt=bool(s.get("encrypt", False)),
                                      read_only=bool(s.get("read_only", False)), comment=str(s.get("comment", ""))))
    for i, n in enumerate(doc.get("network_interface", [])):
        if "address" not in n:
            raise ConfigError(f"network_interface[{i}].address", "required")
        cfg.interfaces.append(InterfaceConfig(address=n["address"], if_index=int(n.get("if_index", i + 1)),
                                              speed=int(n.get("speed", 10_000_000_000)),
                                              rss=bool(n.get("rss", True))))
    return cfg
