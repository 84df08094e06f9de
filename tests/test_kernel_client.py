"""The Linux kernel SMB3 client (Debian's cifs.ko, in a qemu guest) against smbnd.

Uses the harness in interop/linux-kernel/ (build.py + run.py): the guest boots
with qemu -accel tcg inside a private network namespace, mounts the share once
per option set and runs file checks (write/read-back of a 4 MiB file, ls, mkdir,
rename, rm, rmdir, dialect/signing/encryption from /proc/fs/cifs/DebugData).

One guest boot serves all option sets; each option set is reported as its own
test.  Run with:  pytest -m kernel tests/test_kernel_client.py -v

Knobs (environment):
  SMBND_KERNEL_SERVER_CMD  server command template; placeholders {python} {port}
                           {data} {ca} {host_ip} (default: SMBND_SERVER_CMD below)
  SMBND_KERNEL_OPTSETS     comma list of option sets (default: the five below; add
                           3.1.1-ph to mount the CA share with persistenthandles)
  SMBND_KERNEL_READY       regex the server prints when ready (default "listening")
  SMBND_KERNEL_KEEP=1      keep the run directory (serial.log, server.log)
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "interop" / "linux-kernel"
sys.path.insert(0, str(HARNESS))

PORT = 4455
USER, PASSWORD = "demo", "demo-Passw0rd"
SMBND_SERVER_CMD = ("{python} -m smbnd serve --listen 0.0.0.0:{port} "
                    "--share data={data} --share ca={ca}:ca --user demo:demo-Passw0rd "
                    "--state-dir {workdir}/state")   # the CA share's handle store, per run
DEFAULT_OPTSETS = ["3.0", "3.02", "3.1.1", "3.1.1-seal", "3.1.1-sign"]
OPTSETS = [s for s in os.environ.get("SMBND_KERNEL_OPTSETS", ",".join(DEFAULT_OPTSETS)).split(",") if s]
HARNESS_TIMEOUT = 240  # below the 300 s pytest-timeout of pyproject.toml


def _fill(template: str, **values) -> str:
    for k, v in values.items():
        template = template.replace("{" + k + "}", str(v))
    return template




def _run(server_cmd, optsets, workdir: Path, **kw):
    import run
    res = run.run_kernel_client(
        server_cmd, port=PORT, optsets=optsets, timeout=HARNESS_TIMEOUT,
        workdir=str(workdir), keep=True, verbose=True, **kw)
    return res


def _assert_optset(res, name: str) -> None:
    assert res.optsets, f"harness produced no results: {res.errors}; logs in {res.workdir}"
    o = res.optsets.get(name)
    assert o is not None, f"no result for option set {name}: {res.errors}"
    fails = {c: v["detail"] for c, v in o["checks"].items() if v["status"] == "FAIL"}
    assert o["ok"], (f"{name} ({o['options']} on {o['share']}): failed checks {fails}; "
                     f"guest log {o['log'][-8:]}; harness errors {res.errors}; "
                     f"logs in {res.workdir}")


# --------------------------------------------------------------------------- smbnd
@pytest.fixture(scope="module")
def smbnd_kernel_result(kernel_guest, tmp_path_factory):
    base = tmp_path_factory.mktemp("kernel-smbnd")
    data, ca = base / "data", base / "ca"
    data.mkdir()
    ca.mkdir()
    template = os.environ.get("SMBND_KERNEL_SERVER_CMD", SMBND_SERVER_CMD)
    cmd = _fill(template, python=sys.executable, port=PORT, data=data, ca=ca)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    res = _run(cmd, OPTSETS, base / "run", share="data", ph_share="ca", user=USER,
               password=PASSWORD, server_cwd=str(REPO), server_env=env,
               ready_regex=os.environ.get("SMBND_KERNEL_READY", "listening"))
    print(res.summary())
    yield res
    if res.ok and not os.environ.get("SMBND_KERNEL_KEEP"):
        shutil.rmtree(base / "run", ignore_errors=True)


@pytest.mark.parametrize("optset", OPTSETS)
def test_kernel_client_smbnd(smbnd_kernel_result, optset):
    _assert_optset(smbnd_kernel_result, optset)


# ------------------------------------------------- harness self-test against Samba
@pytest.fixture(scope="module")
def samba_kernel_result(kernel_guest, tmp_path_factory):
    import samba_ref
    base = tmp_path_factory.mktemp("kernel-samba")
    try:
        ref = samba_ref.SambaRef(base / "samba", listen_ip="192.168.77.1", port=PORT)
        ref.add_share("data")
        ref.prepare()
    except Exception as e:
        pytest.skip(f"Samba smbd not available as the reference server: {e}")
    res = _run(ref.command(), DEFAULT_OPTSETS, base / "run", share="data",
               user=ref.user, password=ref.password)
    print(res.summary())
    yield res
    if res.ok:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("optset", DEFAULT_OPTSETS)
def test_kernel_client_samba_reference(samba_kernel_result, optset):
    """The harness itself works: Samba's smbd passes every option set."""
    _assert_optset(samba_kernel_result, optset)
