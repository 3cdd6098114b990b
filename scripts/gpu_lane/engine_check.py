"""TensorRT(-RTX) on this GPU, tried once: export, build an engine for the local GPU, run it against PyTorch.

    python3 -m scripts.gpu_lane.engine_check --out DIR [--budget-s 120] [--dry-run] [--big-lama]

Per exported form (the tiny config: the default fp32 `matmul` graph, and the dense fp16 `fourier-scaled`
graph with its padded spectrum; big-lama too with `--big-lama` when the budget leaves room): build time and
size, then on the GPU the engine's output against the PyTorch model (torch.fft, fp32) on seeded inputs,
compared the way `lama-deploy validate` compares with Polygraphy (max error statistic, a check passes when
the max absolute OR the max relative error is within the precision's tolerance), and its latency. Whatever
fails is recorded as its exact error text: on a data-centre GPU (compute capability 9.0, which
TensorRT-RTX's support matrix does not list) that error is the finding. With `--dry-run` (no GPU) the
engines are built ahead of time for compute capability 8.9 and not run. DIR/engine.json is rewritten after
every step, so the lane keeps what finished when it stops this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

#: (config, Fourier form, precision, fp16 policy) of the engines tried, in order.
FORMS = (("tiny", "matmul", "fp32", None), ("tiny", "matmul-dense", "fp16", "fourier-scaled"))
BIG_LAMA = (("big-lama", "matmul-dense", "fp16", "fourier-scaled"),)
#: (batch, height, width) compared; the engines' profile covers them.
SHAPES = ((1, 512, 512), (2, 256, 384))
#: Seconds a big-lama export + build needs at least (CPU export about a minute, build a few): else skipped.
BIG_LAMA_NEEDS_S = 240.0
DRY_RUN_TARGET = "8.9"


def _error(exc: BaseException) -> str:
    """The exception's full text (the finding itself), bounded."""
    text = f"{type(exc).__name__}: {str(exc).strip()}"
    return text[:3000]


def _write(out: Path, result: dict[str, Any]) -> None:
    tmp = out / ".engine.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / "engine.json")


def compare(output: Any, reference: Any, mask: Any, precision: str) -> dict[str, Any]:
    """Max/mean absolute and max relative error, hole mean in 1/255 levels, and the validate verdict."""
    import numpy as np

    from lama_deploy.export.validate import TOLERANCES

    atol, rtol = TOLERANCES[precision]
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    relative = diff / np.maximum(np.abs(reference.astype(np.float64)), 1e-12)
    hole = np.broadcast_to(mask > 0, diff.shape)
    max_abs, max_rel = float(diff.max()), float(relative.max())
    return {"max_abs": max_abs, "mean_abs": float(diff.mean()), "max_rel": max_rel,
            "hole_mean_255": round(float(diff[hole].mean()) * 255, 4) if hole.any() else 0.0,
            "finite": bool(np.isfinite(output).all()), "atol": atol, "rtol": rtol,
            "passed": bool(np.isfinite(output).all() and (max_abs <= atol or max_rel <= rtol))}


def _export(config: str, fourier: str, precision: str, policy: str | None, path: Path) -> dict[str, Any]:
    from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx

    start = time.monotonic()
    options = ExportOptions(precision=precision, fp16_policy=policy, fourier=fourier)
    export_inpainting_onnx(path, config=config, options=options, seed=0)
    return {"export_s": round(time.monotonic() - start, 1), "fourier_align": options.align}


def _build(onnx_path: Path, engine: Path, precision: str, dry_run: bool) -> dict[str, Any]:
    from lama_deploy.export.build_engine import BuildOptions, build_engine
    from lama_deploy.profiles import Profile

    batch, side = max(s[0] for s in SHAPES), max(max(s[1:]) for s in SHAPES)
    profile = Profile((1, 64, 64), (1, 512, 512), (batch, side, side))
    report = build_engine(onnx_path, engine, BuildOptions(profiles=[profile], precision=precision,
                                                          compute_capability=DRY_RUN_TARGET if dry_run else None))
    return {"build_s": report.seconds, "engine_mb": round(report.engine_bytes / 2**20, 1),
            "compute_capability": report.compute_capability, "tensorrt": f"{report.flavour} {report.tensorrt_version}"}


def _run(engine: Path, config: str, precision: str, repeats: int = 10) -> dict[str, Any]:
    """The engine against the PyTorch model (seed 0, torch.fft, fp32 on the GPU) on each shape, and its latency."""
    import torch

    from lama_deploy.runtime.backends.trt_backend import TensorRTBackend
    from lama_model import random_model
    from lama_model.synthetic import sample_batch

    model = random_model(config, seed=0).cuda().eval()
    checks = []
    with TensorRTBackend(engine, device="cuda") as backend:
        for batch, height, width in SHAPES:
            image, mask = sample_batch(batch, height, width, seed=height)
            with torch.inference_mode():
                reference = model(torch.from_numpy(image).cuda(), torch.from_numpy(mask).cuda()).float().cpu().numpy()
            feed = {"image": image, "mask": mask}
            output = backend.infer(feed)["inpainted"]
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                backend.infer(feed)
                times.append((time.perf_counter() - start) * 1e3)
            checks.append({"shape": f"{batch}x{height}x{width}", "latency_ms": round(statistics.median(times), 3),
                           **compare(output, reference, mask, precision)})
    return {"checks": checks, "passed": all(c["passed"] for c in checks)}


def run_check(out: Path, dry_run: bool = False, budget_s: float = 120.0, big_lama: bool = False) -> dict[str, Any]:
    """Every form of FORMS (and BIG_LAMA) exported, built and (on a GPU) compared; never raises."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"dry_run": dry_run, "rows": []}
    try:
        from lama_deploy.runtime.trt_import import flavour_of, import_tensorrt, version_of

        trt = import_tensorrt()
        result["tensorrt"] = f"{flavour_of(trt)} {version_of(trt)}"
    except Exception as exc:
        result["error"] = f"TensorRT not importable: {_error(exc)}"
        _write(out, result)
        return result
    forms = FORMS + (BIG_LAMA if big_lama else ())
    for config, fourier, precision, policy in forms:
        row: dict[str, Any] = {"config": config, "fourier": fourier, "precision": precision, "fp16_policy": policy}
        result["rows"].append(row)
        left = budget_s - (time.monotonic() - started)
        if config == "big-lama" and left < BIG_LAMA_NEEDS_S:
            row["skipped"] = f"{left:.0f} s of the engine budget left, big-lama needs about {BIG_LAMA_NEEDS_S:.0f} s"
            continue
        name = f"{config}-{fourier}-{precision}"
        for step, action in (("export", lambda: _export(config, fourier, precision, policy, out / f"{name}.onnx")),
                             ("build", lambda: _build(out / f"{name}.onnx", out / f"{name}.engine", precision, dry_run)),
                             ("run", lambda: _run(out / f"{name}.engine", config, precision))):
            if step == "run" and dry_run:
                row["run"] = "not run: dry run (no GPU); built ahead of time for compute capability " + DRY_RUN_TARGET
                break
            try:
                row.update(action())
            except Exception as exc:
                row[f"{step}_error"] = _error(exc)
                row[f"{step}_traceback"] = traceback.format_exc(limit=6)[-3000:]
                break
            finally:
                _write(out, result)
    result["seconds"] = round(time.monotonic() - started, 1)
    _write(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for engine.json, the ONNX files and engines")
    parser.add_argument("--budget-s", type=float, default=120.0, help="seconds for every form (default 120)")
    parser.add_argument("--dry-run", action="store_true", help="build for compute capability 8.9, run nothing")
    parser.add_argument("--big-lama", action="store_true", help="big-lama too, when the budget leaves room")
    args = parser.parse_args(argv)
    run_check(Path(args.out), args.dry_run, args.budget_s, args.big_lama)
    return 0


if __name__ == "__main__":
    sys.exit(main())
