"""The cluster model: nodes in HA (SFO) pairs, aggregates, an SVM with data LIFs and volumes.

Static description from TOML (``load_cluster``) plus the runtime placement (``Placement``: current
node of every LIF, owner of every aggregate, aggregate of every volume) that the supervisor keeps in
``<state_dir>/placement.json`` and hands to node and witness processes. Pure data, no I/O besides
reading the TOML file and the placement JSON.

Layout on disk of an aggregate ``path``: ``<path>/<volume>/`` is the backing directory of a volume
(share) on it, ``<path>/.smbnd-state/`` holds the handle stores of its volumes (outside every share).
"""
from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field

from ..config import ConfigError


@dataclass
class NodeDef:
    name: str
    partner: str = ""
    interconnect: str = ""          # HOST:PORT of its UDP heartbeat endpoint
    control_port: int = 0           # node control socket is a Unix socket; kept for netns use


@dataclass
class AggregateDef:
    name: str
    home: str
    path: str

    @property
    def state_dir(self) -> str:
        return os.path.join(self.path, ".smbnd-state")


@dataclass
class LifDef:
    name: str
    address: str
    home: str
    prefix_len: int = 24            # netns backend


@dataclass
class VolumeDef:
    name: str
    aggregate: str
    ca: bool = False
    encrypt: bool = False
    read_only: bool = False
    comment: str = ""


@dataclass
class SvmDef:
    name: str = "SMBND"              # CIFS server name = the NetName clients use
    scale_out: bool = False
    asymmetric: bool = False
    domain: str = "WORKGROUP"


@dataclass
class ClusterConfig:
    name: str = "smbnd"
    state_dir: str = "./var/cluster"
    smb_port: int = 0                # 0: 445 when root, else 4455
    epm_port: int = 0                # 0: 135 when root, else 1135
    witness_port: int = 0            # fixed witness port; 0: 5135 when root, else 6135
    control: str = "127.0.0.1:9445"  # HTTP control API (token in <state_dir>/token)
    metrics_port: int = 0            # Prometheus; 0 = off
    lif_backend: str = "loopback"    # or "netns"
    heartbeat_interval_ms: int = 200
    heartbeat_misses: int = 5        # declared down after interval*misses (1 s by default)
    reconnect_window: int = 60       # persistent-handle window after an ownership change, s
    durable_max_timeout: int = 300
    signing_required: bool = False
    encrypt_data: bool = False
    svm: SvmDef = field(default_factory=SvmDef)
    nodes: dict[str, NodeDef] = field(default_factory=dict)
    aggregates: dict[str, AggregateDef] = field(default_factory=dict)
    lifs: dict[str, LifDef] = field(default_factory=dict)
    volumes: dict[str, VolumeDef] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    source: str = ""

    # ---------------------------------------------------------------- derived
    def port(self, which: str) -> int:
        root = os.geteuid() == 0
        if which == "smb":
            return self.smb_port or (445 if root else 4455)
        if which == "epm":
            return self.epm_port or (135 if root else 1135)
        if which == "witness":
            return self.witness_port or (5135 if root else 6135)
        raise KeyError(which)

    def partner(self, node: str) -> str:
        return self.nodes[node].partner

    def initial_placement(self) -> "Placement":
        return Placement(lif_node={n: d.home for n, d in self.lifs.items()},
                         aggr_owner={n: d.home for n, d in self.aggregates.items()},
                         vol_aggr={n: d.aggregate for n, d in self.volumes.items()})

    def volume_path(self, vol: str, placement: "Placement") -> str:
        return os.path.join(self.aggregates[placement.vol_aggr[vol]].path, vol)

    def volume_state_dir(self, vol: str, placement: "Placement") -> str:
        return self.aggregates[placement.vol_aggr[vol]].state_dir

    def lif_by_address(self, address: str) -> LifDef | None:
        for lif in self.lifs.values():
            if lif.address == address:
                return lif
        return None


@dataclass
class Placement:
    """Where things are now (the supervisor's truth; nodes get a copy with every command)."""
    lif_node: dict[str, str] = field(default_factory=dict)
    aggr_owner: dict[str, str] = field(default_factory=dict)
    vol_aggr: dict[str, str] = field(default_factory=dict)
    down_nodes: list[str] = field(default_factory=list)   # taken over, waiting for giveback
    epoch: int = 0

    def lifs_on(self, node: str) -> list[str]:
        return sorted(n for n, cur in self.lif_node.items() if cur == node)

    def aggrs_of(self, node: str) -> list[str]:
        return sorted(n for n, cur in self.aggr_owner.items() if cur == node)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Placement":
        d = json.loads(text)
        return cls(**{k: d[k] for k in ("lif_node", "aggr_owner", "vol_aggr", "down_nodes", "epoch") if k in d})

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Placement | None":
        try:
            with open(path) as f:
                return cls.from_json(f.read())
        except FileNotFoundError:
            return None


# ------------------------------------------------------------------------- TOML
_CLUSTER_KEYS = {"name": str, "state_dir": str, "smb_port": int, "epm_port": int, "witness_port": int,
                 "control": str, "metrics_port": int, "lif_backend": str, "heartbeat_interval_ms": int,
                 "heartbeat_misses": int, "reconnect_window": int, "durable_max_timeout": int,
                 "signing_required": bool, "encrypt_data": bool}
_SECTIONS = {"cluster", "svm", "ha_pair", "node", "aggregate", "lif", "volume", "users"}


def _check(key, value, typ):
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, "must be an integer")
    if not isinstance(value, typ):
        raise ConfigError(key, f"must be {typ.__name__}")
    return value


def _items(doc, section, required):
    out = []
    for i, item in enumerate(doc.get(section, [])):
        if not isinstance(item, dict):
            raise ConfigError(f"{section}[{i}]", "must be a table")
        for r in required:
            if r not in item:
                raise ConfigError(f"{section}[{i}].{r}", "required")
        out.append((f"{section}.{item['name']}" if "name" in item else f"{section}[{i}]", item))
    return out


def load_cluster(path: str) -> ClusterConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config", f"TOML syntax: {e}") from e
    return cluster_from_doc(doc, base=os.path.dirname(os.path.abspath(path)), source=os.path.abspath(path))


def cluster_from_doc(doc: dict, base: str = ".", source: str = "") -> ClusterConfig:
    for top in doc:
        if top not in _SECTIONS:
            raise ConfigError(top, f"unknown section (known: {', '.join(sorted(_SECTIONS))})")
    c = ClusterConfig(source=source)
    for k, v in doc.get("cluster", {}).items():
        if k not in _CLUSTER_KEYS:
            raise ConfigError(f"cluster.{k}", "unknown key")
        setattr(c, k, _check(f"cluster.{k}", v, _CLUSTER_KEYS[k]))
    if c.lif_backend not in ("loopback", "netns"):
        raise ConfigError("cluster.lif_backend", "loopback or netns")
    c.state_dir = os.path.abspath(os.path.join(base, c.state_dir))
    svm = doc.get("svm", {})
    unknown = set(svm) - {"name", "scale_out", "asymmetric", "domain"}
    if unknown:
        raise ConfigError(f"svm.{sorted(unknown)[0]}", "unknown key")
    c.svm = SvmDef(name=str(svm.get("name", "SMBND")).upper(), scale_out=bool(svm.get("scale_out", False)),
                   asymmetric=bool(svm.get("asymmetric", False)), domain=str(svm.get("domain", "WORKGROUP")))
    for key, n in _items(doc, "node", ["name"]):
        unknown = set(n) - {"name", "interconnect", "partner"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key")
        c.nodes[n["name"]] = NodeDef(name=n["name"], partner=str(n.get("partner", "")),
                                     interconnect=str(n.get("interconnect", "")))
    if not c.nodes:
        raise ConfigError("node", "at least one node is required")
    for i, pair in enumerate(doc.get("ha_pair", [])):
        members = pair.get("nodes") if isinstance(pair, dict) else None
        if not isinstance(members, list) or len(members) != 2 or not all(m in c.nodes for m in members):
            raise ConfigError(f"ha_pair[{i}].nodes", "two names of declared nodes")
        a, b = members
        c.nodes[a].partner, c.nodes[b].partner = b, a
    for name, n in c.nodes.items():
        if n.partner and (n.partner not in c.nodes or c.nodes[n.partner].partner not in ("", name)):
            raise ConfigError(f"node.{name}.partner", "must name a node whose partner is this node")
    for i, name in enumerate(sorted(c.nodes)):      # default interconnect: 127.0.1.<n>:7700
        if not c.nodes[name].interconnect:
            c.nodes[name].interconnect = f"127.0.1.{i + 1}:7700"
    for key, a in _items(doc, "aggregate", ["name", "home", "path"]):
        if a["home"] not in c.nodes:
            raise ConfigError(f"{key}.home", f"unknown node {a['home']!r}")
        p = a["path"] if os.path.isabs(a["path"]) else os.path.join(base, a["path"])
        c.aggregates[a["name"]] = AggregateDef(name=a["name"], home=a["home"], path=os.path.abspath(p))
    for key, lif in _items(doc, "lif", ["name", "address", "home"]):
        if lif["home"] not in c.nodes:
            raise ConfigError(f"{key}.home", f"unknown node {lif['home']!r}")
        try:
            addr = ipaddress.ip_address(lif["address"])
        except ValueError:
            raise ConfigError(f"{key}.address", "not an IP address") from None
        if c.lif_backend == "loopback" and not addr.is_loopback:
            raise ConfigError(f"{key}.address", "the loopback backend needs 127.0.0.0/8 or ::1")
        if any(x.address == str(addr) for x in c.lifs.values()):
            raise ConfigError(f"{key}.address", "duplicate address")
        c.lifs[lif["name"]] = LifDef(name=lif["name"], address=str(addr), home=lif["home"],
                                     prefix_len=int(lif.get("prefix_len", 24)))
    if not c.lifs:
        raise ConfigError("lif", "at least one data LIF is required")
    for key, v in _items(doc, "volume", ["name", "aggregate"]):
        if v["aggregate"] not in c.aggregates:
            raise ConfigError(f"{key}.aggregate", f"unknown aggregate {v['aggregate']!r}")
        unknown = set(v) - {"name", "aggregate", "ca", "encrypt", "read_only", "comment"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key")
        if v["name"].lower() in {x.lower() for x in c.volumes} or v["name"].upper() == "IPC$":
            raise ConfigError(key, "duplicate or reserved volume name")
        c.volumes[v["name"]] = VolumeDef(name=v["name"], aggregate=v["aggregate"], ca=bool(v.get("ca", False)),
                                         encrypt=bool(v.get("encrypt", False)),
                                         read_only=bool(v.get("read_only", False)),
                                         comment=str(v.get("comment", "")))
    if not c.volumes:
        raise ConfigError("volume", "at least one volume is required")
    for name, pw in doc.get("users", {}).items():
        if not isinstance(pw, str):
            raise ConfigError(f"users.{name}", "password must be a string")
        c.users[name] = pw
    if not c.users:
        raise ConfigError("users", "at least one user is required")
    return c


def node_server_config(c: ClusterConfig, node: str, placement: Placement, port: int | None = None):
    """The smbnd.config.ServerConfig a node process serves with (all volumes; LIFs it hosts)."""
    from ..config import ServerConfig, ShareConfig
    cfg = ServerConfig(name=c.svm.name, domain=c.svm.domain)
    cfg.listen = [(c.lifs[lif].address, port or c.port("smb")) for lif in placement.lifs_on(node)]
    for v in c.volumes.values():
        path = c.volume_path(v.name, placement)
        cfg.shares.append(ShareConfig(name=v.name, path=path, ca=v.ca, encrypt=v.encrypt,
                                      read_only=v.read_only, comment=v.comment))
    cfg.users = dict(c.users)
    cfg.signing_required = c.signing_required
    cfg.encrypt_data = c.encrypt_data
    cfg.multichannel = True
    cfg.durable_timeout = c.reconnect_window
    cfg.durable_max_timeout = c.durable_max_timeout
    cfg.state_dir = os.path.join(c.state_dir, "nodes", node)
    return cfg


def socket_path(state_dir: str, name: str) -> str:
    """Unix control socket `<state_dir>/nodes/<name>.sock` -- or, when that path is longer than
    sun_path allows (108 bytes incl. NUL on Linux), the same name in a private directory under /tmp
    keyed by the state directory, so every process computes the same path."""
    p = os.path.join(state_dir, "nodes", f"{name}.sock")
    if len(p.encode()) <= 100:
        return p
    import hashlib
    import tempfile
    d = os.path.join(tempfile.gettempdir(), "smbnd-" + hashlib.sha1(os.path.abspath(state_dir).encode()).hexdigest()[:16])
    os.makedirs(d, mode=0o700, exist_ok=True)
    return os.path.join(d, f"{name}.sock")
