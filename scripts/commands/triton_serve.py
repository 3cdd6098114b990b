"""`lama-deploy triton-serve`: the command over `lama_deploy.runtime.triton.serve`."""

from __future__ import annotations

import argparse
import sys

from lama_deploy.errors import cli_entry
from lama_deploy.runtime.triton.serve import PROG, prepare_launch, run_foreground


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True, help="model repository (`lama-deploy triton-repo --output`)")
    parser.add_argument("--host", default="127.0.0.1", help="address for HTTP, gRPC and metrics (default: loopback)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level")
    parser.add_argument("--dry-run", action="store_true", help="print the server command line and exit")
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    launch = prepare_launch(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
                            [f"--log-verbose={args.log_verbose}"] if args.log_verbose else [])
    if args.dry_run:
        launch.cleanup()
        print(" ".join(launch.argv))
        return 0
    print(f"{PROG}: {launch.binary}{' (nvidia-pytriton)' if launch.bundled else ''} on {args.host}: "
          f"HTTP {args.http_port}, gRPC {args.grpc_port}, metrics {args.metrics_port}", file=sys.stderr, flush=True)
    return run_foreground(launch)

