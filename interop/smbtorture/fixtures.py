"""Reusable pytest fixtures for tests that need a live SMB server.

Use from a test module (tests/conftest.py is not needed)::

    from interop.smbtorture.fixtures import smbnd_server, samba_server, smbnd_factory  # noqa: F401

* ``smbnd_server``  -- a fresh ``python -m smbnd serve`` on a free loopback port
  with share ``tmp`` on a temp dir and users smbtest/smbtest2 (function scope);
  yields :class:`interop.smbtorture.servers.ServerInfo` (``.host .port .share
  .share_path .user .password .user2 .password2 .pid``).  Its log is appended
  to the test report on failure.
* ``smbnd_factory`` -- call it (``smbnd_factory(extra_args=[...])``) to start
  more/other smbnd instances; all are stopped at teardown.
* ``samba_server``  -- the reference smbd (interop.samba_ref), same interface;
  skipped when smbd is not installed.

Environment: ``SMBND_CMD`` overrides the command prefix (default
``<this python> -m smbnd``).
"""

from __future__ import annotations

import shutil

import pytest

from interop.smbtorture.servers import SambaServer, SmbndServer


@pytest.fixture
def smbnd_factory(tmp_path, request):
    started: list[SmbndServer] = []

    def make(**kw) -> SmbndServer:
        kw.setdefault("workdir", tmp_path / f"smbnd{len(started)}")
        srv = SmbndServer(**kw)
        srv.workdir.mkdir(parents=True, exist_ok=True)
        started.append(srv)
        srv.start()
        return srv

    yield make
    for srv in started:
        alive = srv.alive()
        tail = srv.log_tail(60)
        srv.stop()
        rep = getattr(request.node, "rep_call", None)
        if tail and (not alive or (rep is not None and rep.failed)):
            request.node.add_report_section("call", f"smbnd log (pid exited={not alive})", tail)


@pytest.fixture
def smbnd_server(smbnd_factory):
    srv = smbnd_factory()
    yield srv.info()


@pytest.fixture
def samba_server(tmp_path):
    if not shutil.which("smbd"):
        pytest.skip("smbd not installed")
    with SambaServer(workdir=tmp_path / "samba") as srv:
        yield srv.info()
