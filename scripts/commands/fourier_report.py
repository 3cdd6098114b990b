"""`lama-deploy fourier-report`: how much graph a Fourier unit costs in each exported form (nodes, layout ops,
FLOPs per unit); the counting is `lama_deploy.export.fourier_report`'s.

    lama-deploy fourier-report big-lama-matmul.onnx big-lama-dense.onnx [--side 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lama_deploy.errors import InputNotFound, cli_entry

PROG = "lama-deploy fourier-report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", nargs="+", type=Path, help="exported LaMa ONNX files")
    parser.add_argument("--side", type=int, default=64, help="bottleneck side for the FLOP count (image side / 8)")
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [str(path) for path in args.onnx if not path.is_file()]
    if missing:
        raise InputNotFound(f"ONNX file {missing[0]} not found; give the exported models to compare")
    from lama_deploy.export.fourier_report import markdown, report_rows, unit_gflop_lines

    print(markdown(report_rows(args.onnx)))
    for line in unit_gflop_lines(args.side):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
