"""`lama-deploy validate`: check an exported ONNX (and optionally its engine) against PyTorch with Polygraphy.

    lama-deploy validate lama.onnx --out-dir validation/            # default shapes, seeded synthetic inputs
    lama-deploy validate lama.onnx --checkpoint best.ckpt --quick    # no 1024x1024 case (big-lama: minutes on CPU)
    lama-deploy validate lama.onnx --images photos/ --masks masks/   # your own images, padded to multiples of 8

The reference is the PyTorch model in `torch.fft` mode, stored as a Polygraphy `RunResults` JSON
(runner "pytorch-ref"); the inputs are stored as a Polygraphy list of feed dicts. Every ONNX Runtime
provider present (CPU; CUDA and TensorRT when installed) and a TensorRT engine (when TensorRT and a GPU
are present) run through `Comparator.run` and are compared with the reference, max error statistic.
Exit status 0 when every comparison passed; 1 when one failed or a runner the user asked for
(`--engine`, `--providers`) could not run (NOT CHECKED); 2 for a usage error. Runners the user did
not ask for (TensorRT without a GPU, say) are skipped, and the summary says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import InputNotFound, UserError, missing_dependency
from lama_deploy.files import file_sha256
from lama_deploy.model_facts import read_model_facts

from .validate_runners import (  # noqa: F401 (cuda_device_count, GPU_SKIP_REASON: re-exported for tests)
    GPU_SKIP_REASON, REFERENCE_RUNNER, collect_runners, cuda_device_count, run_and_compare,
)
from .validation_inputs import DEFAULT_SHAPES, QUICK_MAX_SIDE, make_feeds, parse_shapes
from .validation_report import ValidationReport, format_summary, replay_command, write_report

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


@dataclass(frozen=True)
class ValidateOptions:
    """What `validate_onnx` checks and how: shapes (or images), tolerances, runners, where files go."""

    shapes: Optional[Tuple[Tuple[int, int, int], ...]] = None  # N x H x W each (default DEFAULT_SHAPES)
    precision: Optional[str] = None  # tolerance set (default: the ONNX's own precision)
    out_dir: Union[str, Path] = "validation"
    image_dir: Optional[str] = None
    mask_dir: Optional[str] = None
    seed: int = 0
    atol: Optional[float] = None
    rtol: Optional[float] = None
    quick: bool = False
    providers: Optional[Tuple[str, ...]] = None
    engine: Optional[str] = None
    use_tensorrt: bool = True


def validate_onnx(onnx_path: Union[str, Path], checkpoint: Optional[str] = None, model=None,
                  options: Optional[ValidateOptions] = None, **changes: Any) -> ValidationReport:
    """Run every available runner on the ONNX (and engine) and compare with the PyTorch reference.

    `options` (or keywords naming its fields) say which shapes, tolerances and runners."""
    options = dataclasses.replace(options or ValidateOptions(), **changes)
    shapes, precision, out_dir, image_dir, mask_dir = (options.shapes, options.precision, options.out_dir,
                                                       options.image_dir, options.mask_dir)
    seed, atol, rtol, quick, engine = options.seed, options.atol, options.rtol, options.quick, options.engine
    providers, use_tensorrt = (list(options.providers) if options.providers else None), options.use_tensorrt
    start = time.perf_counter()
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise InputNotFound(f"ONNX model {onnx_path} not found")
    if engine is not None and not Path(engine).is_file():
        raise InputNotFound(f"engine {engine} not found; build one with `lama-deploy build` or drop --engine")
    metadata = read_metadata(onnx_path)
    precision = precision or metadata.get(C.META_PRECISION, "fp32")
    if precision not in TOLERANCES:
        raise UserError(f"unknown precision {precision!r}; choose one of {sorted(TOLERANCES)}")
    atol = TOLERANCES[precision][0] if atol is None else atol
    rtol = TOLERANCES[precision][1] if rtol is None else rtol
    source = TOLERANCE_SOURCE if (atol, rtol) == TOLERANCES[precision] else "given by the caller"
    if engine is not None and use_tensorrt:
        reason = engine_cannot_run(onnx_path, engine, shapes, out_dir)
        if reason is not None:  # known at once: do not spend a minute on the ONNX Runtime comparison first
            return not_checked_report(onnx_path, metadata, precision, atol, rtol, source, reason, start, out_dir)
    feeds, names, bad_inputs = make_feeds(shapes, quick, seed, image_dir, mask_dir)
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
    report.notes.extend(f"skipped input {line}" for line in bad_inputs)
    if C.is_random_weights(metadata):
        report.notes.append("random weights: these numbers check the export's plumbing, not inpainting quality")
    with quiet_polygraphy():
        from polygraphy.json import save_json

        runners = collect_runners(report, onnx_path, providers, engine, use_tensorrt, shapes, out_dir)
        ref_results = reference_results(torch_model, feeds)
        save_json(feeds, files["inputs"])
        ref_results.save(files["reference"])
        for runner in runners:
            run_and_compare(report, runner, feeds, names, ref_results, out_dir)
    report.seconds = round(time.perf_counter() - start, 1)
    report.files["report"] = str(out_dir / "report.json")
    write_report(report, report.files["report"])
    return report


def engine_cannot_run(onnx_path: Path, engine: str, shapes, out_dir: Path) -> str | None:
    """Why the requested engine cannot run here (no GPU, no TensorRT, a broken engine), or None. Cheap: the
    runner is only described, its engine is deserialised when it runs."""
    from .validate_runners import RunnerUnavailable, trt_runner

    try:
        trt_runner(onnx_path, engine, shapes or DEFAULT_SHAPES, out_dir)
    except RunnerUnavailable as exc:
        return str(exc)
    return None


def not_checked_report(onnx_path: Path, metadata: dict[str, str], precision: str, atol: float, rtol: float,
                       source: str, reason: str, start: float, out_dir: Path) -> ValidationReport:
    """The report of a validation whose engine cannot run here, written as report.json like any other."""
    report = ValidationReport(onnx=str(onnx_path), onnx_sha256=file_sha256(onnx_path),
                              config=metadata.get(C.META_CONFIG, "unknown"),
                              weights=metadata.get(C.META_WEIGHTS, "unknown weights"), precision=precision,
                              reference="not run", atol=atol, rtol=rtol, tolerance_source=source, shapes=[],
                              replay_command=f"lama-deploy validate {onnx_path}")
    report.not_checked["tensorrt"] = reason
    report.notes.append("the ONNX Runtime comparison was not run either; drop --engine to check the ONNX alone")
    report.seconds = round(time.perf_counter() - start, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    report.files["report"] = str(out_dir / "report.json")
    write_report(report, report.files["report"])
    return report
