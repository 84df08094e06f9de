"""``smbnd witness ...``: registrations and hand-sent notifications (like Samba's ``net witness
list / client-move / share-move / force-response``), over the witness control sockets
``<state_dir>/nodes/<node>.witness.sock`` of the cluster named by ``--config``."""
from __future__ import annotations

import json
import os
from typing import List, Optional

import typer

from .control import ControlClient, ControlError
from smbnd.cluster.model import socket_path

witness_app = typer.Typer(add_completion=False, no_args_is_help=True, help="MS-SWN witness: registrations, notifications")
notify_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="send a notification to matching registrations (no filter: all)")
witness_app.add_typer(notify_app, name="notify")

CONFIG = typer.Option(..., "--config", "-c", envvar="SMBND_CLUSTER_CONFIG", help="cluster TOML")
NODE = typer.Option(None, "--node", "-n", help="only this node's witness (default: every running one)")


def _die(msg: str, code: int = 2):
    typer.echo(f"smbnd witness: {msg}", err=True)
    raise typer.Exit(code)


def _sockets(config: str, node: Optional[str]) -> list[tuple[str, str]]:
    from smbnd.cluster.model import load_cluster
    from smbnd.config import ConfigError
    try:
        c = load_cluster(config)
    except ConfigError as e:
        _die(str(e))
    if node is not None and node not in c.nodes:
        _die(f"unknown node {node!r} (nodes: {', '.join(sorted(c.nodes))})")
    out = []
    for name in sorted(c.nodes):
        path = socket_path(c.state_dir, f"{name}.witness")
        if (node is None or name == node) and os.path.exists(path):
            out.append((name, path))
    if not out:
        _die("no witness control socket found (is the witness running?)", 1)
    return out


def _call_all(config: str, node: Optional[str], op: str, **args) -> list[tuple[str, dict]]:
    results = []
    for name, path in _sockets(config, node):
        try:
            results.append((name, ControlClient(path).call(op, **args)))
        except (OSError, ControlError, ValueError) as e:
            if node is not None:
                _die(f"{name}: {e}", 1)
            typer.echo(f"smbnd witness: {name}: {e}", err=True)
    return results


@witness_app.command("list")
def list_(config: str = CONFIG, node: Optional[str] = NODE,
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")):
    """Registrations (and interface view) of every witness."""
    results = _call_all(config, node, "list")
    if as_json:
        typer.echo(json.dumps({name: {k: v for k, v in r.items() if k not in ("id", "ok")} for name, r in results},
                              indent=2))
        return
    for name, r in results:
        ifs = ", ".join(f"{i['lif']}={i['address']}@{i['node']}:{i['state']}{'' if i['local'] else '*'}"
                        for i in r["interfaces"])
        typer.echo(f"node {name}  (events: {r['event_source']}, epoch {r['epoch']})  interfaces: {ifs}")
        if not r["registrations"]:
            typer.echo("  no registrations")
        for g in r["registrations"]:
            typer.echo(f"  {g['handle']}  client={g['client']} net={g['net_name']} ip={g['ip_address']}"
                       f" share={g['share'] or '-'} v={g['version']} keepalive={g['keepalive']}"
                       f" pending_notify={g['async_notify_pending']} delivered={g['delivered']}")


def _notify(config, node, **req) -> None:
    req = {k: v for k, v in req.items() if v not in (None, [], "")}
    total = 0
    for name, r in _call_all(config, node, "notify", **req):
        typer.echo(f"{name}: notified {r['notified']} registration(s)")
        total += r["notified"]
    if total == 0:
        raise typer.Exit(1)


def _filters(handle, client, ip, net_name, share=None) -> dict:
    return {"handle": handle, "client": client, "ip": ip, "net_name": net_name, "share": share}


HANDLE = typer.Option(None, "--handle", help="registration handle (as listed)")
CLIENT = typer.Option(None, "--client", help="ClientComputerName of the registrations")
IP = typer.Option(None, "--ip", help="registered IpAddress")
NETNAME = typer.Option(None, "--net-name", help="registered NetName")
TO = typer.Option(..., "--to", help="destination address or LIF name (repeatable)")


@notify_app.command("client-move")
def client_move(to: List[str] = TO, flags: int = typer.Option(0, "--flags", help="extra IPADDR_INFO flags"),
                handle: Optional[str] = HANDLE, client: Optional[str] = CLIENT, ip: Optional[str] = IP,
                net_name: Optional[str] = NETNAME, config: str = CONFIG, node: Optional[str] = NODE):
    """CLIENT_MOVE (MS-SWN 3.1.6.2): move to the given addresses."""
    _notify(config, node, type="client-move", to=to, flags=flags, **_filters(handle, client, ip, net_name))


@notify_app.command("share-move")
def share_move(share: str = typer.Option(..., "--share"), to: List[str] = TO,
               flags: int = typer.Option(0, "--flags"), handle: Optional[str] = HANDLE,
               client: Optional[str] = CLIENT, ip: Optional[str] = IP, net_name: Optional[str] = NETNAME,
               config: str = CONFIG, node: Optional[str] = NODE):
    """SHARE_MOVE (MS-SWN 3.1.6.3) to v2 registrations naming the share."""
    _notify(config, node, type="share-move", to=to, flags=flags, **_filters(handle, client, ip, net_name, share))


@notify_app.command("ip-change")
def ip_change(to: List[str] = TO, online: bool = typer.Option(False, "--online/--offline"),
              handle: Optional[str] = HANDLE, client: Optional[str] = CLIENT, ip: Optional[str] = IP,
              net_name: Optional[str] = NETNAME, config: str = CONFIG, node: Optional[str] = NODE):
    """IP_CHANGE (MS-SWN 3.1.6.4) to v2 registrations with IP notification."""
    _notify(config, node, type="ip-change", to=to, online=online, **_filters(handle, client, ip, net_name))


@notify_app.command("resource-change")
def resource_change(state: str = typer.Option("unavailable", "--state", help="available|unavailable|unknown"),
                    name: Optional[str] = typer.Option(None, "--name", help="ResourceName (default: registered IP)"),
                    handle: Optional[str] = HANDLE, client: Optional[str] = CLIENT, ip: Optional[str] = IP,
                    net_name: Optional[str] = NETNAME, config: str = CONFIG, node: Optional[str] = NODE):
    """RESOURCE_CHANGE (MS-SWN 3.1.6.1)."""
    _notify(config, node, type="resource-change", state=state, name=name, **_filters(handle, client, ip, net_name))


@notify_app.command("unregister")
def unregister(handle: Optional[str] = HANDLE, client: Optional[str] = CLIENT, ip: Optional[str] = IP,
               net_name: Optional[str] = NETNAME, config: str = CONFIG, node: Optional[str] = NODE):
    """Drop registrations now (their pending AsyncNotify gets ERROR_NOT_FOUND)."""
    _notify(config, node, type="unregister", **_filters(handle, client, ip, net_name))


if __name__ == "__main__":
    witness_app()
