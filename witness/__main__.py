"""python -m witness --config CLUSTER.toml --node NODE: the witness process of one cluster node."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from smbnd.cluster.model import load_cluster
from smbnd.config import ConfigError

from .node import WitnessNode, control_path


async def _run(args) -> int:
    c = load_cluster(args.config)
    if args.witness_port:
        c.witness_port = args.witness_port
    if args.epm_port:
        c.epm_port = args.epm_port
    node = WitnessNode(c, args.node, forced_unregister_delay=args.forced_unregister_delay,
                       unused_timeout=args.unused_timeout)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"witness {args.node} ready control={control_path(c, args.node)} witness_port={c.port('witness')} "
          f"epm_port={c.port('epm')} listening={','.join(node.hosted_addresses())}", flush=True)
    await stop.wait()
    await node.stop()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m witness", description=__doc__)
    ap.add_argument("--config", required=True, help="cluster TOML")
    ap.add_argument("--node", required=True)
    ap.add_argument("--witness-port", type=int, default=0, help="override cluster.witness_port")
    ap.add_argument("--epm-port", type=int, default=0, help="override cluster.epm_port")
    ap.add_argument("--forced-unregister-delay", type=float, default=5.0,
                    help="s after a move/unavailable notification before the registration is dropped (<0: never)")
    ap.add_argument("--unused-timeout", type=float, default=30.0, help="MS-SWN 3.1.5.1 unused registration timeout, s")
    ap.add_argument("--log-level", default=os.environ.get("SMBND_WITNESS_LOG_LEVEL", "WARNING"),
                    help="default: $SMBND_WITNESS_LOG_LEVEL or WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return asyncio.run(_run(args))
    except ConfigError as e:
        print(f"witness: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"witness: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"witness: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
