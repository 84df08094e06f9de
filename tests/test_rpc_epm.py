"""Endpoint mapper (smbnd.rpc.epm) over ncacn_ip_tcp with impacket's epm client: ept_map returns the
witness tower on the address asked, ept_lookup lists it, unknown interfaces are not registered."""
import asyncio
import threading

import pytest
from impacket.dcerpc.v5 import epm, transport
from impacket.uuid import uuidtup_to_bin

from smbnd.rpc.association import Association
from smbnd.rpc.epm import EPT_S_NOT_REGISTERED, Endpoint, EndpointMapper, build_tower, parse_tower
from smbnd.rpc.tcp import RpcTcpServer

WITNESS = "ccd8c074-d0e5-4a40-92b4-d074faa6ba28"


@pytest.fixture(scope="module")
def epm_port():
    loop = asyncio.new_event_loop()
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    served = {"127.0.0.1": 6135}
    mapper = EndpointMapper([Endpoint(WITNESS, (1, 1), "Witness Service", served.get)])
    rpc = RpcTcpServer(lambda peer, port: Association([mapper.interface()]))
    port = asyncio.run_coroutine_threadsafe(rpc.start("127.0.0.1", 0), loop).result(10)
    yield port
    asyncio.run_coroutine_threadsafe(rpc.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


def _dce(port):
    d = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]").get_dce_rpc()
    d.connect()
    return d


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_ept_map_witness(epm_port, version):
    d = _dce(epm_port)
    assert epm.hept_map("127.0.0.1", uuidtup_to_bin((WITNESS, version)), protocol="ncacn_ip_tcp",
                        dce=d) == "ncacn_ip_tcp:127.0.0.1[6135]"
    d.disconnect()


def test_ept_map_unknown_interface(epm_port):
    d = _dce(epm_port)
    with pytest.raises(Exception, match="ept_s_not_registered") as e:
        epm.hept_map("127.0.0.1", uuidtup_to_bin(("12345678-1234-abcd-ef00-0123456789ab", "1.0")),
                     protocol="ncacn_ip_tcp", dce=d)
    assert e.value.error_code == EPT_S_NOT_REGISTERED      # 0x16c9a0d6 (C706 appendix E)
    d.disconnect()


def test_ept_lookup(epm_port):
    d = _dce(epm_port)
    entries = epm.hept_lookup(None, dce=d)
    assert len(entries) == 1 and entries[0]["annotation"] == b"Witness Service\0"
    assert epm.PrintStringBinding(entries[0]["tower"]["Floors"]) == "ncacn_ip_tcp:127.0.0.1[6135]"
    d.disconnect()


def test_tower_roundtrip():
    floors = parse_tower(build_tower(WITNESS, (1, 1), 0x1234, "10.1.2.3"))
    assert [f[0][:1] for f in floors] == [b"\x0d", b"\x0d", b"\x0b", b"\x07", b"\x09"]
    assert floors[3][1] == b"\x12\x34" and floors[4][1] == bytes([10, 1, 2, 3])
