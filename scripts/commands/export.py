"""`lama-deploy export` (also `python export/to_onnx.py`): LaMa to a dynamic-shape ONNX graph.

    lama-deploy export --checkpoint big-lama/models/best.ckpt --output big-lama.onnx
    lama-deploy export --output demo.onnx            # seeded random weights, says so
    lama-deploy export --checkpoint best.ckpt --precision fp16 --output big-lama-fp16.onnx

N, H and W stay symbolic (H and W multiples of 8); the Fourier units are DFT-as-matmul so TensorRT 8.5+
parses the graph (`--fft dft` writes ONNX DFT ops instead, for ONNX Runtime only). The command only parses;
`lama_deploy.export.onnx_export.export_inpainting_onnx` does the work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lama_deploy import contract as C
from lama_deploy.errors import UsageError, cli_entry

PROG = "lama-deploy export"


def build_parser() -> argparse.ArgumentParser:
    from lama_model.configs import CONFIGS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="best.ckpt, big-lama.pt or a generator state_dict (default: random weights)")
    parser.add_argument("--output", "-o", default="lama.onnx", help="ONNX file to write (default: lama.onnx)")
    parser.add_argument("--config", choices=sorted(CONFIGS), help="model config (default: inferred from the checkpoint, big-lama for random weights)")
    parser.add_argument("--opset", type=int, default=C.DEFAULT_OPSET, help=f"ONNX opset (default {C.DEFAULT_OPSET}; TensorRT 8.x reads up to {C.MAX_TRT8_OPSET})")
    parser.add_argument("--fft", "--fourier", dest="fourier", choices=C.EXPORT_FOURIER, default=C.DEFAULT_FOURIER, help="matmul: factorised DFT-as-matmul (TensorRT-parsable, default); matmul-dense: dense DFT-as-matmul (TensorRT builds it several times faster, more work at large sizes); dft: ONNX DFT ops (ONNX Runtime only)")
    parser.add_argument("--precision", choices=C.PRECISIONS, default="fp32", help="fp16: mixed precision (Fourier units as --fp16-policy says), explicit casts (strongly typed builders)")
    parser.add_argument("--fp16-policy", choices=C.FP16_POLICIES, help="with --precision fp16: fourier-fp32 keeps the Fourier units in fp32 (default); fourier-scaled folds an exact power-of-two scale into their weights and runs them in fp16 too (tensor cores)")
    parser.add_argument("--fourier-scale", type=float, help="fourier-scaled: the scale (default: chosen for sides up to 2048, a power of two)")
    parser.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (no --checkpoint)")
    parser.add_argument("--trained-like", action="store_true", help="random weights with trained-model activation magnitudes (fp16 testing)")
    parser.add_argument("--no-speedups", action="store_true", help="skip the exact graph rewrites of export/speedups.py (BatchNorm folding, head, shared DFT bases, sub-pixel last upsampling)")
    parser.add_argument("--json", action="store_true", help="print the export report as JSON")
    return parser


def _batch_arg(value: str) -> int | None:
    """None for a dynamic batch, else the fixed batch size of the graph."""
    if value == "dynamic":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise UsageError(f"--batch must be 'dynamic' or a positive integer, not {value!r}")


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name such as {output / 'lama.onnx'}")
    from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx

    options = ExportOptions(precision=args.precision, fp16_policy=args.fp16_policy, fourier=args.fourier,
                            fourier_scale=args.fourier_scale, opset=args.opset,
                            batch=_batch_arg(args.batch), speedups=not args.no_speedups).check()
    if not args.checkpoint:
        print(f"{PROG}: no --checkpoint: exporting {C.RANDOM_WEIGHTS_LABEL}", file=sys.stderr)
    if args.fourier == "dft":
        print(f"{PROG}: warning: --fft dft writes ONNX DFT ops; TensorRT before 11.2 cannot parse them "
              "(use the default --fft matmul for TensorRT/Jetson)", file=sys.stderr)
    result = export_inpainting_onnx(output, args.checkpoint, args.config, options, seed=args.seed,
                                    trained_like=args.trained_like)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        size_mb = output.stat().st_size / 1e6
        print(f"wrote {output} ({size_mb:.1f} MB): {result.config}, {result.fourier}, {result.precision}, opset {result.opset}, "
              f"dims N x C x H x W dynamic ({C.SIZE_RULE})")
        print(f"weights: {result.weights}")
        print(f"export took {result.seconds:.1f} s, peak memory {result.peak_rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
