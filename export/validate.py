"""`lama-deploy validate`: check an exported ONNX (and optionally its engine) against PyTorch with Polygraphy.

    lama-deploy validate lama.onnx --out-dir validation/            # default shapes, seeded synthetic inputs
    lama-deploy validate lama.onnx --checkpoint best.ckpt --quick    # drop the 1024x1024 case (~10 s on CPU)
    lama-deploy validate lama.onnx --images photos/ --masks masks/   # your own images, padded to multiples of 8

The reference is the PyTorch model in `torch.fft` mode, stored as a Polygraphy `RunResults` JSON
(runner "pytorch-ref"); the inputs are stored as a Polygraphy list of feed dicts. Every ONNX Runtime
provider present (CPU; CUDA and TensorRT when installed) and a TensorRT engine (when TensorRT and a GPU
are present) run through `Comparator.run` and are compared with the reference, max error statistic.
Exit status 1 when any comparison fails, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import UserError, cli_entry, missing_dependency
from lama_deploy.files import file_sha256
from lama_deploy.model_facts import read_model_facts

from .validation_inputs import DEFAULT_SHAPES, QUICK_MAX_SIDE, make_feeds, parse_shapes
from .validation_report import (
    ShapeResult, ValidationReport, error_stats, format_shape, format_summary, replay_command,
    write_report,
)

PROG = "lama-deploy validate"

# Tolerances on `inpainted` (0..1), checked on the max error statistic. Measured with this command (ORT 1.32 CPU
# vs torch 2.13 torch.fft, seed-0 random weights, DEFAULT_SHAPES, `lama-deploy export` of this repository):
# - fp32: big-lama max |diff| 1.7e-6 .. 2.8e-6 over all shapes, 1x1024x1024 included (5.5e-6 there with the
#   earlier, unfactorised matmul DFT); tiny <= 2.2e-6. atol 1e-4 leaves >= 18x headroom for TensorRT's fp32
#   kernels (TF32 off; not measured: no GPU here).
# - fp16 (mixed ONNX, Fourier units fp32): big-lama 1.7e-3 (1x16x16) .. 4.0e-3 (2x256x256), 3.5e-3 at
#   1x1024x1024; with `--trained-like` weights (activations ~1e3) 9.4e-3 .. 1.8e-2 up to 1x512x512 (mean
#   1.5e-4 .. 6.9e-4). atol 5e-2 is ~3x the largest, well below what an overflow does (NaN / inf / 0.1+).
# rtol matters little: with the max statistic a comparison fails only when abs AND rel exceed their
# tolerance, and outputs near 0 make the max relative error large anyway.
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (5e-2, 1e-2)}
TOLERANCE_SOURCE = "measured ORT CPU vs PyTorch on seeded big-lama, documented in export/validate.py"

ORT_PROVIDERS = {"CPUExecutionProvider": "onnxrt-cpu", "CUDAExecutionProvider": "onnxrt-cuda",
                 "TensorrtExecutionProvider": "onnxrt-tensorrt"}
REFERENCE_RUNNER = "pytorch-ref"
GPU_SKIP_REASON = "needs an NVIDIA GPU and TensorRT runtime"


# --- reference ----------------------------------------------------------------------------------------

def read_metadata(onnx_path: Path) -> dict[str, str]:
    return read_model_facts(onnx_path).check().metadata


def random_weights_recipe(metadata: dict[str, str]) -> tuple[int, bool]:
    """(seed, trained_like) of an export of seeded random weights, from its metadata.

    Exports before `lama.random_seed` existed only carry the weights label, so that is parsed as a fallback.
    """
    weights = metadata.get(C.META_WEIGHTS, "")
    if C.META_RANDOM_SEED in metadata:
        return int(metadata[C.META_RANDOM_SEED]), metadata.get(C.META_TRAINED_LIKE) == "true"
    match = re.search(r"random weights \(seed (\d+)", weights)
    if not match:
        raise UserError(f"this ONNX was exported from {weights or 'unknown weights'}; pass --checkpoint with the "
                        f"same weights to build the PyTorch reference")
    return int(match.group(1)), "scaled like the trained" in weights


def reference_model(metadata: dict[str, str], checkpoint: str | None, model=None):
    """(model in torch.fft mode, description). Random weights are rebuilt from the ONNX metadata's seed."""
    import lama_model

    config = metadata.get(C.META_CONFIG) or None
    weights = metadata.get(C.META_WEIGHTS, "")
    if model is not None:
        return lama_model.set_fourier_mode(model, "torch").eval(), "PyTorch model passed in, torch.fft"
    if checkpoint:
        expected = metadata.get(C.META_CHECKPOINT_SHA256, "")
        if expected and file_sha256(checkpoint) != expected:
            raise UserError(f"{Path(checkpoint).name} is not the checkpoint this ONNX was exported from "
                            f"(sha256 differs from lama.checkpoint_sha256)")
        loaded = lama_model.load_inpainting_model(checkpoint, config=config, fourier="torch")
        return loaded.eval(), f"PyTorch, torch.fft, checkpoint {Path(checkpoint).name}"
    seed, trained_like = random_weights_recipe(metadata)
    rebuilt = lama_model.random_model(config or "big-lama", seed=seed, fourier="torch", trained_like=trained_like)
    return rebuilt, f"PyTorch, torch.fft, {weights}"


def reference_results(model, feeds):
    """Polygraphy RunResults of the PyTorch model, one iteration per feed."""
    import torch
    from polygraphy.comparator import IterationResult, RunResults

    iterations = []
    with torch.no_grad():
        for feed in feeds:
            out = model(torch.from_numpy(feed[C.IMAGE]), torch.from_numpy(feed[C.MASK])).numpy()
            iterations.append(IterationResult(outputs={C.OUTPUT: out.astype(np.float32)}, runner_name=REFERENCE_RUNNER))
    results = RunResults()
    results.append((REFERENCE_RUNNER, iterations))
    return results


# --- runners --------------------------------------------------------------------------------------------

def cuda_device_count() -> int:
    """NVIDIA GPUs visible through the driver (0 without a driver); no CUDA toolkit needed."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except OSError:
        return 0


def ort_runners(onnx_path: Path, providers: list[str] | None):
    import onnxruntime
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    available = onnxruntime.get_available_providers()
    wanted = providers or [p for p in ORT_PROVIDERS if p in available]
    runners = []
    for provider in wanted:
        if provider not in available:
            raise UserError(f"ONNX Runtime provider {provider} is not available here ({', '.join(available)})")
        name = ORT_PROVIDERS.get(provider, provider)
        runners.append(OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=[provider]), name=name))
    return runners


def trt_runner(onnx_path: Path, engine: str | None, shapes, out_dir: Path):
    """(runner or None, profile (min, max) NHW or None, skip reason)."""
    try:
        from lama_deploy.runtime.trt_import import flavour_of, import_tensorrt
        trt = import_tensorrt()
    except ImportError:
        return None, None, GPU_SKIP_REASON + " (TensorRT is not installed)"
    if cuda_device_count() == 0:
        return None, None, GPU_SKIP_REASON + " (no NVIDIA GPU/driver found)"
    from lama_deploy.engine_sidecar import K_ONNX_SHA256, sidecar_profiles, verify_sidecar
    from lama_deploy.profiles import Profile

    from .build_engine import build_engine

    if engine is None:
        lo = tuple(min(s[i] for s in shapes) for i in range(3))
        hi = tuple(max(s[i] for s in shapes) for i in range(3))
        opt = tuple(min(max(v, lo[i]), hi[i]) for i, v in enumerate((1, 512, 512)))
        engine = str(out_dir / "validate.engine")
        build_engine(onnx_path, engine, [Profile(lo, opt, hi)], flavour=flavour_of(trt))
    sidecar = verify_sidecar(engine)
    if sidecar.get(K_ONNX_SHA256) != file_sha256(onnx_path):
        raise UserError(f"{Path(engine).name} was built from another ONNX (sha256 in its sidecar differs from "
                        f"{onnx_path.name}); rebuild it with `lama-deploy build` or pass the matching ONNX")
    profile = sidecar_profiles(sidecar)[0]  # TrtRunner uses the engine's first profile
    if flavour_of(trt) == "tensorrt_rtx":
        os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    runner = TrtRunner(EngineFromBytes(Path(engine).read_bytes()), name="tensorrt")
    return runner, (profile.min, profile.max), ""


def _in_profile(shape, profile) -> bool:
    lo, hi = profile
    return all(lo[i] <= shape[i] <= hi[i] for i in range(3))


def compare_func(atol: float, rtol: float):
    from polygraphy import comparator

    # Polygraphy 0.53 deprecates CompareFunc.simple for SimpleCompareFunc; older releases only have the former.
    factory = getattr(comparator, "SimpleCompareFunc", None) or comparator.CompareFunc.simple
    return factory(atol={"": atol}, rtol={"": rtol}, check_error_stat="max")


def _verdicts(accuracy) -> list[bool]:
    """Per-iteration pass/fail of the only comparison, from AccuracyResults (0.53+) or AccuracyResult."""
    result = accuracy if hasattr(accuracy, "items") else accuracy[0]
    per_iteration = next(iter(result.values()))
    return [all(bool(v) for v in iteration.values()) for iteration in per_iteration]


# --- the whole check ----------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_polygraphy():
    """Our table replaces Polygraphy's per-iteration log; its errors still show."""
    try:
        from polygraphy.logger import G_LOGGER
    except ImportError:
        raise missing_dependency("polygraphy", "pip install polygraphy") from None
    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        yield
    finally:
        G_LOGGER.module_severity = severity


def collect_runners(report: ValidationReport, onnx_path: Path, providers, engine, use_tensorrt: bool, shapes,
                    out_dir: Path) -> list:
    """[(runner, engine profile or None)]; runners that cannot run here are recorded in `report.skipped`."""
    runners = [(runner, None) for runner in ort_runners(onnx_path, providers)]
    if not use_tensorrt:
        report.skipped["tensorrt"] = "not requested (--no-tensorrt)"
        return runners
    runner, profile, reason = trt_runner(onnx_path, engine, shapes, out_dir)
    if runner is None:
        report.skipped["tensorrt"] = reason
    else:
        runners.append((runner, profile))
    return runners


def run_and_compare(report: ValidationReport, runner, profile, feeds, ref_results, out_dir: Path) -> None:
    """Run one runner on the feeds its profile covers, save its outputs, compare with the reference."""
    from polygraphy.comparator import Comparator, RunResults

    shapes = [(f[C.IMAGE].shape[0], f[C.IMAGE].shape[2], f[C.IMAGE].shape[3]) for f in feeds]
    indices = [i for i, s in enumerate(shapes) if profile is None or _in_profile(s, profile)]
    if not indices:
        report.skipped[runner.name] = "no validation shape inside the engine's profile"
        return
    results = Comparator.run([runner], data_loader=[feeds[i] for i in indices])
    outputs_path = out_dir / f"outputs_{runner.name}.json"
    results.save(str(outputs_path))
    report.files[runner.name] = str(outputs_path)
    reference = RunResults()
    reference.append((REFERENCE_RUNNER, [ref_results[0][1][i] for i in indices]))
    results.extend(reference)
    accuracy = Comparator.compare_accuracy(results, comparisons=[(0, 1)],
                                           compare_func=compare_func(report.atol, report.rtol))
    for iteration, (index, passed) in enumerate(zip(indices, _verdicts(accuracy))):
        out = results[0][1][iteration][C.OUTPUT]
        ref = ref_results[0][1][index][C.OUTPUT]
        max_abs, mean_abs, psnr = error_stats(out, ref, feeds[index][C.MASK])
        passed = passed and bool(np.isfinite(max_abs))  # never let a NaN output pass
        report.results.append(ShapeResult(runner.name, format_shape(ref.shape), max_abs, mean_abs, psnr, passed))


def validate_onnx(onnx_path: str | Path, checkpoint: str | None = None, model=None, shapes=None,
                  precision: str | None = None, out_dir: str | Path = "validation", image_dir: str | None = None,
                  mask_dir: str | None = None, seed: int = 0, atol: float | None = None, rtol: float | None = None,
                  quick: bool = False, providers: list[str] | None = None, engine: str | None = None,
                  use_tensorrt: bool = True) -> ValidationReport:
    """Run every available runner on the ONNX (and engine) and compare with the PyTorch reference."""
    start = time.perf_counter()
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} not found")
    metadata = read_metadata(onnx_path)
    precision = precision or metadata.get(C.META_PRECISION, "fp32")
    if precision not in TOLERANCES:
        raise UserError(f"unknown precision {precision!r}; choose one of {sorted(TOLERANCES)}")
    atol = TOLERANCES[precision][0] if atol is None else atol
    rtol = TOLERANCES[precision][1] if rtol is None else rtol
    source = TOLERANCE_SOURCE if (atol, rtol) == TOLERANCES[precision] else "given by the caller"
    feeds = make_feeds(shapes, quick, seed, image_dir, mask_dir)
    shapes = [(f[C.IMAGE].shape[0], f[C.IMAGE].shape[2], f[C.IMAGE].shape[3]) for f in feeds]
    torch_model, reference = reference_model(metadata, checkpoint, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"inputs": str(out_dir / "inputs.json"), "reference": str(out_dir / "reference.json")}
    weights = metadata.get(C.META_WEIGHTS, "unknown weights")
    report = ValidationReport(
        onnx=str(onnx_path), onnx_sha256=file_sha256(onnx_path), config=metadata.get(C.META_CONFIG, "unknown"),
        weights=weights, precision=precision, reference=reference, atol=atol, rtol=rtol, tolerance_source=source,
        shapes=[f"{n}x{h}x{w}" for n, h, w in shapes], files=files,
        replay_command=replay_command(onnx_path, files["inputs"], files["reference"], atol, rtol),
    )
    if C.is_random_weights(metadata):
        report.notes.append("random weights: these numbers check the export's plumbing, not inpainting quality")
    with quiet_polygraphy():
        from polygraphy.json import save_json

        runners = collect_runners(report, onnx_path, providers, engine, use_tensorrt, shapes, out_dir)
        ref_results = reference_results(torch_model, feeds)
        save_json(feeds, files["inputs"])
        ref_results.save(files["reference"])
        for runner, profile in runners:
            run_and_compare(report, runner, profile, feeds, ref_results, out_dir)
    report.seconds = round(time.perf_counter() - start, 1)
    report.files["report"] = str(out_dir / "report.json")
    write_report(report, report.files["report"])
    return report


# --- CLI ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\nThe reference")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", help="ONNX from `lama-deploy export`")
    parser.add_argument("--checkpoint", help="weights the ONNX was exported from (default: its seeded random weights)")
    parser.add_argument("--out-dir", default="validation", help="where inputs, reference, outputs and report go")
    parser.add_argument("--shapes", help="comma-separated NxHxW list (default: "
                        + ",".join(f"{n}x{h}x{w}" for n, h, w in DEFAULT_SHAPES) + ")")
    parser.add_argument("--quick", action="store_true", help=f"drop shapes with a side > {QUICK_MAX_SIDE}")
    parser.add_argument("--images", help="folder of images (instead of synthetic ones)")
    parser.add_argument("--masks", help="folder of masks named like the images (white = hole)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    parser.add_argument("--precision", choices=sorted(TOLERANCES), help="tolerance set (default: the ONNX's)")
    parser.add_argument("--atol", type=float, help="absolute tolerance on the max error")
    parser.add_argument("--rtol", type=float, help="relative tolerance on the max error")
    parser.add_argument("--providers", help="comma-separated ONNX Runtime providers (default: all available)")
    parser.add_argument("--engine", help="TensorRT engine to validate too (needs a GPU)")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT runner")
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shapes = parse_shapes(args.shapes) if args.shapes else None
    providers = [p.strip() for p in args.providers.split(",")] if args.providers else None
    report = validate_onnx(args.onnx, checkpoint=args.checkpoint, shapes=shapes, precision=args.precision,
                           out_dir=args.out_dir, image_dir=args.images, mask_dir=args.masks, seed=args.seed,
                           atol=args.atol, rtol=args.rtol, quick=args.quick, providers=providers,
                           engine=args.engine, use_tensorrt=not args.no_tensorrt)
    print(format_summary(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
