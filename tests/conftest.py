import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from smbnd_server import SmbndServer  # noqa: E402


@pytest.fixture(scope="module")
def server():
    """One smbnd process per test module (loopback, free port)."""
    with SmbndServer() as s:
        yield s
        assert "Traceback" not in s.log(), s.log()[-4000:]


KERNEL_HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop", "linux-kernel")


@pytest.fixture(scope="session")
def kernel_guest():
    """The qemu guest for the Linux kernel client tests (interop/linux-kernel/build.py, cached and
    locked against concurrent builds); skips only if the prerequisites can't be had."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespace, tap device, qemu)")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun: cannot create the tap device for the guest")
    if KERNEL_HARNESS not in sys.path:
        sys.path.insert(0, KERNEL_HARNESS)
    import build
    try:
        return build.build()
    except Exception as e:  # apt/qemu/kernel package unavailable
        pytest.skip(f"cannot prepare the qemu guest (qemu-system-x86 / Debian kernel package not installable?): {e}")
