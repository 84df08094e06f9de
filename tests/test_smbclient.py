"""Samba's smbclient against smbnd: the issue's acceptance commands, each protection mode."""
import hashlib
import os
import shutil
import subprocess

import pytest

from smbnd_server import PASSWORD, USER

pytestmark = pytest.mark.skipif(shutil.which("smbclient") is None, reason="smbclient not installed")


def smbclient(server, share, cmds, *opts):
    r = subprocess.run(["smbclient", f"//{server.host}/{share}", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                        *opts, "-c", cmds], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("proto", ["SMB3_11", "SMB3", "SMB3_02", "SMB2_10", "SMB2_02"])
@pytest.mark.parametrize("protection", ["off", "sign", "encrypt"])
def test_smbclient_file_ops(server, tmp_path, proto, protection):
    if protection == "encrypt" and proto.startswith("SMB2"):
        pytest.skip("SMB2 dialects have no encryption")
    src = tmp_path / "src.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    src.write_bytes(data)
    d = f"dir_{proto}_{protection}"
    cmds = (f"mkdir {d}; cd {d}; put {src} a.bin; ls; get a.bin {tmp_path}/back.bin; rename a.bin b.bin; "
            f"allinfo b.bin; ls; del b.bin; cd ..; rmdir {d}; ls")
    rc, out = smbclient(server, "data", cmds, "-m", proto, f"--client-protection={protection}")
    assert rc == 0, out
    assert "NT_STATUS" not in out, out
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert "a.bin" in out and "b.bin" in out and "stream: [::$DATA]" in out
    assert not os.path.exists(os.path.join(server.paths["data"], d))


def test_wrong_password_is_logon_failure(server):
    r = subprocess.run(["smbclient", f"//{server.host}/data", "-p", str(server.port), "-U", f"{USER}%wrong",
                        "-c", "ls"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr


def test_unknown_share(server):
    rc, out = smbclient(server, "nosuch", "ls")
    assert rc != 0 and "NT_STATUS_BAD_NETWORK_NAME" in out


def test_client_normalised_dotdot_stays_inside_share(server):
    """smbclient folds '..' itself; whatever reaches the server resolves inside the share."""
    rc, out = smbclient(server, "data", "get ..\\..\\etc\\passwd /dev/null")
    assert rc != 0 and "NT_STATUS_OBJECT_PATH_NOT_FOUND" in out, out
