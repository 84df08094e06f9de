"""`smbnd drill run FILE.yaml` (registered by tools/cli.py: ``app.add_typer(drill_app, name="drill")``)."""
from __future__ import annotations

import datetime as dt
import os
from typing import Optional

import typer

drill_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Scripted failover drills")


@drill_app.callback()
def _root() -> None:
    """Scripted failover drills: run a YAML drill against a cluster and get a verdict."""


@drill_app.command()
def run(
    file: str = typer.Argument(..., help="drill YAML"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="output directory (default drill-out/NAME-TIME)"),
    config_override: Optional[str] = typer.Option(None, "--config-override",
                                                  help="cluster TOML to use instead of the drill's"),
    isolate: bool = typer.Option(False, "--isolate", help="run on a private copy of the cluster config: unique "
                                 "127.0.0.x LIFs, free ports, state and aggregates under --out"),
    start: Optional[bool] = typer.Option(None, "--start/--no-start", help="start/stop the cluster (default: "
                                         "the drill's cluster.start)"),
    png: bool = typer.Option(True, "--png/--no-png", help="also render timeline.png"),
):
    """Run a drill; writes result.json, report.md, timeline.svg/png. Exit 0 pass, 1 fail, 2 error."""
    from .control import ControlError
    from .runner import run_drill
    from .schema import DrillError
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("drill-out", f"{os.path.splitext(os.path.basename(file))[0]}-{stamp}")
    try:
        result = run_drill(file, out, config_override=config_override, isolate=isolate, start_cluster=start,
                           png=png, log=typer.echo)
    except DrillError as e:
        typer.echo(f"smbnd drill: {e}", err=True)
        raise typer.Exit(2)
    except ControlError as e:
        typer.echo(f"smbnd drill: control API: {e}", err=True)
        raise typer.Exit(2)
    v = result["verdict"]
    for name, c in v["clients"].items():
        typer.echo(f"  {name}: {c['ios_ok']} I/Os, longest pause {c['max_pause_s']} s, errors {c['errors']}, "
                   f"reconnects {c['reconnects']} (reclaimed {c['reclaimed']}), data verified {c['data_verified']}")
    typer.echo(f"{'PASS' if v['passed'] else 'FAIL'}: {result['name']}"
               + ("" if v["passed"] else " — " + "; ".join(v["failures"])))
    typer.echo(f"report: {os.path.join(out, 'report.md')}")
    raise typer.Exit(0 if v["passed"] else 1)


if __name__ == "__main__":
    drill_app()
