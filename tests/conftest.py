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
