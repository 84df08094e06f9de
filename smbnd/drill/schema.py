"""Drill files (YAML) -> ``DrillSpec``, with one clear error per problem (``DrillError``: the key
path and what is wrong, as ``smbnd.config.ConfigError`` does for TOML).

```yaml
name: planned takeover + giveback
cluster:
  config: ../examples/cluster-2node.toml   # relative to this YAML file
  start: true                              # `smbnd cluster up` before, `cluster down` after
duration: 20                               # seconds of client workload (>= last op + tail)
clients:
  - name: c1                               # built-in smbprotocol writer/verifier
    lif: lif1                              # or address: 127.0.0.11; netname: SMBND (UNC host)
    share: vol1
    rate: 20                               # writes/s
timeline:
  - {at: 3.0, op: takeover node1}
  - {at: 9.0, op: giveback node1}
expect: {max_pause_s: 15, no_errors: true, data_verified: true, handles_reclaimed: true}
```
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

import yaml


class DrillError(ValueError):
    def __init__(self, key: str, msg: str):
        super().__init__(f"{key}: {msg}")
        self.key = key


# -------------------------------------------------------------------------- operations
# op word(s) -> (positional argument names, allowed --options with their types)
OPS: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, type]]] = {
    ("takeover",): (("node",), {}),
    ("giveback",): (("node",), {}),
    ("lif", "migrate"): (("lif", "node"), {}),
    ("lif", "revert"): (("lif",), {}),
    ("aggr", "relocate"): (("aggr", "node"), {}),
    ("vol", "move"): (("vol", "aggr"), {}),
    ("node", "upgrade"): (("node",), {}),
    ("fault", "kill"): (("target",), {}),
    ("fault", "hang"): (("target",), {"seconds": float}),
    ("fault", "resume"): (("target",), {}),
    ("fault", "partition"): ((), {"direction": str, "seconds": float, "target": str}),
    ("fault", "heal"): ((), {"target": str}),
    ("fault", "lif-down"): (("target",), {"seconds": float}),
    ("fault", "lif-up"): (("target",), {}),
    ("fault", "storage-fail"): (("target",), {"seconds": float}),
    ("fault", "storage-slow"): (("target", "ms"), {"seconds": float}),
    ("fault", "storage-ok"): (("target",), {}),
    ("fault", "mgmt-down"): ((), {"seconds": float}),
    ("wait",): ((), {"event": str, "timeout": float, "seconds": float}),
}
NAMED = {"node": "nodes", "lif": "lifs", "aggr": "aggregates", "vol": "volumes"}


@dataclass
class Op:
    at: float
    text: str
    verb: tuple[str, ...]
    args: dict
    index: int = 0
    auto: bool = False          # added by the runner (the clearing op of a fault with --seconds)

    @property
    def label(self) -> str:
        return self.text


def parse_op(text: str, key: str = "op") -> tuple[tuple[str, ...], dict]:
    """'lif migrate lif1 node2' -> (('lif','migrate'), {'lif':'lif1','node':'node2'});
    'fault hang node1 --seconds 5' -> (('fault','hang'), {'target':'node1','seconds':5.0});
    'wait takeover_done --timeout 10' / 'wait 2.5' -> (('wait',), {...})."""
    try:
        words = shlex.split(str(text))
    except ValueError as e:
        raise DrillError(key, f"cannot parse {text!r}: {e}") from None
    if not words:
        raise DrillError(key, "empty operation")
    verb = tuple(words[:2]) if tuple(words[:2]) in OPS else tuple(words[:1])
    if verb not in OPS:
        known = ", ".join(" ".join(v) for v in OPS)
        raise DrillError(key, f"unknown operation {text!r} (known: {known})")
    names, opts = OPS[verb]
    rest = words[len(verb):]
    pos, args, i = [], {}, 0
    while i < len(rest):
        w = rest[i]
        if w.startswith("--"):
            name = w[2:].replace("-", "_")
            if name not in opts:
                raise DrillError(key, f"{' '.join(verb)}: unknown option {w} (allowed: "
                                 f"{', '.join('--' + o for o in opts) or 'none'})")
            if i + 1 >= len(rest):
                raise DrillError(key, f"{w} needs a value")
            try:
                args[name] = opts[name](rest[i + 1])
            except ValueError:
                raise DrillError(key, f"{w} {rest[i + 1]!r}: not a {opts[name].__name__}") from None
            i += 2
        else:
            pos.append(w)
            i += 1
    if verb == ("wait",):               # 'wait 2.5' sleeps, 'wait EVENT' waits for an event type
        for w in pos:
            try:
                args["seconds"] = float(w)
            except ValueError:
                args["event"] = w
        if not args:
            raise DrillError(key, "wait needs seconds or an event type")
        return verb, args
    if len(pos) != len(names):
        raise DrillError(key, f"{' '.join(verb)} takes {len(names)} argument(s) "
                         f"({' '.join(n.upper() for n in names) or 'none'}), got {len(pos)}")
    for n, v in zip(names, pos):
        args[n] = int(v) if n == "ms" and v.isdigit() else v
    if verb == ("fault", "storage-slow") and not isinstance(args["ms"], int):
        raise DrillError(key, "storage-slow MS must be an integer number of milliseconds")
    return verb, args


# -------------------------------------------------------------------------- spec
@dataclass
class ClientSpec:
    name: str
    kind: str = "writer"                 # writer | external
    lif: str = ""
    address: str = ""
    netname: str = ""
    port: int = 0
    share: str = ""
    user: str = ""
    password: str = ""
    file: str = ""
    block_size: int = 65536
    blocks: int = 64
    rate: float = 20.0
    verify_every: int = 8
    io_timeout: float = 30.0
    reconnect_timeout: float = 120.0
    witness: bool = False
    command: list = field(default_factory=list)
    cwd: str = ""
    env: dict = field(default_factory=dict)


@dataclass
class Expect:
    max_pause_s: float | None = None
    no_errors: bool = False
    data_verified: bool = False
    handles_reclaimed: bool = False
    min_reconnects: int | None = None
    events: list = field(default_factory=list)      # event types that must appear


@dataclass
class DrillSpec:
    name: str
    source: str
    cluster_config: str
    start_cluster: bool = True
    duration: float = 20.0
    settle: float = 1.0               # workload runs this long before t=0 of the timeline
    clients: list[ClientSpec] = field(default_factory=list)
    timeline: list[Op] = field(default_factory=list)
    expect: Expect = field(default_factory=Expect)
    description: str = ""


_TOP = {"name", "description", "cluster", "duration", "settle", "clients", "timeline", "expect"}
_CLIENT_TYPES = {"name": str, "kind": str, "lif": str, "address": str, "netname": str, "port": int,
                 "share": str, "user": str, "password": str, "file": str, "block_size": int, "blocks": int,
                 "rate": (int, float), "verify_every": int, "io_timeout": (int, float),
                 "reconnect_timeout": (int, float), "witness": bool, "command": (list, str), "cwd": str,
                 "env": dict}
_EXPECT_TYPES = {"max_pause_s": (int, float), "no_errors": bool, "data_verified": bool,
                 "handles_reclaimed": bool, "min_reconnects": int, "events": list}


def _typed(key: str, value, typ):
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, bool) and bool not in types:
        raise DrillError(key, f"must be {'/'.join(t.__name__ for t in types)}, not a boolean")
    if not isinstance(value, types):
        raise DrillError(key, f"must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}")
    return value


def load_drill(path: str) -> DrillSpec:
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise DrillError(path, f"cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise DrillError(path, f"YAML syntax: {e}") from None
    return drill_from_doc(doc, base=os.path.dirname(os.path.abspath(path)), source=os.path.abspath(path))


def drill_from_doc(doc, base: str = ".", source: str = "") -> DrillSpec:
    if not isinstance(doc, dict):
        raise DrillError("(top)", "a drill is a mapping (name, cluster, clients, timeline, expect)")
    for k in doc:
        if k not in _TOP:
            raise DrillError(str(k), f"unknown key (known: {', '.join(sorted(_TOP))})")
    cl = doc.get("cluster")
    if isinstance(cl, str):
        cl = {"config": cl}
    if not isinstance(cl, dict) or "config" not in cl:
        raise DrillError("cluster.config", "required: path of the cluster TOML (relative to the drill)")
    for k in cl:
        if k not in ("config", "start"):
            raise DrillError(f"cluster.{k}", "unknown key (known: config, start)")
    cfg = _typed("cluster.config", cl["config"], str)
    spec = DrillSpec(name=str(doc.get("name") or os.path.splitext(os.path.basename(source))[0] or "drill"),
                     source=source, description=str(doc.get("description", "")),
                     cluster_config=os.path.abspath(os.path.join(base, cfg)),
                     start_cluster=_typed("cluster.start", cl.get("start", True), bool))
    spec.duration = float(_typed("duration", doc.get("duration", 20.0), (int, float)))
    spec.settle = float(_typed("settle", doc.get("settle", 1.0), (int, float)))
    if spec.duration <= 0 or spec.settle < 0:
        raise DrillError("duration", "must be > 0 (settle >= 0)")
    clients = doc.get("clients")
    if not isinstance(clients, list) or not clients:
        raise DrillError("clients", "a non-empty list of client workloads is required")
    seen = set()
    for i, c in enumerate(clients):
        key = f"clients[{i}]"
        if not isinstance(c, dict):
            raise DrillError(key, "must be a mapping")
        for k, v in c.items():
            if k not in _CLIENT_TYPES:
                raise DrillError(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(_CLIENT_TYPES))})")
            _typed(f"{key}.{k}", v, _CLIENT_TYPES[k])
        cs = ClientSpec(name=str(c.get("name", f"c{i + 1}")))
        for k, v in c.items():
            setattr(cs, k, float(v) if k in ("rate", "io_timeout", "reconnect_timeout") else v)
        key = f"clients.{cs.name}"
        if cs.name in seen:
            raise DrillError(key, "duplicate client name")
        seen.add(cs.name)
        if cs.kind not in ("writer", "external"):
            raise DrillError(f"{key}.kind", "writer or external")
        if cs.kind == "external":
            if not cs.command:
                raise DrillError(f"{key}.command", "required for an external client")
            if isinstance(cs.command, str):
                cs.command = shlex.split(cs.command)
            cs.cwd = os.path.abspath(os.path.join(base, cs.cwd)) if cs.cwd else base
        else:
            if not cs.share:
                raise DrillError(f"{key}.share", "required (a CA volume of the cluster)")
            if not (cs.lif or cs.address):
                raise DrillError(f"{key}.lif", "give lif: NAME or address: IP")
            if cs.block_size <= 0 or cs.block_size > 8 * 1024 * 1024 or cs.blocks <= 0 or cs.rate <= 0:
                raise DrillError(key, "block_size in 1..8 MiB, blocks > 0, rate > 0")
        spec.clients.append(cs)
    tl = doc.get("timeline", [])
    if not isinstance(tl, list):
        raise DrillError("timeline", "must be a list of {at: SECONDS, op: OPERATION}")
    for i, e in enumerate(tl):
        key = f"timeline[{i}]"
        if not isinstance(e, dict) or "op" not in e or "at" not in e:
            raise DrillError(key, "needs at: SECONDS and op: OPERATION")
        for k in e:
            if k not in ("at", "op"):
                raise DrillError(f"{key}.{k}", "unknown key (known: at, op)")
        at = float(_typed(f"{key}.at", e["at"], (int, float)))
        if at < 0:
            raise DrillError(f"{key}.at", "must be >= 0")
        verb, args = parse_op(e["op"], f"{key}.op")
        spec.timeline.append(Op(at=at, text=str(e["op"]), verb=verb, args=args, index=i))
    ats = [o.at for o in spec.timeline]
    if ats != sorted(ats):
        raise DrillError("timeline", "entries must be in time order (at: increasing)")
    ex = doc.get("expect", {}) or {}
    if not isinstance(ex, dict):
        raise DrillError("expect", "must be a mapping")
    for k, v in ex.items():
        if k not in _EXPECT_TYPES:
            raise DrillError(f"expect.{k}", f"unknown key (known: {', '.join(sorted(_EXPECT_TYPES))})")
        setattr(spec.expect, k, _typed(f"expect.{k}", v, _EXPECT_TYPES[k]))
    return spec


def check_against_cluster(spec: DrillSpec, cluster) -> None:
    """Names used by clients and operations must exist in the cluster config (a ClusterConfig)."""
    for c in spec.clients:
        key = f"clients.{c.name}"
        if c.kind != "writer":
            continue
        if c.lif and c.lif not in cluster.lifs:
            raise DrillError(f"{key}.lif", f"unknown LIF {c.lif!r} (cluster has {', '.join(cluster.lifs)})")
        if c.share not in cluster.volumes:
            raise DrillError(f"{key}.share", f"unknown volume {c.share!r} (cluster has {', '.join(cluster.volumes)})")
        if not cluster.volumes[c.share].ca:
            raise DrillError(f"{key}.share", f"volume {c.share!r} is not CA: persistent handles need a CA share")
        if c.user and c.user not in cluster.users and not c.password:
            raise DrillError(f"{key}.user", f"unknown user {c.user!r} and no password given")
    for op in spec.timeline:
        key = f"timeline[{op.index}].op"
        for arg, coll in NAMED.items():
            if arg in op.args and op.args[arg] not in getattr(cluster, coll):
                raise DrillError(key, f"unknown {arg} {op.args[arg]!r} in {op.text!r}")
        t = op.args.get("target")
        if t is not None:
            kind = op.verb[1]
            coll = {"kill": "nodes", "hang": "nodes", "resume": "nodes", "partition": "nodes", "heal": "nodes",
                    "lif-down": "lifs", "lif-up": "lifs"}.get(kind, "aggregates")
            if t not in getattr(cluster, coll):
                raise DrillError(key, f"unknown {coll[:-1]} {t!r} in {op.text!r}")
