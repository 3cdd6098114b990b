"""`lama-deploy build`: a dynamic-shape TensorRT engine from the exported ONNX, with a JSON sidecar.

    lama-deploy build lama.onnx -o lama.engine --min 1x256x256 --opt 1x512x512 --max 2x1024x1024
    lama-deploy build lama_fp16.onnx -o lama.engine --precision fp16 --compute-capability 8.9   # TensorRT-RTX, AOT
    lama-deploy build --inspect lama.engine

The precision policy is `lama_deploy.export.build_engine`'s (its module docstring); this module only parses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lama_deploy import contract as C
from lama_deploy.engine_sidecar import describe_sidecar, verify_sidecar
from lama_deploy.errors import UserError, cli_entry
from lama_deploy.profiles import format_nhw

from .arguments import add_profile_options, profiles_from

PROG = "lama-deploy build"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\nThe precision policy")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", nargs="?", help="ONNX from `lama-deploy export`")
    parser.add_argument("-o", "--output", help="engine path (default: the ONNX path with .engine)")
    add_profile_options(parser)
    parser.add_argument("--precision", choices=C.PRECISIONS, help="default: the ONNX's own precision")
    parser.add_argument("--workspace", type=int, metavar="MiB", help="builder workspace limit")
    parser.add_argument("--timing-cache", metavar="FILE", help="load (if present) and save a timing cache")
    parser.add_argument("--compute-capability", metavar="X.Y", help="TensorRT-RTX: build ahead of time for this GPU")
    parser.add_argument("--flavour", choices=("tensorrt", "tensorrt_rtx"), help="default: whichever is installed")
    parser.add_argument("--optimization-level", type=int, choices=range(0, 6), metavar="0-5")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 for fp32 layers (faster, less exact)")
    parser.add_argument("--inspect", metavar="ENGINE", help="check an engine against its sidecar and describe it")
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.inspect:
        print(describe_sidecar(verify_sidecar(args.inspect)))
        return 0
    if not args.onnx:
        raise UserError("give the ONNX to build from (or --inspect ENGINE)")
    from lama_deploy.export.build_engine import BuildOptions, build_engine
    from lama_deploy.export.trt_builder import ParserError

    profiles = profiles_from(args)
    output = args.output or str(Path(args.onnx).with_suffix(".engine"))
    for index, profile in enumerate(profiles):
        print(f"profile {index}: min {format_nhw(profile.min)}  opt {format_nhw(profile.opt)}  "
              f"max {format_nhw(profile.max)} (N x H x W)")
    options = BuildOptions(profiles=profiles, precision=args.precision, workspace_mib=args.workspace,
                           timing_cache=args.timing_cache, compute_capability=args.compute_capability,
                           flavour=args.flavour, optimization_level=args.optimization_level, tf32=args.tf32)
    try:
        report = build_engine(args.onnx, output, options)
    except ParserError as exc:
        for line in exc.lines:
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}")
    target = f", compute capability {report.compute_capability}" if report.compute_capability else ""
    pinned = f", {report.fp32_pinned_layers} layers pinned to fp32" if report.fp32_pinned_layers else ""
    print(f"built {report.engine} ({report.engine_bytes / 2**20:.1f} MiB) with {report.flavour} "
          f"{report.tensorrt_version}, {report.precision}{pinned}{target}")
    print(f"sidecar {report.sidecar}")
    print(f"build time {report.seconds:.1f} s, peak RSS {report.peak_rss_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
