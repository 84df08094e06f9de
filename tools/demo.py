"""`make run`: the demo server on loopback with a CA share and a plain share under ./var."""
from __future__ import annotations

import os
import sys

DEMO_USER, DEMO_PASSWORD = "demo", "demo-Passw0rd"


def main() -> None:
    root = os.path.abspath("var")
    ca, plain = os.path.join(root, "vol1"), os.path.join(root, "vol2")
    for d in (ca, plain, os.path.join(root, "state")):
        os.makedirs(d, exist_ok=True)
    port = 445 if os.geteuid() == 0 else 4455
    host = "127.0.0.1"
    print("smbnd demo: one server, CA share 'vol1' and plain share 'vol2' (demo credentials below)")
    print(f"  connect:  smbclient //{host}/vol1 -p {port} -U {DEMO_USER}%{DEMO_PASSWORD} -m SMB3_11")
    print(f"  list:     smbclient //{host}/vol2 -p {port} -U {DEMO_USER}%{DEMO_PASSWORD} -c ls")
    print("  stop:     Ctrl-C", flush=True)
    sys.argv = ["smbnd", "serve", "--listen", f"{host}:{port}", "--share", f"vol1={ca}:ca",
                "--share", f"vol2={plain}", "--user", f"{DEMO_USER}:{DEMO_PASSWORD}"]
    from tools.cli import main as cli_main
    cli_main()


if __name__ == "__main__":
    main()
