"""Drill YAML schema: every shipped drill loads and matches the demo cluster; mistakes give one
clear error naming the key; timeline operations map to the control API requests of
docs/cluster-design.md; the CLI exits 2 on a bad drill."""
from __future__ import annotations

import glob
import os

import pytest
import yaml
from typer.testing import CliRunner

from smbnd.cluster.model import load_cluster
from smbnd.drill.cli import drill_app
from smbnd.drill.control import clearing_op, dump_toml, isolated_config, op_request
from smbnd.drill.schema import DrillError, check_against_cluster, drill_from_doc, load_drill, parse_op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "examples", "cluster-2node.toml")
DRILLS = sorted(glob.glob(os.path.join(ROOT, "drills", "*.yaml")))


def _doc(**over):
    d = {"name": "t", "cluster": {"config": DEMO, "start": False}, "duration": 5,
         "clients": [{"name": "c1", "lif": "lif1", "share": "vol1"}], "timeline": [{"at": 1, "op": "takeover node1"}]}
    d.update(over)
    return d


def test_shipped_drills_validate_against_their_clusters():
    names = {os.path.basename(p) for p in DRILLS}
    for want in ("takeover-giveback.yaml", "unplanned-takeover-kill.yaml", "lif-migrate.yaml", "aggr-relocate.yaml",
                 "vol-move.yaml", "rolling-upgrade.yaml", "partition.yaml", "hang.yaml", "storage-failure.yaml"):
        assert want in names
    for p in DRILLS:
        spec = load_drill(p)
        # the demo cluster, except drills that need the netns backend (kernel client on the fabric)
        want = DEMO if not os.path.basename(p).startswith("kernel-") else os.path.join(ROOT, "examples",
                                                                                      "cluster-netns.toml")
        assert spec.cluster_config == want
        check_against_cluster(spec, load_cluster(spec.cluster_config))
        assert spec.timeline and all(o.at <= spec.duration for o in spec.timeline)
        for op in spec.timeline:
            assert op.verb == ("wait",) or op_request(op) is not None


@pytest.mark.parametrize("text, verb, args", [
    ("takeover node1", ("takeover",), {"node": "node1"}),
    ("lif migrate lif1 node2", ("lif", "migrate"), {"lif": "lif1", "node": "node2"}),
    ("aggr relocate aggr1 node2", ("aggr", "relocate"), {"aggr": "aggr1", "node": "node2"}),
    ("vol move vol1 aggr2", ("vol", "move"), {"vol": "vol1", "aggr": "aggr2"}),
    ("fault hang node1 --seconds 5", ("fault", "hang"), {"target": "node1", "seconds": 5.0}),
    ("fault partition", ("fault", "partition"), {}),
    ("fault storage-slow aggr1 200", ("fault", "storage-slow"), {"target": "aggr1", "ms": 200}),
    ("wait 2.5", ("wait",), {"seconds": 2.5}),
    ("wait takeover_done --timeout 10", ("wait",), {"event": "takeover_done", "timeout": 10.0}),
])
def test_parse_op(text, verb, args):
    assert parse_op(text) == (verb, args)


def test_op_requests_follow_the_control_api():
    spec = drill_from_doc(_doc(timeline=[
        {"at": 0, "op": "fault kill node1"}, {"at": 1, "op": "lif revert lif1"},
        {"at": 2, "op": "fault partition --direction a-to-b --seconds 4"}, {"at": 3, "op": "node upgrade node2"},
        {"at": 4, "op": "fault mgmt-down --seconds 3"}]))
    reqs = [op_request(o) for o in spec.timeline]
    assert reqs == [("/v1/fault", {"kind": "kill", "target": "node1"}), ("/v1/lif/revert", {"lif": "lif1"}),
                    ("/v1/fault", {"kind": "partition", "direction": "a-to-b"}),
                    ("/v1/node/upgrade", {"node": "node2"}), ("/v1/fault", {"kind": "mgmt-down", "seconds": 3.0})]
    clear = clearing_op(spec.timeline[2], 2.01)
    assert (clear.text, clear.at, clear.auto) == ("fault heal", 6.01, True)
    assert clearing_op(spec.timeline[0], 0.0) is None


@pytest.mark.parametrize("over, key, words", [
    ({"clients": []}, "clients", "non-empty"),
    ({"cluster": {}}, "cluster.config", "required"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"timeline": [{"at": 1, "op": "takeover"}]}, "timeline[0].op", "takes 1 argument"),
    ({"timeline": [{"at": 1, "op": "explode node1"}]}, "timeline[0].op", "unknown operation"),
    ({"timeline": [{"at": 1, "op": "fault hang node1 --minutes 3"}]}, "timeline[0].op", "unknown option --minutes"),
    ({"timeline": [{"at": 5, "op": "takeover node1"}, {"at": 1, "op": "giveback node1"}]}, "timeline", "time order"),
    ({"timeline": [{"at": "soon", "op": "takeover node1"}]}, "timeline[0].at", "must be int/float"),
    ({"clients": [{"name": "c1", "lif": "lif1"}]}, "clients.c1.share", "required"),
    ({"clients": [{"name": "c1", "share": "vol1", "rate": True, "lif": "lif1"}]}, "clients[0].rate", "boolean"),
    ({"expect": {"max_pause": 3}}, "expect.max_pause", "unknown key"),
])
def test_schema_errors_name_the_key(over, key, words):
    with pytest.raises(DrillError) as ei:
        drill_from_doc(_doc(**over))
    assert ei.value.key == key and words in str(ei.value)


@pytest.mark.parametrize("over, key, words", [
    ({"clients": [{"name": "c1", "lif": "lif9", "share": "vol1"}]}, "clients.c1.lif", "unknown LIF"),
    ({"clients": [{"name": "c1", "lif": "lif1", "share": "vol2"}]}, "clients.c1.share", "not CA"),
    ({"timeline": [{"at": 1, "op": "takeover node7"}]}, "timeline[0].op", "unknown node"),
    ({"timeline": [{"at": 1, "op": "fault storage-fail aggr9"}]}, "timeline[0].op", "unknown aggregate"),
])
def test_names_checked_against_the_cluster(over, key, words):
    with pytest.raises(DrillError) as ei:
        check_against_cluster(drill_from_doc(_doc(**over)), load_cluster(DEMO))
    assert ei.value.key == key and words in str(ei.value)


def test_isolated_config_is_private_and_loads(tmp_path):
    path = isolated_config(DEMO, str(tmp_path / "w"), seed=7)
    c = load_cluster(path)
    base = load_cluster(DEMO)
    assert set(c.lifs) == set(base.lifs) and set(c.volumes) == set(base.volumes)
    assert c.state_dir == str(tmp_path / "w" / "state")
    assert all(a.path.startswith(str(tmp_path)) for a in c.aggregates.values())
    assert {lif.address for lif in c.lifs.values()}.isdisjoint({lif.address for lif in base.lifs.values()})
    assert c.smb_port not in (0, 445, 4455) and c.epm_port not in (0, 135) and not c.control.endswith(":9445")
    assert c.metrics_port == 0 and c.users == base.users and c.svm.name == base.svm.name
    assert "[[ha_pair]]" in dump_toml({"ha_pair": [{"nodes": ["a", "b"]}]})


def test_cli_bad_drill_exits_2_with_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_doc(timeline=[{"at": 1, "op": "takeover"}])))
    res = CliRunner().invoke(drill_app, ["run", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "timeline[0].op" in res.output and "takes 1 argument" in res.output
    res = CliRunner().invoke(drill_app, ["run", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "cannot read" in res.output
