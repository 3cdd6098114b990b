"""Runners of `lama-deploy validate`: ONNX Runtime providers and a TensorRT engine, run and compared.

A runner the user asked for (`--providers`, `--engine`) that cannot run is recorded in
`report.not_checked` (verdict NOT CHECKED, exit 1); only runners the user did not ask for may be
`report.skipped`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import UsageError, one_line, user_message
from lama_deploy.host import cuda_device_count

from .validation_report import ShapeResult, ValidationReport, error_stats, format_shape

ORT_PROVIDERS = {"CPUExecutionProvider": "onnxrt-cpu", "CUDAExecutionProvider": "onnxrt-cuda",
                 "TensorrtExecutionProvider": "onnxrt-tensorrt"}
REFERENCE_RUNNER = "pytorch-ref"
GPU_SKIP_REASON = "needs an NVIDIA GPU and TensorRT runtime"


class RunnerUnavailable(Exception):
    """A runner cannot run on this machine; the message says why in one line."""


@dataclass
class Runner:
    polygraphy_runner: object
    profile: tuple | None      # engine profile (min NHW, max NHW), None = any shape
    requested: bool            # the user named it: failing to run it is a failure, not a skip


def _unavailable(report: ValidationReport, name: str, reason: str, requested: bool) -> None:
    (report.not_checked if requested else report.skipped)[name] = reason


def ort_runners(report: ValidationReport, onnx_path: Path, providers: list[str] | None) -> list[Runner]:
    import onnxruntime
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    available = onnxruntime.get_available_providers()
    runners = []
    for provider in providers or [p for p in ORT_PROVIDERS if p in available]:
        if provider not in onnxruntime.get_all_providers():
            raise UsageError(f"--providers {provider} is not an ONNX Runtime provider (this install has "
                             f"{', '.join(available)})")
        name = ORT_PROVIDERS.get(provider, provider)
        if provider not in available:
            _unavailable(report, name, f"ONNX Runtime provider {provider} is not available here "
                                       f"({', '.join(available)})", requested=True)
            continue
        runner = OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=[provider]), name=name)
        runners.append(Runner(runner, None, requested=providers is not None))
    return runners


def _engine_profile(onnx_path: Path, engine: str | None, shapes, out_dir: Path, trt) -> tuple[str, dict]:
    """(engine path, its sidecar), building one over the validation shapes when none is given."""
    from lama_deploy.runtime.trt_import import flavour_of

    from lama_deploy.engine_sidecar import K_ONNX_SHA256, verify_sidecar
    from lama_deploy.files import file_sha256
    from lama_deploy.profiles import Profile

    from .build_engine import BuildOptions, build_engine

    if engine is None:
        lo = tuple(min(s[i] for s in shapes) for i in range(3))
        hi = tuple(max(s[i] for s in shapes) for i in range(3))
        opt = tuple(min(max(v, lo[i]), hi[i]) for i, v in enumerate((1, 512, 512)))
        engine = str(out_dir / "validate.engine")
        build_engine(onnx_path, engine, BuildOptions(profiles=[Profile(lo, opt, hi)], flavour=flavour_of(trt)))
    sidecar = verify_sidecar(engine)
    if sidecar.get(K_ONNX_SHA256) != file_sha256(onnx_path):
        raise RunnerUnavailable(f"{Path(engine).name} was built from another ONNX (sha256 in its sidecar differs "
                                f"from {onnx_path.name}); rebuild it with `lama-deploy build` or pass the matching ONNX")
    return engine, sidecar


def trt_runner(onnx_path: Path, engine: str | None, shapes, out_dir: Path) -> Runner:
    """The TensorRT runner, or RunnerUnavailable saying why it cannot run here."""
    requested = engine is not None
    if requested:
        from lama_deploy.engine_sidecar import verify_sidecar

        try:
            verify_sidecar(engine)  # a broken engine is reported as such, GPU or not
        except Exception as exc:
            raise RunnerUnavailable(user_message(exc) or one_line(exc)) from None
    try:
        from lama_deploy.runtime.trt_import import flavour_of, import_tensorrt
        trt = import_tensorrt()
    except ImportError:
        raise RunnerUnavailable(GPU_SKIP_REASON + " (TensorRT is not installed)") from None
    if cuda_device_count() == 0:
        raise RunnerUnavailable(GPU_SKIP_REASON + " (no NVIDIA GPU/driver found)")
    from lama_deploy.engine_sidecar import sidecar_profiles

    engine, sidecar = _engine_profile(onnx_path, engine, shapes, out_dir, trt)
    profile = sidecar_profiles(sidecar)[0]  # TrtRunner uses the engine's first profile
    if flavour_of(trt) == "tensorrt_rtx":
        os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    runner = TrtRunner(EngineFromBytes(Path(engine).read_bytes()), name="tensorrt")
    return Runner(runner, (profile.min, profile.max), requested=requested)


def collect_runners(report: ValidationReport, onnx_path: Path, providers, engine, use_tensorrt: bool, shapes,
                    out_dir: Path) -> list[Runner]:
    """The runners that can run here; the others go to `report.not_checked` (asked for) or `report.skipped`."""
    runners = ort_runners(report, onnx_path, providers)
    if not use_tensorrt:
        report.skipped["tensorrt"] = "not requested (--no-tensorrt)"
        return runners
    try:
        runners.append(trt_runner(onnx_path, engine, shapes, out_dir))
    except RunnerUnavailable as exc:
        _unavailable(report, "tensorrt", str(exc), requested=engine is not None)
    return runners


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


def run_and_compare(report: ValidationReport, runner: Runner, feeds, names: list[str], ref_results,
                    out_dir: Path) -> None:
    """Run one runner on the feeds its profile covers, save its outputs, compare with the reference."""
    name = runner.polygraphy_runner.name
    shapes = [(f[C.IMAGE].shape[0], f[C.IMAGE].shape[2], f[C.IMAGE].shape[3]) for f in feeds]
    indices = [i for i, s in enumerate(shapes) if runner.profile is None or _in_profile(s, runner.profile)]
    if not indices:
        _unavailable(report, name, "no validation shape inside the engine's profile", runner.requested)
        return
    try:
        results, accuracy = _run(report, runner.polygraphy_runner, [feeds[i] for i in indices],
                                 [ref_results[0][1][i] for i in indices], out_dir)
    except Exception as exc:  # a runner that fails to run (bad engine, out of memory) is a failed check
        report.not_checked[name] = f"failed to run: {type(exc).__name__}: {one_line(exc)}"
        return
    for iteration, (index, passed) in enumerate(zip(indices, _verdicts(accuracy))):
        out = results[0][1][iteration][C.OUTPUT]
        ref = ref_results[0][1][index][C.OUTPUT]
        max_abs, mean_abs, psnr = error_stats(out, ref, feeds[index][C.MASK])
        passed = passed and bool(np.isfinite(max_abs))  # never let a NaN output pass
        report.results.append(ShapeResult(name, format_shape(ref.shape), max_abs, mean_abs, psnr, passed,
                                          names[index]))


def _run(report: ValidationReport, runner, feeds, reference_iterations, out_dir: Path):
    from polygraphy.comparator import Comparator, RunResults

    results = Comparator.run([runner], data_loader=feeds)
    outputs_path = out_dir / f"outputs_{runner.name}.json"
    results.save(str(outputs_path))
    report.files[runner.name] = str(outputs_path)
    reference = RunResults()
    reference.append((REFERENCE_RUNNER, reference_iterations))
    results.extend(reference)
    accuracy = Comparator.compare_accuracy(results, comparisons=[(0, 1)],
                                           compare_func=compare_func(report.atol, report.rtol))
    return results, accuracy
