"""`lama-deploy validate`: the command over `lama_deploy.export.validate` (ONNX vs PyTorch with Polygraphy)."""

from __future__ import annotations

import argparse

from lama_deploy.errors import EXIT_FAILED, EXIT_OK, cli_entry
from lama_deploy.export.validate import PROG, TOLERANCES, ValidateOptions, __doc__ as validate_doc, validate_onnx
from lama_deploy.runtime.backends.ort_backend import parse_providers
from lama_deploy.export.validation_inputs import DEFAULT_SHAPES, QUICK_MAX_SIDE, parse_shapes
from lama_deploy.export.validation_report import format_summary

from .arguments import add_option_group, make_parser


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, validate_doc.split("\n\nThe reference")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", help="ONNX from `lama-deploy export`")
    parser.add_argument("--checkpoint", help="weights the ONNX was exported from (default: its seeded random weights)")
    parser.add_argument("--out-dir", default="validation", help="where inputs, reference, outputs and report go")
    parser.add_argument("--shapes", help="comma-separated NxHxW list (default: "
                        + ",".join(f"{n}x{h}x{w}" for n, h, w in DEFAULT_SHAPES) + ")")
    parser.add_argument("--quick", action="store_true", help=f"drop shapes with a side > {QUICK_MAX_SIDE}")
    parser.add_argument("--images", help="folder of images (instead of synthetic ones); masks beside them as "
                        "<stem>_mask.png work as for `lama-deploy inpaint`")
    parser.add_argument("--masks", help="folder of masks matched by stem or <stem>_mask* (default: --images; "
                        "alone: the images sit beside it as <stem>.*)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    parser.add_argument("--precision", choices=sorted(TOLERANCES), help="tolerance set (default: the ONNX's)")
    parser.add_argument("--atol", type=float, help="absolute tolerance on the max error")
    parser.add_argument("--rtol", type=float, help="relative tolerance on the max error")
    add_option_group(parser, ("providers",), "ONNX Runtime runners (each provider named is one runner)")
    parser.add_argument("--engine", help="TensorRT engine to validate too (needs a GPU; NOT CHECKED, exit 1, "
                        "when it cannot run)")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT runner")
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shapes = parse_shapes(args.shapes) if args.shapes else None
    providers = parse_providers(",".join(args.providers)) if args.providers else None  # full provider names
    options = ValidateOptions(shapes=tuple(shapes) if shapes else None, precision=args.precision,
                              out_dir=args.out_dir, image_dir=args.images, mask_dir=args.masks, seed=args.seed,
                              atol=args.atol, rtol=args.rtol, quick=args.quick, providers=providers,
                              engine=args.engine, use_tensorrt=not args.no_tensorrt)
    report = validate_onnx(args.onnx, checkpoint=args.checkpoint, options=options)
    print(format_summary(report))
    return EXIT_OK if report.passed else EXIT_FAILED

