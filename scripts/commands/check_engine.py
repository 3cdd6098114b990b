"""`lama-deploy check-engine`: check a TensorRT engine where it runs (a Jetson), with numpy and TensorRT alone.

    lama-deploy validate lama.onnx --shapes 1x512x512 --out-dir reference/     # on the host (PyTorch)
    lama-deploy check-engine lama.engine --reference reference/                 # on the device

The reference folder is what `lama-deploy validate --out-dir` writes: `inputs.json` (Polygraphy feed dicts),
`reference.json` (Polygraphy RunResults of the PyTorch model) and `report.json` (precision and tolerances),
so `polygraphy run lama.engine --load-inputs inputs.json --load-outputs reference.json` replays the same
check where Polygraphy is installed. No sidecar is needed: the engine's facts (TensorRT version, I/O
dtypes, profile, device memory) are read from the engine itself, so `trtexec` engines work as they are.
Verdicts: PASSED (exit 0); FAILED with the comparisons that failed (exit 1); NOT CHECKED with the reason
(exit 1: the engine could not run here, or no reference shape fits its profile).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import EXIT_FAILED, EXIT_OK, InputNotFound, UserError, cli_entry
from lama_deploy.polygraphy_json import read_feeds, read_run_results

PROG = "lama-deploy check-engine"
# Used when the reference folder has no report.json (files made by hand with Polygraphy): validate's fp32.
DEFAULT_TOLERANCE = (1e-4, 1e-3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Check an engine against reference inputs/outputs "
                                     "saved on the host by `lama-deploy validate --out-dir DIR`.")
    parser.add_argument("engine", help="serialized TensorRT engine (.engine/.plan; a sidecar is not needed)")
    parser.add_argument("--reference", required=True, metavar="DIR",
                        help="folder with inputs.json, reference.json (and report.json) from `lama-deploy validate`")
    parser.add_argument("--device", default=None, help="cuda[:N] (default cuda:0)")
    parser.add_argument("--atol", type=float, help="absolute tolerance on the max error (default: report.json's)")
    parser.add_argument("--rtol", type=float, help="relative tolerance on the max error (default: report.json's)")
    parser.add_argument("--report", metavar="PATH", help="also write the result as JSON")
    return parser


def load_reference(folder: Path) -> Tuple[List[Dict[str, np.ndarray]], List[np.ndarray], Dict[str, Any]]:
    """(feeds, reference outputs, validate's report or {}) of a reference folder."""
    if not folder.is_dir():
        raise InputNotFound(f"reference folder {folder} not found; make it on the host with "
                            f"`lama-deploy validate MODEL.onnx --out-dir {folder}`")
    feeds = read_feeds(folder / "inputs.json")
    runs = read_run_results(folder / "reference.json")
    if not runs:
        raise UserError(f"{folder / 'reference.json'} holds no runner's results")
    outputs = [iteration.get(C.OUTPUT) for iteration in runs[0][1]]
    if len(outputs) != len(feeds) or any(o is None for o in outputs):
        raise UserError(f"{folder} has {len(feeds)} inputs but {len(outputs)} reference outputs named "
                        f"{C.OUTPUT!r}; save both again with `lama-deploy validate --out-dir`")
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return feeds, outputs, report


def compare(output: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> Dict[str, Any]:
    """Max abs/rel error; passes when either is within its tolerance (Polygraphy's max error statistic)."""
    if output.shape != reference.shape:
        return {"passed": False, "max_abs": None, "max_rel": None,
                "problem": f"shape {output.shape} != reference {reference.shape}"}
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(reference.astype(np.float64)), 1e-12)).max()) if diff.size else 0.0
    passed = math.isfinite(max_abs) and (max_abs <= atol or max_rel <= rtol)
    return {"passed": passed, "max_abs": max_abs, "max_rel": max_rel}


def check_engine(engine: str | Path, reference_dir: str | Path, device: Optional[str] = None,
                 atol: Optional[float] = None, rtol: Optional[float] = None) -> Dict[str, Any]:
    """The whole check as a JSON-safe dict with a one-line `verdict`."""
    from lama_deploy.runtime.backends.trt_backend import TensorRTBackend

    feeds, references, report = load_reference(Path(reference_dir))
    atol = float(report.get("atol", DEFAULT_TOLERANCE[0])) if atol is None else atol
    rtol = float(report.get("rtol", DEFAULT_TOLERANCE[1])) if rtol is None else rtol
    result: Dict[str, Any] = {"engine": str(engine), "reference": str(reference_dir), "atol": atol, "rtol": rtol,
                              "precision": report.get("precision"), "weights": report.get("weights"),
                              "comparisons": [], "not_checked": []}
    backend = TensorRTBackend(engine, device=device)
    try:
        backend.activate()
    except (UserError, RuntimeError) as exc:  # no GPU, no libcudart, another TensorRT: the engine did not run
        result["verdict"] = f"NOT CHECKED: the engine cannot run here: {str(exc).splitlines()[0]}"
        return result
    try:
        result["facts"] = dict(backend.describe(), profile=backend.profile.as_dict())
        for feed, reference in zip(feeds, references):
            n, _, h, w = feed[C.IMAGE].shape
            shape = f"{n}x{h}x{w}"
            if not fits(backend.profile, (n, h, w)):
                result["not_checked"].append(f"{shape}: outside the engine's profile")
                continue
            output = backend.infer({C.IMAGE: feed[C.IMAGE], C.MASK: feed[C.MASK]})[C.OUTPUT]
            result["comparisons"].append(dict(compare(output, reference, atol, rtol), shape=shape))
    finally:
        backend.deactivate()
    result["verdict"] = verdict(result)
    return result


def fits(profile: Any, nhw: Tuple[int, int, int]) -> bool:
    """Whether an N x H x W lies inside the engine's profile (None bounds are open)."""
    return all((low is None or value >= low) and (high is None or value <= high)
               for value, low, high in zip(nhw, profile.min, profile.max))


def verdict(result: Dict[str, Any]) -> str:
    failed = [c["shape"] for c in result["comparisons"] if not c["passed"]]
    if failed:
        return f"FAILED ({len(failed)} of {len(result['comparisons'])} comparisons: {', '.join(failed)})"
    if not result["comparisons"]:
        reason = result["not_checked"][0] if result["not_checked"] else "the reference has no inputs"
        return f"NOT CHECKED: no reference shape could run ({reason}); save references for the engine's profile"
    return "PASSED"


def format_result(result: Dict[str, Any]) -> str:
    facts = result.get("facts", {})
    lines = []
    if facts:
        memory = facts.get("device_memory_bytes")
        lines.append(f"engine      {result['engine']}: {facts.get('flavour')} {facts.get('tensorrt')}, profile "
                     f"{facts.get('profile')}, device memory "
                     f"{'%.1f MiB' % (memory / 2**20) if memory is not None else 'not reported'}")
    lines.append(f"tolerance   atol {result['atol']:g}, rtol {result['rtol']:g} (max error statistic)")
    for c in result["comparisons"]:
        errors = (f"max |diff| {c['max_abs']:.3g}, max rel {c['max_rel']:.3g}" if c["max_abs"] is not None
                  else c["problem"])
        lines.append(f"{c['shape']:<11} {'ok  ' if c['passed'] else 'FAIL'} {errors}")
    lines.extend(f"{line} (not checked)" for line in result["not_checked"])
    if result.get("weights") and "random" in str(result["weights"]):
        lines.append("random weights: this checks the engine's plumbing, not inpainting quality")
    lines.append(result["verdict"])
    return "\n".join(lines)


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.engine).is_file():
        raise InputNotFound(f"engine {args.engine} not found")
    result = check_engine(args.engine, args.reference, args.device, args.atol, args.rtol)
    print(format_result(result))
    if args.report:
        from lama_deploy.files import atomic_output

        with atomic_output(args.report) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()
    return EXIT_OK if result["verdict"] == "PASSED" else EXIT_FAILED
