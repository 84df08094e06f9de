"""The `smbnd` command line."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="smbnd: a clustered SMB 3 file server emulator")


def _die(msg: str, code: int = 2) -> None:
    typer.echo(f"smbnd: {msg}", err=True)
    raise typer.Exit(code)


def build_config(listen, shares, users, config, users_file=None, signing_required=None, encrypt=None):
    from smbnd.config import ConfigError, ServerConfig, load_toml, parse_listen, parse_share_spec
    try:
        cfg = load_toml(config) if config else ServerConfig()
        if listen:
            cfg.listen = [parse_listen(x, "--listen") for x in listen]
        for s in shares or []:
            cfg.shares.append(parse_share_spec(s))
        for u in users or []:
            name, sep, pw = u.partition(":")
            if not sep or not name:
                raise ConfigError("--user", "expected NAME:PASSWORD")
            cfg.users[name] = pw
        if users_file:
            cfg.users_file = users_file
        if signing_required is not None:
            cfg.signing_required = signing_required
        if encrypt is not None:
            cfg.encrypt_data = encrypt
        return cfg.finish()
    except ConfigError as e:
        _die(f"config error: {e}")


@app.callback()
def _root() -> None:
    """smbnd: a clustered SMB 3 file server emulator."""


@app.command()
def serve(
    listen: list[str] = typer.Option(None, "--listen", "-l", help="HOST:PORT (repeatable)"),
    share: list[str] = typer.Option(None, "--share", "-s", help="NAME=PATH[:ca][:encrypt][:ro] (repeatable)"),
    user: list[str] = typer.Option(None, "--user", "-u", help="NAME:PASSWORD (repeatable)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="TOML config file"),
    users_file: Optional[str] = typer.Option(None, "--users-file", help="lines NAME:PASSWORD or NAME:{NT}HEX"),
    signing_required: Optional[bool] = typer.Option(None, "--signing-required/--signing-optional"),
    encrypt: Optional[bool] = typer.Option(None, "--encrypt/--no-encrypt", help="require encryption globally"),
    directory_leasing: Optional[bool] = typer.Option(None, "--directory-leasing/--no-directory-leasing",
                                                     help="advertise DIRECTORY_LEASING (off by default)"),
    multichannel: Optional[bool] = typer.Option(None, "--multichannel/--no-multichannel",
                                                help="advertise MULTI_CHANNEL and allow session binding"),
    torture_fsctls: bool = typer.Option(False, "--torture-fsctls", help="enable smbtorture's test-only FSCTLs"),
    state_dir: Optional[str] = typer.Option(None, "--state-dir",
                                            help="handle stores of the CA shares (default ./var/state)"),
    durable_timeout: Optional[int] = typer.Option(None, "--durable-timeout",
                                                  help="default durable/persistent reconnect window, s"),
    log_level: str = typer.Option("WARNING", "--log-level"),
):
    """Run one SMB server until SIGTERM/SIGINT. Prints a 'listening on' line when ready."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    cfg = build_config(listen, share, user, config, users_file, signing_required, encrypt)
    if directory_leasing is not None:
        cfg.directory_leasing = directory_leasing
    if multichannel is not None:
        cfg.multichannel = multichannel
    if state_dir is not None:
        cfg.state_dir = os.path.abspath(state_dir)
    if durable_timeout is not None:
        cfg.durable_timeout = durable_timeout
    if torture_fsctls:
        cfg.torture_fsctls = True
    try:
        import uvloop  # optional extra
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(cfg))


async def _serve(cfg) -> None:
    from smbnd.netio import serve as net_serve
    from smbnd.server import Server
    try:
        server = Server(cfg)
    except (OSError, ValueError) as e:
        _die(f"config error: {e}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        listeners = await net_serve(server, cfg.listen)
    except OSError as e:
        _die(f"cannot listen: {e.strerror}", 1)
    addrs = ", ".join(f"{s.sockets[0].getsockname()[0]}:{s.sockets[0].getsockname()[1]}" for s in listeners)
    shares = ", ".join(f"{s.name}{' (CA)' if s.ca else ''}" for s in cfg.shares)
    print(f"smbnd listening on {addrs} shares: {shares} pid {os.getpid()}", flush=True)
    await stop.wait()
    for s in listeners:
        s.close()
    for c in list(server.connections):
        c.close()
    for s in listeners:
        await s.wait_closed()


def _register_cluster() -> None:
    from tools.cluster_cli import register
    register(app)


_register_cluster()


def _register_drill_and_witness() -> None:
    from smbnd.drill.cli import drill_app
    app.add_typer(drill_app, name="drill", help="failover drills: smbnd drill run FILE.yaml")
    try:
        from witness.cli import witness_app
    except ImportError:       # the witness package is optional in a partial install
        return
    app.add_typer(witness_app, name="witness", help="MS-SWN witness: registrations, hand-sent notifications")


_register_drill_and_witness()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
