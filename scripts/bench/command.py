"""Benchmark the deployment paths side by side: `lama-deploy bench` (or `python3 -m lama_deploy.scripts.bench`).

    lama-deploy bench                                  # big-lama, 256..2048, every backend here
    lama-deploy bench --sizes 512 --backends torch-fft,ort-cpu --repeats 5
    lama-deploy bench --quick --out /tmp/bench         # tiny model, seconds (tests)
    lama-deploy bench --docs docs/benchmarks.md        # also rewrite the docs page
    lama-deploy bench --device cuda --gpu-quick        # the GPU rows (gpu.py)

Every backend runs each (batch, size) cell in a fresh child process: warm-up, timed repeats (median,
p90, images/s), peak RSS of that process, then extra profiled runs for the share of time in the Fourier
units. Cells that would take longer than `--budget-s` (estimated from the smaller sizes) are skipped
and the table says so. Weights are seeded random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from lama_deploy import contract as C
from lama_deploy.errors import InputNotFound, UserError, cli_entry, missing_dependency
from lama_deploy.files import atomic_output

from . import report as R
from .backends import BACKENDS, BASELINE, BackendSpec, cpu_threads, run_cell_in_child, unavailable_reason

PROG = "lama-deploy bench"
#: The checkout root (installed: the lama_deploy package folder): cells' child processes import from here.
REPO = Path(__file__).resolve().parents[2]
DEFAULT_SIZES = "256,512,1024,2048"
QUICK = {"config": "tiny", "sizes": "64,128", "batch_at": 64, "repeats": 1, "warmup": 1, "budget_s": 60.0,
         "backends": "torch-fft,torch-matmul,ort-cpu,ort-cpu-plain,ort-cpu-dense,ort-cpu-dft"}
#: Latency grows about this fast with pixels when extrapolating a cell's cost from smaller sizes.
EXTRAPOLATION_EXPONENT = 1.15


def build_parser() -> argparse.ArgumentParser:
    from lama_model.configs import CONFIGS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="big-lama", help="model config (default big-lama)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"square sides, multiples of {C.SIZE_MULTIPLE} (default {DEFAULT_SIZES})")
    parser.add_argument("--batch", default="1,2", help="batch sizes; those > 1 run at --batch-at only (default 1,2)")
    parser.add_argument("--batch-at", type=int, default=512, help="side used for batch > 1 (default 512)")
    parser.add_argument("--backends", default="all", help=f"comma list or 'all' (default): {', '.join(BACKENDS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (default 5; fewer if over budget)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2: ONNX Runtime reaches its steady state on the third run)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="time budget per cell in seconds (default 300)")
    parser.add_argument("--share-runs", type=int, default=2, help="profiled runs for the Fourier share (default 2; 0 = off)")
    parser.add_argument("--threads", type=int, default=0, help="threads per backend (default: all available CPUs)")
    parser.add_argument("--no-speedups", action="store_true", help="export without export/speedups.py for ort-* backends")
    parser.add_argument("--out", default="bench-results", help="folder for bench.json, bench.png, benchmarks.md and exports")
    parser.add_argument("--docs", help="also write this Markdown page (e.g. docs/benchmarks.md)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    parser.add_argument("--resume", help="keep the timed cells of this bench.json / bench.partial.json, run the rest")
    parser.add_argument("--from-json", help="measure nothing: re-render table, targets, plot and pages from this bench.json")
    parser.add_argument("--quick", action="store_true", help="tiny model, sizes 64,128, batch 2 at 64, 1 repeat (tests, smoke runs)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu: the deployment backends "
                        "(default); cuda: the GPU rows (Fourier forms x fp16 policies, PyTorch backend modes)")
    parser.add_argument("--gpu-quick", action="store_true", help="with --device cuda: the GPU lane's plan: big-lama, "
                        "every form at 512 and the compared ones at 1024/2048, backend rows at batch 1/2/4/8, 5 repeats")
    return parser


# --- plan -------------------------------------------------------------------------------------------------------

def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} must list positive integers, not {text!r}")
    return values


def plan_cells(sizes: list[int], batches: list[int], batch_at: int) -> list[tuple[int, int]]:
    """(batch, size) cells, smallest work first so larger ones can be estimated from them."""
    for size in sizes + [batch_at]:
        if not C.is_valid_size(size, size):
            raise UserError(f"size {size} is not usable: {C.SIZE_RULE} (and at least {C.MIN_SIDE})")
    cells = {(1, size) for size in sizes} | {(batch, batch_at) for batch in batches if batch > 1}
    return sorted(cells, key=lambda cell: (cell[0] * cell[1] ** 2, cell[0]))


def select_backends(text: str) -> list[BackendSpec]:
    names = list(BACKENDS) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise UserError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    return [BACKENDS[n] for n in names]


def estimate_seconds(history: dict[tuple[int, int], float], batch: int, size: int) -> float | None:
    """One run's time, extrapolated from the largest measured cell of this backend (None: nothing yet)."""
    if not history:
        return None
    (b0, s0), t0 = max(history.items(), key=lambda item: item[0][0] * item[0][1] ** 2)
    work = (batch * size * size) / (b0 * s0 * s0)
    return t0 * work ** EXTRAPOLATION_EXPONENT if work > 1 else t0 * work


# --- models -----------------------------------------------------------------------------------------------------

def _source_digest() -> str:
    """Hash of the code an export depends on, so cached exports are rebuilt when it changes."""
    digest = hashlib.sha256()
    for folder in ("lama_model", "export"):
        for path in sorted((REPO / folder).glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepare_weights(config: str, seed: int, folder: Path) -> Path:
    import torch

    from lama_model import random_model

    path = folder / f"{config}-seed{seed}.pt"
    if not path.is_file():
        model = random_model(config, seed=seed)
        with atomic_output(path) as tmp:
            torch.save(model.state_dict(), tmp)
    return path


def _load_model(config: str, weights: Path):
    import torch

    from lama_model import InpaintingModel, build_generator

    model = InpaintingModel(build_generator(config))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def export_models(keys: set[str], config: str, weights: Path, folder: Path, speedups: bool) -> dict[str, str]:
    """The ONNX files the selected backends need, exported once and reused while the code is unchanged."""
    from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx

    recipes = {"matmul": ("matmul", "fp32", speedups), "matmul-plain": ("matmul", "fp32", False),
               "matmul-dense": ("matmul-dense", "fp32", speedups),
               "dft": ("dft", "fp32", speedups), "fp16": ("matmul", "fp16", speedups)}
    paths = {}
    for key in sorted(keys):
        fft, precision, fast = recipes[key]
        tag = hashlib.sha256(f"{config}|{weights.name}|{key}|{fast}|{_source_digest()}".encode()).hexdigest()[:10]
        path = folder / f"{config}-{key}-{tag}.onnx"
        if not path.is_file():
            model = _load_model(config, weights)
            export_inpainting_onnx(path, config=config, options=ExportOptions(precision=precision, fourier=fft, speedups=fast),
                                   model=model)
        paths[key] = str(path)
    return paths


# --- run ----------------------------------------------------------------------------------------------------------

def run_cells(specs: list[BackendSpec], cells: list[tuple[int, int]], job_base: dict[str, Any],
              budget_s: float, share_runs: int, gflops: dict[tuple[int, int], float], dft: dict,
              previous: dict[tuple[str, int, int], dict], checkpoint: Path) -> list[dict]:
    """Every cell of every backend; `previous` rows (from --resume) are kept instead of re-measured.

    The rows so far are written to `checkpoint` after each cell, so a crash loses nothing measured.
    """
    try:
        from tqdm import tqdm
    except ImportError:
        raise missing_dependency("tqdm", "pip install tqdm") from None
    rows: list[dict] = []
    history: dict[str, dict[tuple[int, int], float]] = {spec.name: {} for spec in specs}
    progress = tqdm(total=len(cells) * len(specs), desc="bench", unit="cell", file=sys.stderr)
    for batch, size in cells:
        for spec in specs:
            progress.set_postfix_str(f"{spec.name} {batch}x{size}")
            row = previous.get((spec.name, batch, size)) or _measured_row(
                spec, batch, size, job_base, budget_s, share_runs, estimate_seconds(history[spec.name], batch, size))
            row.update({"label": spec.label, "gflop": gflops[(batch, size)],
                        "dft_gflop": dft[(batch, size)] if spec.fourier == "matmul"
                        or spec.model in ("matmul", "matmul-plain", "fp16") else None})
            if row.get("times_s"):
                history[spec.name][(batch, size)] = statistics.median(row["times_s"])
            rows.append(row)
            with atomic_output(checkpoint) as tmp:
                tmp.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
            progress.update(1)
    progress.close()
    return rows


def _measured_row(spec: BackendSpec, batch: int, size: int, job_base: dict[str, Any], budget_s: float,
                  share_runs: int, estimate: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": spec.name, "batch": batch, "size": size}
    cost = None if estimate is None else estimate * (1 + job_base["warmup"])
    if cost is not None and cost > budget_s:
        row["skipped"] = f"skipped: est. {cost:.0f} s > budget {budget_s:.0f} s"
    else:
        row.update(_measure(spec, job_base, batch, size, budget_s, share_runs, estimate))
    return row


def load_previous(path: Path | None) -> dict[tuple[str, int, int], dict]:
    """Rows with timings from an earlier bench.json / bench.partial.json (errors and skips are re-run)."""
    if path is None:
        return {}
    if not path.is_file():
        raise InputNotFound(f"--resume file {path} not found")
    rows = json.loads(path.read_text()).get("rows", [])
    keep = {}
    for row in rows:
        if row.get("times_s") and "error" not in row:
            clean = {k: v for k, v in row.items() if k not in R.STAT_KEYS}
            keep[(row["backend"], row["batch"], row["size"])] = {**clean, "resumed_from": str(path)}
    return keep


def _measure(spec: BackendSpec, job_base: dict[str, Any], batch: int, size: int, budget_s: float,
             share_runs: int, estimate: float | None) -> dict[str, Any]:
    # Profiled runs cost as much as timed ones: fewer of them when the cell is expensive.
    runs = share_runs if estimate is None or estimate * share_runs * 4 < budget_s else min(share_runs, 1)
    job = {**job_base, "batch": batch, "size": size, "budget_s": budget_s, "share_runs": runs}
    expected = (estimate or 10.0) * (job["warmup"] + job["repeats"] + runs + 1)
    result = run_cell_in_child(spec, job, timeout_s=max(budget_s, expected) * 3 + 300)
    if "error" in result:
        return {"error": result["error"]}
    result["warmup_s"] = [round(t, 3) for t in result.get("warmup_s", [])]
    return result


def summarise(rows: list[dict]) -> None:
    """Add the reported statistics to each row with timings (the raw times stay, rounded), in place."""
    for row in rows:
        times = row.get("times_s")
        if times:
            row["times_s"] = [round(t, 4) for t in times]
            row.update(R.latency_stats(times, row["batch"], row["gflop"]))


METHOD = [
    "Each (backend, batch, size) cell runs in a fresh child process: load, warm-up runs, then timed runs "
    "(wall clock, `time.perf_counter`). median, p90 and min are over the timed runs; images/s = batch / median.",
    "Peak RSS: the child process's high-water mark (`VmHWM` in /proc/self/status): Python + framework + model "
    "+ activations of that backend alone.",
    "GFLOP: convolutions and transposed convolutions of the PyTorch model, counted by "
    "`torch.utils.flop_counter.FlopCounterMode` (2 FLOP per multiply-add, FFTs excluded; 440 GFLOP at 512x512 "
    "for big-lama); the same count for every backend, so GFLOP/s compare like with like. `dft_gflop` in the "
    "JSON counts the DFT-as-matmul products on top.",
    "FU share: ONNX Runtime backends: `SessionOptions.enable_profiling`, per-node minimum over the profiled runs, "
    "nodes whose name contains `/fu/` over all nodes; PyTorch backends: forward hooks on the Fourier units. "
    "Measured in extra runs, never in the timed ones.",
    "Cells whose estimated time (extrapolated from the smaller sizes with exponent 1.15) passes the per-cell "
    "budget are skipped and marked; a cell stops repeating when the next run would pass the budget.",
    "Targets use the median latencies of one run on one machine; the latency exponent is the least-squares "
    "slope of log(latency) against log(pixels) at batch 1 over the sizes 512..2048 that ran.",
]


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == build_parser().get_default(key):
                setattr(args, key, value)
    if args.repeats < 1 or args.warmup < 0 or args.budget_s <= 0:
        raise UserError("--repeats must be >= 1, --warmup >= 0 and --budget-s > 0")
    if args.device == "cuda":
        return _gpu_main(args, argv)
    sizes, batches = _int_list(args.sizes, "--sizes"), _int_list(args.batch, "--batch")
    cells = plan_cells(sizes, batches, args.batch_at)
    out = Path(args.out)
    if args.from_json:
        return _render_existing(Path(args.from_json), out, args)
    (out / "models").mkdir(parents=True, exist_ok=True)
    threads = args.threads or cpu_threads()
    report: dict[str, Any] = {"created_utc": R.created_utc(), "config": args.config,
                              "weights": f"{C.RANDOM_WEIGHTS_LABEL} (seed {args.seed})",
                              "speedups": not args.no_speedups, "machine": R.machine_info(threads),
                              "load_average": {"start": R.load_average()}, "method": METHOD}
    selected = select_backends(args.backends)
    print(f"{PROG}: {args.config} with random weights (seed {args.seed}): speed only, not inpainting quality",
          file=sys.stderr)
    specs, skipped = [], {}
    for spec in selected:
        reason = unavailable_reason(spec)
        if reason:
            skipped[spec.name] = reason
            print(f"{PROG}: skipping {spec.name}: {reason}", file=sys.stderr)
        else:
            specs.append(spec)
    if not specs:
        raise UserError("none of the requested backends can run here (reasons above)")
    report["skipped_backends"] = skipped

    weights = prepare_weights(args.config, args.seed, out / "models")
    model_keys = {spec.model for spec in specs if spec.model}
    models = export_models(model_keys, args.config, weights, out / "models", speedups=not args.no_speedups)
    gflops = {cell: R.model_gflop(args.config, *cell) for cell in cells}
    dft = {cell: R.dft_gflop(args.config, *cell) for cell in cells}
    job_base = {"repo": str(REPO), "config": args.config, "weights": str(weights), "models": models,
                "threads": threads, "repeats": args.repeats, "warmup": args.warmup, "seed": args.seed,
                "scratch": str(out / "models")}
    previous = load_previous(Path(args.resume) if args.resume else None)
    rows = run_cells(specs, cells, job_base, args.budget_s, args.share_runs, gflops, dft, previous,
                     out / "bench.partial.json")
    summarise(rows)
    report["rows"] = rows
    report["targets"] = R.evaluate_targets(rows, BASELINE)
    if args.quick:
        report["fp16_error"] = {"skipped": "--quick"}
    else:
        from .fp16 import fp16_dft_error

        report["fp16_error"] = fp16_dft_error(args.config, min(1024, max(sizes)), args.seed)
    report["load_average"]["end"] = R.load_average()
    argv = sys.argv[1:] if argv is None else argv
    report["command"] = " ".join([PROG] + [shlex.quote(a) for a in argv])
    return _write_outputs(report, out, args)


def _gpu_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The GPU rows (gpu.py); without CUDA the files say why they are empty."""
    from .gpu_report import GPU_QUICK, run_gpu_command

    if args.gpu_quick:
        for key, value in GPU_QUICK.items():
            if getattr(args, key) == build_parser().get_default(key):
                setattr(args, key, value)
    sizes, batches = _int_list(args.sizes, "--sizes"), _int_list(args.batch, "--batch")
    plan_cells(sizes, batches, args.batch_at)  # the size rule, checked once for both tables
    argv = sys.argv[1:] if argv is None else argv
    return run_gpu_command(args, sizes, batches, " ".join(["lama-deploy bench"] + [shlex.quote(a) for a in argv]))


def _render_existing(path: Path, out: Path, args: argparse.Namespace) -> int:
    """Targets and pages again from a finished run (the measurements are not touched)."""
    report = json.loads(path.read_text())
    if "forms" in report:  # a bench_gpu.json (e.g. from the GPU lane): its section goes into --docs
        from .gpu_report import write_gpu_outputs

        return write_gpu_outputs(report, out, args.docs, report.get("command", "lama-deploy bench --device cuda"))
    report["targets"] = R.evaluate_targets(report["rows"], BASELINE)
    out.mkdir(parents=True, exist_ok=True)
    return _write_outputs(report, out, args)


def _write_outputs(report: dict[str, Any], out: Path, args: argparse.Namespace) -> int:
    with atomic_output(out / "bench.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    title = f"{report['config']}, random weights, {report['machine']['cpu']}"
    with atomic_output(out / "bench.png") as tmp:
        R.write_plot(report["rows"], tmp, title)
    page = R.markdown_report(report, report["command"], "bench.png")
    with atomic_output(out / "benchmarks.md") as tmp:
        tmp.write_text(page)
    if args.docs:
        # The page and its plot side by side (docs/benchmarks.md + docs/benchmarks.png).
        docs = Path(args.docs)
        plot = docs.with_suffix(".png")
        with atomic_output(plot) as tmp:
            R.write_plot(report["rows"], tmp, title)
        kept = R.kept_notes(docs.read_text()) if docs.is_file() else ""
        with atomic_output(docs) as tmp:
            tmp.write_text(R.markdown_report(report, report["command"], plot.name) + kept)
    print(R.format_table(report["rows"]))
    print()
    print(R.format_targets(report["targets"]))
    print(f"\nwrote {out / 'bench.json'}, {out / 'bench.png'}, {out / 'benchmarks.md'}"
          + (f", {args.docs}" if args.docs else ""))
    return 0
