"""The witness processes (python -m witness, two nodes) against real peers, in a private network
namespace (root): Samba 4.17's rpcclient WITNESS commands (its ncacn_ip_tcp client always asks the
endpoint mapper on TCP 135, so EPM owns 135 *inside the namespace only*), python3-samba's
samba.dcerpc.witness (SPNEGO sign/seal) with a CLIENT_MOVE sent through `smbnd witness notify`,
the reference client (interop/witness_client.py) driven by cluster events, srvsvc share flags of a
clustered node, smbclient -L, and tshark decoding the conversations."""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from witness.testing import PASSWORD, USER, Cluster, NetNS, Rpcclient

A, B = Cluster.ADDR_A, Cluster.ADDR_B
HANDLE_RX = r"^\w+:[0-9a-f-]{36}$"
pytestmark = [pytest.mark.skipif(not NetNS.available(), reason="needs root, unshare, nsenter, ip"),
              pytest.mark.skipif(not shutil.which("rpcclient"), reason="rpcclient not installed")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("witness")), witness_args=("--forced-unregister-delay", "1"))
    yield c
    c.stop()
    for k, p in c.procs.items():
        assert "Traceback" not in p.log(), f"{k}:\n{p.log()[-3000:]}"


def cli(c, *args):
    return subprocess.run([sys.executable, "-m", "witness.cli", *args, "--config", c.config],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("level", ["sign", "seal"])
def test_rpcclient_witness_commands(cluster, level):
    rc = Rpcclient(f"ncacn_ip_tcp:{B}[{level}]", cluster.ns)       # EPM lookup on B:135, then the witness
    try:
        out = rc.run("GetInterfaceList", rf"^ \+ SMBND {B}.*$")
        # INTERFACE_WITNESS ('*') only on the LIF that node b does not host (MS-SWN 3.1.4.1)
        assert f"*+ SMBND {A} " in out and f"\n + SMBND {B} " in out
        h1 = rc.run(f"Register --net SMBND --ip {A} --client rc1-{level}", HANDLE_RX).split()[-1]
        h2 = rc.run(f"RegisterEx --net SMBND --ip {A} --share vol1 --timeout 1 --client rc2-{level}",
                    HANDLE_RX).split()[-1]
        t = time.monotonic()
        assert "WERR_TIMEOUT" in rc.run(f"AsyncNotify {h2}", r"result was \S+")
        assert 0.9 < time.monotonic() - t < 5
        threading.Timer(0.5, cli, (cluster, "notify", "client-move", "--to", "lif_b", "--client", f"rc1-{level}")).start()
        out = rc.run(f"AsyncNotify {h1}", r"Flags 0x\w+ .*$|result was \S+")
        assert "Client move with 1 messages" in out and f"Flags 0x00000001 {B}" in out
        assert rc.run(f"UnRegister {h2}\nGetInterfaceList", rf"result was \S+|^ \+ SMBND {B}.*$").count("result") == 0
        assert "WERR_INVALID_PARAMETER" in rc.run(f"UnRegister {h2}", r"result was \S+")
        assert "WERR_INVALID_PARAMETER" in rc.run(f"Register --net OTHER --ip {A}", r"result was \S+")
        assert "WERR_INVALID_STATE" in rc.run("Register --net SMBND --ip 10.1.2.3", r"result was \S+")
        assert "WERR_REVISION_MISMATCH" in rc.run(f"Register -2 --net SMBND --ip {A}", r"result was \S+")
        assert "WERR_INVALID_STATE" in rc.run(f"RegisterEx --net SMBND --ip {A} --share nosuch", r"result was \S+")
    finally:
        rc.close()


SAMBA_WITNESS = r"""
import sys
from samba import credentials, param, WERRORError
from samba.dcerpc import witness
lp = param.LoadParm()
creds = credentials.Credentials()
creds.guess(lp)
creds.set_username(sys.argv[2]); creds.set_password(sys.argv[3]); creds.set_domain("WORKGROUP")
creds.set_kerberos_state(credentials.DONT_USE_KERBEROS)
w = witness.witness(sys.argv[1], lp, creds)
l = w.GetInterfaceList()
print("interfaces", ",".join("%s/%d/%d/0x%x" % (i.ipv4, i.state, i.flags, i.version) for i in l.interfaces),
      flush=True)
h = w.RegisterEx(witness.WITNESS_V2, "SMBND", "vol1", sys.argv[4], "py-" + sys.argv[5], 0, 60)
print("registered", flush=True)
r = w.AsyncNotify(h)
print("notify", r.type, r.num, ";".join("%s/0x%x" % (a.ipv4, a.flags) for a in r.messages[0].addr),
      flush=True)
w.UnRegister(h)
try:
    w.UnRegister(h)
except WERRORError as e:
    print("second unregister", hex(e.args[0] & 0xffffffff), flush=True)
"""


def _samba_python():
    return subprocess.run(["/usr/bin/python3", "-c", "import samba.dcerpc.witness"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _samba_python(), reason="python3-samba not installed")
@pytest.mark.parametrize("options", ["spnego,sign", "spnego,seal", "ntlm,sign"])
def test_samba_python_client_move_via_cli(cluster, options):
    tag = options.replace(",", "-")
    cmd = cluster.ns.wrap(["/usr/bin/python3", "-c", SAMBA_WITNESS, f"ncacn_ip_tcp:{B}[{Cluster.WITNESS},{options}]",
                           USER, PASSWORD, A, tag])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("interfaces ") and f"{A}/1/5/0xffffffff" in line and f"{B}/1/1/" in line, \
            line + proc.stderr.read()
        assert proc.stdout.readline().strip() == "registered"
        listed = json.loads(cli(cluster, "list", "--json", "--node", "b").stdout)["b"]["registrations"]
        assert any(r["client"] == f"py-{tag}" and r["share"] == "vol1" and r["version"] == "0x00020000"
                   for r in listed)
        with open(os.path.join(cluster.state_dir, "witness", "b.json")) as f:     # supervisor's /v1/status hook
            assert any(r["client"] == f"py-{tag}" for r in json.load(f))
        deadline = time.monotonic() + 10     # AsyncNotify is pending once the list says so
        while not any(r["client"] == f"py-{tag}" and r["async_notify_pending"]
                      for r in cluster.control("b").call("list")["registrations"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = cli(cluster, "notify", "client-move", "--to", "lif_b", "--client", f"py-{tag}", "--node", "b")
        assert r.returncode == 0 and "notified 1 registration" in r.stdout, r.stdout + r.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"notify 2 1 {B}/0x1", "second unregister 0x57"]


REF_CLIENT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from interop.witness_client import WitnessClient
c = WitnessClient(sys.argv[2], "SMBND", sys.argv[3], sys.argv[4], epm_port=135, client_name="refclient", keepalive=30)
orig = c.register
def register(*a, **k):
    w = orig(*a, **k)
    print(json.dumps({"event": "registered", "witness": w}), flush=True)
    return w
c.register = register
c.register(share="vol1")
for note in c.notifications(retry_interval=0.2):
    print(json.dumps({"event": note.kind, "resources": note.resources, "addresses": note.addresses,
                      "t": time.time()}), flush=True)
"""


def test_reference_client_follows_cluster_events(cluster):
    """node_down -> RESOURCE_CHANGE UNAVAILABLE; forced unregister -> the client registers again;
    node_up -> AVAILABLE; lif_moved -> CLIENT_MOVE; the witness re-binds to the LIFs it now hosts."""
    cmd = cluster.ns.wrap([sys.executable, "-c", REF_CLIENT, os.getcwd(), A, USER, PASSWORD])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def next_event():
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-3000:]
        return json.loads(line)
    try:
        assert next_event() == {"event": "registered", "witness": B}      # the partner's witness
        time.sleep(0.3)                    # AsyncNotify pending
        t = time.time()
        cluster.emit(1, "node_down", node="a", reason="killed")
        ev = next_event()
        assert ev["event"] == "resource-change" and ev["resources"] == [[A, 0xFF]] and ev["t"] - t < 1.0
        assert next_event() == {"event": "registered", "witness": B}      # after the forced unregister
        time.sleep(0.3)
        cluster.emit(2, "node_up", node="a", pid=1)
        ev = next_event()
        assert ev["event"] == "resource-change" and ev["resources"] == [[A, 1]]
        time.sleep(0.3)
        t = time.time()
        cluster.set_placement(lif_a="b")
        cluster.emit(3, "lif_moved", lif="lif_a", address=A, from_node="a", to_node="b", ms=5)
        ev = next_event()
        assert ev["event"] == "client-move" and ev["addresses"] == [[A, 1]] and ev["t"] - t < 1.0
        deadline = time.monotonic() + 10
        while True:
            st_b, st_a = cluster.control("b").call("status"), cluster.control("a").call("status")
            if f"{A}:{Cluster.WITNESS} witness" in st_b["listening"] and not st_a["listening"]:
                break
            assert time.monotonic() < deadline, (st_a, st_b)
            time.sleep(0.1)
        assert [i["local"] for i in st_b["interfaces"]] == [True, True]
    finally:
        proc.kill()
        proc.wait()
        # move lif_a back the way the supervisor would (placement, then the event) and wait until
        # node a's witness serves it again, so later tests start from the homes with no move pending
        cluster.set_placement(lif_a="a")
        cluster.emit(4, "lif_moved", lif="lif_a", address=A, from_node="b", to_node="a", ms=5)
        deadline = time.monotonic() + 10
        while f"{A}:{Cluster.WITNESS} witness" not in cluster.control("a").call("status")["listening"]:
            assert time.monotonic() < deadline, "lif_a not back on node a's witness"
            time.sleep(0.1)
        time.sleep(0.5)


def test_srvsvc_cluster_flags_and_smbclient_list(cluster):
    def rpc(cmd):
        return cluster.run(["rpcclient", "-p", str(Cluster.SMB), B, "-U", f"{USER}%{PASSWORD}", "-c", cmd])
    out = rpc("netsharegetinfo vol1 1005")
    assert out.returncode == 0 and "flags: 0x84000" in out.stdout, out.stdout + out.stderr   # CA | CLUSTER_MANAGED
    assert "flags: 0x80000" in rpc("netsharegetinfo vol2 1005").stdout
    stype = re.search(r"server type\s*:\s*(0x[0-9a-f]+)", rpc("srvinfo").stdout)
    assert stype and int(stype.group(1), 16) & 0x01000000          # SV_TYPE_CLUSTER_NT (MS-SRVS 2.2.2.7)
    out = rpc("netshareenumall 1")
    assert "netname: vol1" in out.stdout and "netname: IPC$" in out.stdout
    out = cluster.run(["smbclient", "-L", B, "-p", str(Cluster.SMB), "-U", f"{USER}%{PASSWORD}", "-m", "SMB3"])
    assert out.returncode == 0 and all(s in out.stdout for s in ("vol1", "vol2", "IPC$")), out.stdout + out.stderr


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_tshark_decodes_witness_epm_srvsvc(cluster, tmp_path):
    pcap = tmp_path / "w.pcapng"
    cap = subprocess.Popen(cluster.ns.wrap(["tshark", "-i", "lo", "-w", str(pcap), "-q"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        rc = Rpcclient(f"ncacn_ip_tcp:{B}[sign]", cluster.ns)
        try:
            rc.run("GetInterfaceList", rf"^ \+ SMBND {B}.*$")
            h = rc.run(f"RegisterEx --net SMBND --ip {A} --timeout 1 --client ts", HANDLE_RX).split()[-1]
            rc.run(f"AsyncNotify {h}", r"result was \S+")
            rc.run(f"UnRegister {h}\nGetInterfaceList", rf"^ \+ SMBND {B}.*$")
        finally:
            rc.close()
        assert cluster.run(["rpcclient", "-p", str(Cluster.SMB), B, "-U", f"{USER}%{PASSWORD}", "-c",
                            "netshareenumall 1"]).returncode == 0
        time.sleep(1.0)
    finally:
        cap.terminate()
        cap.wait(10)
    args = ["tshark", "-r", str(pcap), "-d", f"tcp.port=={Cluster.WITNESS},dcerpc", "-d", f"tcp.port=={Cluster.SMB},nbss"]
    bad = subprocess.run(args + ["-Y", "_ws.malformed || _ws.expert.severity == error"], capture_output=True,
                         text=True, timeout=60).stdout
    assert bad.strip() == "", bad
    fields = subprocess.run(args + ["-T", "fields", "-e", "witness.opnum", "-e", "epm.opnum", "-e", "srvsvc.opnum"],
                            capture_output=True, text=True, timeout=60).stdout
    seen = {tuple(line.split("\t")) for line in fields.splitlines() if line.strip("\t")}
    witness_ops = {int(w) for w, _e, _s in seen if w}
    assert {0, 2, 3, 4} <= witness_ops, seen
    assert any(e == "3" for _w, e, _s in seen)           # ept_map
    assert any(s == "15" for _w, _e, s in seen)          # NetShareEnumAll
