"""`make run`: the 2-node demo cluster (examples/cluster-2node.toml) in the foreground on loopback.

SVM SMBND, HA pair node1/node2, lif1 127.0.0.11 (node1) and lif2 127.0.0.12 (node2), CA share vol1 on
aggr1 and plain share vol2 on aggr2 under ./var, user demo / demo-Passw0rd. SMB on port 445 as root,
else 4455. Ctrl-C stops the supervisor, both nodes and the witnesses.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "examples", "cluster-2node.toml")
DEMO_USER, DEMO_PASSWORD = "demo", "demo-Passw0rd"


def banner(port: int, smbnd: str) -> str:
    u = f"{DEMO_USER}%{DEMO_PASSWORD}"
    return "\n".join([
        "smbnd demo cluster: SVM SMBND, HA pair node1 <-> node2 (examples/cluster-2node.toml)",
        "  lif1 127.0.0.11 (home node1) serves aggr1/vol1 (CA); lif2 127.0.0.12 (home node2) serves aggr2/vol2",
        "connect:",
        f"  smbclient //127.0.0.11/vol1 -p {port} -U {u} -m SMB3_11",
        f"  smbclient //127.0.0.12/vol2 -p {port} -U {u} -m SMB3_11 -c ls",
        "try (in another terminal):",
        f"  {smbnd} status                      # nodes, LIFs, aggregates, sessions, opens",
        f"  {smbnd} events -f                   # the event log, live",
        f"  {smbnd} takeover node1              # node2 takes over lif1 and aggr1",
        f"  {smbnd} giveback node1",
        f"  {smbnd} lif migrate lif1 node2      # then: {smbnd} lif revert lif1",
        f"  {smbnd} fault kill node1            # unplanned takeover within ~1 s; then giveback node1",
        "  control API: http://127.0.0.1:9445 (token in var/cluster/token, OpenAPI at /openapi.json);"
        " metrics: http://127.0.0.1:9446/metrics",
        "stop: Ctrl-C",
    ])


def main() -> None:
    os.chdir(ROOT)
    port = 445 if os.geteuid() == 0 else 4455
    venv_smbnd = os.path.join(".venv", "bin", "smbnd")
    smbnd = venv_smbnd if os.path.exists(venv_smbnd) else "smbnd"
    print(banner(port, smbnd), flush=True)
    sys.argv = ["smbnd", "cluster", "up", "--config", CONFIG, "--foreground"]
    from tools.cli import main as cli_main
    cli_main()


if __name__ == "__main__":
    main()
