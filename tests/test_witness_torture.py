"""smbtorture 4.17 rpc.witness against the witness of node b (private network namespace), checked
against interop/smbtorture/expectations/witness.txt. Marker `torture` (~4 min: AsyncNotify_timeouts
waits out KeepAlives of 0, 1, 10, 100 and 120 s)."""
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from interop.smbtorture import expectations as ex
from interop.smbtorture.subunit import parse
from witness.testing import PASSWORD, USER, Cluster, NetNS

EXPECTATIONS = Path(__file__).resolve().parents[1] / "interop/smbtorture/expectations/witness.txt"
SUITE = "rpc.witness"
TESTS = ["GetInterfaceList", "Register", "UnRegister", "RegisterEx", "AsyncNotify", "AsyncNotify_timeouts"]

pytestmark = [pytest.mark.torture,
              pytest.mark.skipif(not shutil.which("smbtorture"), reason="smbtorture not installed"),
              pytest.mark.skipif(not NetNS.available(), reason="needs root, unshare, nsenter, ip")]


@pytest.mark.timeout(600)
def test_rpc_witness(tmp_path, request):
    c = Cluster(str(tmp_path), smb_nodes=("b",))
    base = ["smbtorture", f"ncacn_ip_tcp:{Cluster.ADDR_B}[{Cluster.WITNESS},sign]", "-U", f"{USER}%{PASSWORD}",
            "-p", str(Cluster.SMB), "--option=torture:net_name=SMBND"]
    results, outs = {}, []
    try:
        # AsyncNotify_timeouts in its own process: the failed AsyncNotify case (no MS-CMRP) leaves an
        # AsyncNotify pending on the shared pipe, and Samba's client drops the whole pipe with
        # IO_TIMEOUT when that request's 60 s default timeout expires (see witness.txt)
        for tests in (TESTS[:-1], TESTS[-1:]):
            out = c.run(base + [f"{SUITE}.witness.{t}" for t in tests], timeout=540)
            outs.append(out.stdout)
            results.update({f"{SUITE}.{k}": v for k, v in parse(out.stdout).results.items()})
    finally:
        c.stop()
    out = SimpleNamespace(stdout="\n".join(outs))
    rep = ex.check(ex.Expectations.load(EXPECTATIONS).for_suite(SUITE), results)
    text = f"{SUITE}: {rep.format()}\n{out.stdout[-4000:]}"
    request.node.add_report_section("call", "smbtorture", text)
    assert not rep.failed, text
    assert results[f"{SUITE}.witness.AsyncNotify_timeouts"][0] == "success"
    assert "Traceback" not in c.procs["witness-b"].log(), c.procs["witness-b"].log()[-3000:]
