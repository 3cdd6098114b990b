"""Numbers, table, JSON report and replay command of `lama-deploy validate` (numpy only)."""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ShapeResult:
    """One runner on one input batch, against the PyTorch reference."""

    runner: str
    shape: str                      # NxHxW
    max_abs: float
    mean_abs: float
    hole_psnr_db: float | None      # PSNR inside the hole vs the reference; None = identical
    passed: bool
    input: str = ""                 # the user's image file name, or "synthetic"


@dataclass
class ValidationReport:
    onnx: str
    onnx_sha256: str
    config: str
    weights: str
    precision: str
    reference: str
    atol: float
    rtol: float
    tolerance_source: str
    shapes: list[str]
    results: list[ShapeResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)        # runners not asked for that cannot run here
    not_checked: dict[str, str] = field(default_factory=dict)    # runners asked for that did not run: a failure
    files: dict[str, str] = field(default_factory=dict)
    replay_command: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results) and not self.not_checked

    @property
    def verdict(self) -> str:
        """PASSED, FAILED (n of m comparisons) or NOT CHECKED (runner: reason): one line."""
        failed = sum(not r.passed for r in self.results)
        if failed or (not self.results and not self.not_checked):
            return f"FAILED ({failed} of {len(self.results)} comparisons)"
        if self.not_checked:
            runner, reason = next(iter(self.not_checked.items()))
            more = f" (+{len(self.not_checked) - 1} more runners)" if len(self.not_checked) > 1 else ""
            return f"NOT CHECKED: {runner}: {reason}{more}"
        return "PASSED"

    def as_dict(self) -> dict:
        """JSON-safe: NaN/inf errors (an fp16 overflow, say) become the strings "nan"/"inf"."""
        data = asdict(self)
        for result in data["results"]:
            for key in ("max_abs", "mean_abs", "hole_psnr_db"):
                value = result[key]
                if isinstance(value, float) and not math.isfinite(value):
                    result[key] = str(value)
        data["passed"] = self.passed
        data["verdict"] = self.verdict
        return data


def format_shape(shape: tuple[int, ...]) -> str:
    """NxHxW of an NCHW shape."""
    return f"{shape[0]}x{shape[2]}x{shape[3]}"


def error_stats(output: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> tuple[float, float, float | None]:
    """(max |diff|, mean |diff|, PSNR in dB of the hole region) for outputs in 0..1."""
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    hole = np.broadcast_to(mask > 0, diff.shape)
    mse = float(np.mean(diff[hole] ** 2)) if hole.any() else float(np.mean(diff**2))
    psnr = None if mse == 0 else 10 * math.log10(1.0 / mse)
    return float(diff.max()), float(diff.mean()), psnr


def replay_command(onnx_path: str | Path, inputs: str | Path, reference: str | Path, atol: float, rtol: float,
                   providers: str = "cpu") -> str:
    """The `polygraphy run` line that repeats the ONNX Runtime check by hand."""
    parts = ["polygraphy", "run", str(onnx_path), "--onnxrt", "--providers", providers,
             "--load-inputs", str(inputs), "--load-outputs", str(reference),
             "--atol", f"{atol:g}", "--rtol", f"{rtol:g}", "--check-error-stat", "max"]
    return " ".join(shlex.quote(p) for p in parts)


def format_table(report: ValidationReport) -> str:
    width = max([len("input")] + [len(r.input) for r in report.results])
    header = (f"{'input':<{width}} {'shape':<12} {'runner':<16} {'max abs err':>12} {'mean abs err':>13} "
              f"{'hole PSNR':>10}  result")
    lines = [header, "-" * len(header)]
    for r in report.results:
        psnr = "exact" if r.hole_psnr_db is None else f"{r.hole_psnr_db:.1f} dB"
        lines.append(f"{r.input:<{width}} {r.shape:<12} {r.runner:<16} {r.max_abs:>12.3e} {r.mean_abs:>13.3e} "
                     f"{psnr:>10}  {'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)


def format_summary(report: ValidationReport) -> str:
    lines = [f"validate {report.onnx} ({report.config}, {report.precision}; {report.weights})",
             f"reference: {report.reference}",
             f"tolerance: atol {report.atol:g}, rtol {report.rtol:g}, max error statistic ({report.tolerance_source})"]
    for runner, reason in report.skipped.items():
        lines.append(f"skipped {runner} (not asked for): {reason}")
    for runner, reason in report.not_checked.items():
        lines.append(f"NOT CHECKED {runner}: {reason}")
    lines.append(format_table(report))
    lines.extend(f"note: {note}" for note in report.notes)
    for what, path in report.files.items():
        lines.append(f"{what:<10} {path}")
    lines.append("replay the ONNX Runtime check by hand:")
    lines.append(f"  {report.replay_command}")
    skipped = f" (skipped: {', '.join(report.skipped)})" if report.skipped and report.passed else ""
    if report.not_checked:  # the reason ends in advice: the duration goes before it, not glued to it
        lines.append(report.verdict.replace("NOT CHECKED: ", f"NOT CHECKED after {report.seconds:.1f} s: ", 1))
    else:
        lines.append(f"{report.verdict}{skipped} in {report.seconds:.1f} s")
    return "\n".join(lines)


def write_report(report: ValidationReport, path: str | Path) -> None:
    from lama_deploy.files import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report.as_dict(), indent=2, allow_nan=False) + "\n")
