"""The cluster model: the shipped examples load; bad configs name the offending key."""
from __future__ import annotations

import os

import pytest

from smbnd.cluster.model import Placement, cluster_from_doc, load_cluster, node_server_config
from smbnd.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_cluster_matches_the_documented_names():
    c = load_cluster(os.path.join(ROOT, "examples", "cluster-2node.toml"))
    assert c.svm.name == "SMBND"
    assert {n: d.partner for n, d in c.nodes.items()} == {"node1": "node2", "node2": "node1"}
    assert {n: (d.address, d.home) for n, d in c.lifs.items()} == {
        "lif1": ("127.0.0.11", "node1"), "lif2": ("127.0.0.12", "node2")}
    assert {n: d.home for n, d in c.aggregates.items()} == {"aggr1": "node1", "aggr2": "node2"}
    assert c.volumes["vol1"].ca and not c.volumes["vol2"].ca
    assert c.volumes["vol1"].aggregate == "aggr1" and c.volumes["vol2"].aggregate == "aggr2"
    assert c.users == {"demo": "demo-Passw0rd"}
    p = c.initial_placement()
    cfg = node_server_config(c, "node1", p, port=4455)
    assert cfg.listen == [("127.0.0.11", 4455)]
    assert {s.name: s.path for s in cfg.shares} == {
        "vol1": os.path.join(c.aggregates["aggr1"].path, "vol1"),
        "vol2": os.path.join(c.aggregates["aggr2"].path, "vol2")}


@pytest.mark.parametrize("name", ["cluster-4node.toml", "cluster-netns.toml"])
def test_other_examples_load(name):
    c = load_cluster(os.path.join(ROOT, "examples", name))
    p = c.initial_placement()
    assert sorted(p.lif_node) == sorted(c.lifs)
    for n in c.nodes:
        assert c.nodes[c.nodes[n].partner].partner == n


def test_placement_round_trip(tmp_path):
    p = Placement(lif_node={"lif1": "node2"}, aggr_owner={"aggr1": "node2"}, vol_aggr={"vol1": "aggr1"},
                  down_nodes=["node1"], epoch=7)
    p.save(str(tmp_path / "p.json"))
    q = Placement.load(str(tmp_path / "p.json"))
    assert q == p and q.lifs_on("node2") == ["lif1"] and q.aggrs_of("node1") == []
    assert Placement.load(str(tmp_path / "missing.json")) is None


BASE = {"node": [{"name": "a"}, {"name": "b"}], "ha_pair": [{"nodes": ["a", "b"]}],
        "aggregate": [{"name": "ag", "home": "a", "path": "/tmp/ag"}],
        "lif": [{"name": "l1", "address": "127.0.0.50", "home": "a"}],
        "volume": [{"name": "v", "aggregate": "ag", "ca": True}], "users": {"u": "p"}}


@pytest.mark.parametrize("patch, key", [
    ({"bogus": {}}, "bogus"),
    ({"cluster": {"smb_port": "445"}}, "cluster.smb_port"),
    ({"cluster": {"lif_backend": "vxlan"}}, "cluster.lif_backend"),
    ({"aggregate": [{"name": "ag", "home": "zz", "path": "/tmp"}]}, "aggregate.ag.home"),
    ({"lif": [{"name": "l1", "address": "10.0.0.1", "home": "a"}]}, "lif.l1.address"),
    ({"lif": [{"name": "l1", "address": "nope", "home": "a"}]}, "lif.l1.address"),
    ({"volume": [{"name": "v", "aggregate": "nope"}]}, "volume.v.aggregate"),
    ({"volume": [{"name": "IPC$", "aggregate": "ag"}]}, "volume.IPC$"),
    ({"ha_pair": [{"nodes": ["a", "zz"]}]}, "ha_pair[0].nodes"),
    ({"users": {}}, "users"),
    ({"node": []}, "node"),
])
def test_bad_configs_name_the_key(patch, key):
    doc = dict(BASE, **patch)
    with pytest.raises(ConfigError) as e:
        cluster_from_doc(doc)
    assert e.value.key == key
