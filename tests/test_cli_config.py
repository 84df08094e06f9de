"""`smbnd serve` contract: config errors, TOML settings, clean shutdown, SMB1->SMB2 negotiate."""
import os
import signal
import subprocess
import sys
import time

import pytest

from smbnd_server import PASSWORD, USER, SmbndServer, free_port


def serve(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "smbnd", "serve", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("toml,key", [
    ("[server]\nmax_read_size = 'big'\n", "server.max_read_size"),
    ("[server]\nbogus = 1\n", "server.bogus"),
    ("[server]\nmin_dialect = '1.0'\n", "server.min_dialect"),
    ("[server]\nciphers = ['ROT13']\n", "server.ciphers"),
    ("[[share]]\nname = 'x'\n", "share[0]"),
    ("[[share]]\nname = 'x'\npath = '/nonexistent/dir'\n", "share.x.path"),
    ("[wat]\n", "wat"),
    ("[server\n", "--config"),
])
def test_bad_config_one_line_exit_2(tmp_path, toml, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml + "[users]\nu = 'p'\n" if "[server\n" not in toml else toml)
    r = serve("--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and key in lines[0], r.stderr


def test_bad_flags_exit_2(tmp_path):
    r = serve("--listen", "nohostport", "--share", f"d={tmp_path}", "--user", "u:p")
    assert r.returncode == 2 and "--listen" in r.stderr
    r = serve("--listen", f"127.0.0.1:{free_port()}", "--share", f"d={tmp_path}:bogus", "--user", "u:p")
    assert r.returncode == 2 and "--share" in r.stderr


def test_toml_config_signing_required(tmp_path):
    share = tmp_path / "s"
    share.mkdir()
    port = free_port()
    cfg = tmp_path / "smbnd.toml"
    cfg.write_text(f"""[server]
listen = ["127.0.0.1:{port}"]
signing_required = true
[users]
{USER} = "{PASSWORD}"
[[share]]
name = "docs"
path = "{share}"
""")
    p = subprocess.Popen([sys.executable, "-m", "smbnd", "serve", "--config", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in p.stdout.readline()
        from smbprotocol.connection import Connection
        import uuid
        c = Connection(uuid.uuid4(), "127.0.0.1", port, require_signing=False)
        c.connect()
        assert c.require_signing, "server's SIGNING_REQUIRED must make the client sign"
        c.disconnect()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0


def test_sigterm_shuts_down_cleanly_with_clients():
    with SmbndServer() as s:
        import socket
        c = socket.create_connection((s.host, s.port))
        time.sleep(0.2)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
        c.close()
        assert "Traceback" not in s.log()


def test_smb1_multiprotocol_negotiate_upgrades_to_smb2(server):
    """impacket's default negotiate is SMB1 listing 'SMB 2.002' and 'SMB 2.???' (MS-SMB2 3.3.5.3.1)."""
    from impacket.smbconnection import SMBConnection
    conn = SMBConnection(server.host, server.host, sess_port=server.port)
    conn.login(USER, PASSWORD)
    assert conn.getDialect() >= 0x0210
    names = [f.get_longname() for f in conn.listPath("data", "*")]
    assert "." in names
    conn.logoff()
