"""CREATE+CLOSE rate on a CA share with and without persistent handles (issue 3 bench).

Each persistent grant is committed to the handle store (WAL, synchronous=FULL) before the
CREATE response, and removed at CLOSE: this measures what that costs.

    python bench/create_close.py [--n 2000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from durable_client import Cli, dh2q  # noqa: E402
from smbnd_server import SmbndServer  # noqa: E402


def rate(cli: Cli, n: int, persistent: bool) -> float:
    t = time.perf_counter()
    for i in range(n):
        ctx = [dh2q(uuid.uuid4().bytes, persistent=True)] if persistent else []
        r = cli.create(f"cc-{persistent}-{i % 50}.dat", contexts=ctx)
        assert r.ok, hex(r.status)
        if persistent:
            d = r.dh2q()
            assert d and d[1] & 0x2, "persistent handle not granted"
        r.open.close()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    with SmbndServer() as srv:
        cli = Cli(srv.host, srv.port, "ca")
        try:
            rate(cli, 100, False)   # warm up
            plain = rate(cli, a.n, False)
            pers = rate(cli, a.n, True)
        finally:
            cli.close()
    print(f"CREATE+CLOSE on a CA share, {a.n} each: plain {plain:.0f}/s, persistent {pers:.0f}/s, "
          f"ratio persistent/plain {pers / plain:.2f}")


if __name__ == "__main__":
    main()
