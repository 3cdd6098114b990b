"""`lama-deploy demo`: the whole deployment path on an embedded default, no checkpoint needed.

1. builds big-lama with seeded random weights (or loads `--checkpoint`),
2. exports it to dynamic-shape ONNX (DFT-as-matmul), checked against TensorRT's parser rules,
3. compares ONNX Runtime with the PyTorch torch.fft reference at sizes the export never saw,
4. builds a TensorRT engine ahead of time when TensorRT(-RTX) is installed (`--engine`),
5. inpaints a procedurally drawn scene through the runtime and writes a before/after picture.

With random weights the picture demonstrates the plumbing, not inpainting quality; it says so. With the
official weights (`--checkpoint big-lama/models/best.ckpt`) the same command gives real results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lama_deploy import contract as C
from lama_deploy.errors import EXIT_FAILED, EXIT_OK, cli_entry
from lama_model.configs import CONFIGS
from lama_model.synthetic import demo_scene, sample_batch

PROG = "lama-deploy demo"
CHECK_SHAPES = [(1, 200, 328), (2, 128, 192), (1, 264, 200)]
TOLERANCE = 1e-4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="official best.ckpt / big-lama.pt (default: seeded random weights)")
    parser.add_argument("--config", default=None, choices=sorted(CONFIGS),
                        help="model config (default big-lama, or inferred from --checkpoint)")
    parser.add_argument("--out", default="artifacts/demo", help="output folder (default artifacts/demo)")
    parser.add_argument("--engine", action="store_true", help="also build a TensorRT engine (AOT for --target on TensorRT-RTX)")
    parser.add_argument("--target", default="8.9", help="compute capability for the ahead-of-time engine build")
    return parser


def check_against_reference(onnx_path: Path, model) -> dict[str, float]:
    """Max abs error of ONNX Runtime vs the torch.fft model at sizes the export never saw."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    errors = {}
    for n, h, w in CHECK_SHAPES:
        image, mask = sample_batch(n, h, w, seed=h + w)
        got = session.run([C.OUTPUT], {C.IMAGE: image, C.MASK: mask})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
        errors[f"{n}x{h}x{w}"] = float(np.abs(got - want).max())
    return errors


def before_after(image: np.ndarray, mask: np.ndarray, result: np.ndarray, caption: str) -> Image.Image:
    """Input with the hole shown, and the output, side by side with a caption."""
    shown = image.copy()
    shown[mask > 0] = (shown[mask > 0] * 0.3 + np.array([255, 0, 255]) * 0.7).astype(np.uint8)
    height, width = image.shape[:2]
    canvas = Image.new("RGB", (2 * width + 12, height + 28), "white")
    canvas.paste(Image.fromarray(shown), (0, 0))
    canvas.paste(Image.fromarray(result), (width + 12, 0))
    ImageDraw.Draw(canvas).text((4, height + 8), caption, fill="black")
    return canvas


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from lama_deploy.export.onnx_export import export_inpainting_onnx, load_model
    from lama_deploy.runtime import Inpainter

    started = time.perf_counter()
    model, config, weights, _ = load_model(args.checkpoint, args.config)
    print(f"[1/5] model: {config}, {weights}")
    onnx_path = out / f"{config}.onnx"
    export = export_inpainting_onnx(onnx_path, checkpoint=args.checkpoint, config=config, model=model)
    export.weights = weights
    print(f"[2/5] exported {onnx_path} in {export.seconds:.1f} s (N, H, W dynamic; TensorRT 8.5+ rules pass)")
    from lama_model import set_fourier_mode

    errors = check_against_reference(onnx_path, set_fourier_mode(model, "torch"))
    worst = max(errors.values())
    print(f"[3/5] ONNX Runtime vs PyTorch torch.fft, max abs error: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) + f" ({'PASS' if worst <= TOLERANCE else 'FAIL'})")
    engine_note, engine_ok = "skipped (pass --engine)", True
    if args.engine:  # asked for: an engine that was not built fails the demo
        engine_note, engine_ok = _build_engine(onnx_path, out, args.target)
    print(f"[4/5] TensorRT engine: {engine_note}")
    image, mask = demo_scene()
    with Inpainter.from_path(onnx_path) as inpainter:
        result = inpainter.inpaint(image, mask)
    Image.fromarray(image).save(out / "scene.png")
    Image.fromarray(mask).save(out / "scene_mask.png")
    result.image.save(out / "scene_inpainted.png")
    label = "RANDOM WEIGHTS: plumbing demo, not inpainting quality" if "random" in weights else weights
    before_after(image, mask, np.asarray(result.image), f"lama-deploy {config} via {result.backend} - {label}") \
        .save(out / "before_after.png")
    print(f"[5/5] inpainted {image.shape[1]}x{image.shape[0]} via {result.backend} ({result.strategy}) in "
          f"{result.seconds:.2f} s -> {out / 'before_after.png'}")
    summary = {"config": config, "weights": weights, "onnx": str(onnx_path), "export_seconds": export.seconds,
               "max_abs_error_vs_torch": errors, "engine": engine_note, "seconds": round(time.perf_counter() - started, 1)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    if "random" in weights:
        print(f"note: {C.RANDOM_WEIGHTS_LABEL}")
    failures = ([f"ONNX Runtime differs from PyTorch by {worst:.1e} (> {TOLERANCE:g})"] if worst > TOLERANCE else []) \
        + ([f"--engine: {engine_note}"] if not engine_ok else [])
    for failure in failures:
        print(f"{PROG}: FAILED: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def _build_engine(onnx_path: Path, out: Path, target: str) -> tuple[str, bool]:
    """(what happened, whether the engine was built)."""
    from lama_deploy.scripts.commands.build import main as build_main
    from lama_deploy.runtime.trt_import import TensorRTUnavailable, import_tensorrt

    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        return f"not built: {exc}", False
    engine = out / (onnx_path.stem + ".engine")
    code = build_main([str(onnx_path), "-o", str(engine), "--min", "1x256x256", "--opt", "1x512x512",
                       "--max", "1x1024x1024", "--compute-capability", target])
    return (f"{engine}", True) if code == 0 else (f"build failed (exit {code}; its error is above)", False)


if __name__ == "__main__":
    sys.exit(main())
