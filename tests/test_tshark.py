"""Wireshark's SMB2 dissector decodes an unencrypted smbclient session with no malformed packets."""
import os
import shutil
import subprocess
import time

import pytest

from smbnd_server import PASSWORD, USER

pytestmark = pytest.mark.skipif(not (shutil.which("tshark") and shutil.which("smbclient")) or os.geteuid() != 0,
                                reason="needs tshark, smbclient and root (capture on lo)")


def test_smbclient_session_decodes_cleanly(server, tmp_path):
    pcap = tmp_path / "s.pcapng"
    cap = subprocess.Popen(["tshark", "-i", "lo", "-f", f"tcp port {server.port}", "-w", str(pcap), "-q"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)   # let the capture start
        src = tmp_path / "f.txt"
        src.write_bytes(b"wireshark " * 5000)
        r = subprocess.run(["smbclient", f"//{server.host}/data", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                            "-m", "SMB3_11", "-c", f"mkdir ts; put {src} ts\\f.txt; ls ts\\*; allinfo ts\\f.txt; "
                            f"get ts\\f.txt {tmp_path}/g.txt; rename ts\\f.txt ts\\h.txt; del ts\\h.txt; rmdir ts"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(1.0)
    finally:
        cap.terminate()
        cap.wait(10)
    decode_args = ["tshark", "-r", str(pcap), "-d", f"tcp.port=={server.port},nbss"]
    out = subprocess.run(decode_args + ["-Y", "_ws.malformed || _ws.expert.severity == error"],
                         capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "", out
    smb2 = subprocess.run(decode_args + ["-Y", "smb2", "-T", "fields", "-e", "smb2.cmd"],
                          capture_output=True, text=True, timeout=60).stdout.split()
    cmds = set(int(c) for line in smb2 for c in line.split(","))
    # NEGOTIATE, SESSION_SETUP, TREE_CONNECT, CREATE, CLOSE, READ, WRITE, QUERY_DIRECTORY, QUERY_INFO, SET_INFO
    assert {0, 1, 3, 5, 6, 8, 9, 14, 16, 17} <= cmds, sorted(cmds)
