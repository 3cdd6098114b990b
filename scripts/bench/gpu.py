"""GPU rows of `lama-deploy bench --device cuda`: Fourier forms x precision policies, and PyTorch-backend modes.

Everything runs through the PyTorch backend (`TorchBackend` + its `CudaExecutor`), so the benchmark times
the code users run. Two tables, each a plan of cells (`form_plan`, `backend_plan`) measured in order:

- **Fourier forms**: for each form in `lama_model.FOURIER_MODES` and with the Fourier units removed (the
  floor: each unit returns zeros of its input's shape), in fp32 (TF32 off) and in fp16 under each safety
  policy: GPU time of one CUDA-graph replay and of one eager forward (CUDA events, median), the
  Fourier-unit share `(t_form - t_floor) / t_form` of the graph time, and the hot-weight error (the
  trained-like weights' hole mean |fp16 - fp32 torch.fft| in 1/255 levels, non-finite fraction). Variants
  isolate the levers of the DFT-as-matmul forms under `fourier-scaled`: `unpadded` (spectrum width not
  padded to a multiple of 8) and `no basis cache` (every forward rebuilds its DFT bases, as before the
  eager cache). With `grid="quick"` sizes after the first measure only the forms the targets compare.
- **PyTorch backend**: end-to-end `backend.infer` latency (host copies included), images/s, first call
  (capture, compile) and peak GPU memory per cell. Batch scaling (1/2/4/8, fp32 and fp16, graphs; eager at
  1 and 4), the fp32 batch-4 diagnosis (cuDNN autotuner on/off x TF32 on/off x eager/graphs), the unmeasured
  fix candidate (`cudnn_benchmark=True`) over the batches, and `torch.compile` rows.

Without CUDA every row is skipped with its reason; a cell that fails records its error line and the run
goes on; cells past the time budget are skipped and say so, and a backend cell stops repeating after
`CELL_CAP_S`. Rows so far are written to a checkpoint file after every cell (a killed run keeps them).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from lama_deploy import contract as C

FLOOR = "none"
NO_CUDA = "needs an NVIDIA GPU (torch.cuda.is_available() is False)"
#: Seconds a backend cell keeps repeating (at least one timed run): an anomalous fp32 batch takes seconds.
CELL_CAP_S = 8.0
#: Variants of the DFT-as-matmul forms under `fourier-scaled` at the first size: each removes one lever.
VARIANTS = ("unpadded", "no basis cache")


@dataclass(frozen=True)
class FormCell:
    size: int
    form: str
    precision: str
    policy: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class BackendCell:
    batch: int
    size: int
    graphs: bool
    precision: str
    compile: str = "off"
    cudnn_benchmark: bool | None = None     # None: torch's default (off)
    tf32: bool = False
    purpose: str = "batch scaling"

    @property
    def mode(self) -> str:
        parts = ["graphs" if self.graphs else "eager", self.precision]
        if self.compile != "off":
            parts.append(f"compile {self.compile}")
        if self.cudnn_benchmark is not None:
            parts.append(f"cudnn.benchmark {'on' if self.cudnn_benchmark else 'off'}")
        if self.tf32:
            parts.append("TF32")
        return " ".join(parts)


def cuda_skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs torch"
    return None if torch.cuda.is_available() else NO_CUDA


def precisions() -> list[tuple[str, str | None]]:
    """(precision, policy): fp32, then fp16 under every policy this lama_model offers."""
    from lama_deploy.runtime.backends.pytorch.precision import fp16_policies

    return [("fp32", None)] + [("fp16", policy) for policy in fp16_policies()]


# --- plans -------------------------------------------------------------------------------------------------------

def form_plan(sizes: list[int], grid: str = "full") -> list[FormCell]:
    """Every form x precision (+ floor) at each size ("full"), or at the first size only ("quick"; later
    sizes: the cuFFT model, both DFT-as-matmul forms under `fourier-scaled` and its floor, what the
    targets compare). The variants run at the first size."""
    from lama_model import FOURIER_MODES

    cells: list[FormCell] = []
    for index, size in enumerate(sizes):
        if grid == "full" or index == 0:
            cells += [FormCell(size, form, precision, policy) for precision, policy in precisions()
                      for form in FOURIER_MODES + (FLOOR,)]
        else:
            cells += [FormCell(size, "torch", "fp16", C.DEFAULT_FP16_POLICY)]
            cells += [FormCell(size, form, "fp16", "fourier-scaled") for form in ("matmul", "matmul-dense", FLOOR)]
        if index == 0 and "fourier-scaled" in dict(precisions()).values():
            cells += [FormCell(size, form, "fp16", "fourier-scaled", variant) for variant in VARIANTS
                      for form in ("matmul-dense", "matmul")]
    return cells


def backend_plan(batches: list[int], size: int, grid: str = "full",
                 compile_modes: tuple[str, ...] | None = None) -> list[BackendCell]:
    """Batch scaling, the fp32 batch-4 diagnosis, the cuDNN-autotuner candidate, then torch.compile (modes:
    `compile_modes`, default "default" for the quick grid and both for the full one)."""
    cells = [BackendCell(b, size, graphs, precision) for b in batches for graphs, precision in
             ((False, "fp32"), (False, "fp16"), (True, "fp32"), (True, "fp16")) if graphs or b in (1, 4) or grid == "full"]
    probe = 4 if 4 in batches else max(batches)
    for graphs in (False, True):
        for benchmark in (False, True):
            for tf32 in (False, True):
                if benchmark or tf32:  # (off, off) is the batch-scaling row itself
                    cells.append(BackendCell(probe, size, graphs, "fp32", cudnn_benchmark=benchmark, tf32=tf32,
                                             purpose="fp32 batch diagnosis"))
    cells += [BackendCell(b, size, True, "fp32", cudnn_benchmark=True, purpose="fix candidate") for b in batches if b != probe]
    if compile_modes is None:
        compile_modes = ("default",) if grid == "quick" else ("default", "max-autotune")
    cells += [BackendCell(1, size, True, "fp16", compile=mode, purpose="torch.compile") for mode in compile_modes]
    cells += [BackendCell(1, size, False, "fp16", compile=mode, purpose="torch.compile") for mode in compile_modes[:1]]
    return cells


# --- models --------------------------------------------------------------------------------------------------

def remove_fourier_units(model: Any) -> Any:
    """The floor: every FourierUnit returns zeros of its input's shape (the rest of the model unchanged)."""
    import torch

    from lama_deploy.runtime.backends.pytorch.precision import fourier_units

    def zeros(x: Any) -> Any:
        return torch.zeros_like(x)

    zeros.lama_fp32_island = True  # nothing to protect: the fp32 policy leaves it alone
    for unit in fourier_units(model):
        unit.forward = zeros
    return model


def model_variant(base: Any, form: str) -> Any:
    from lama_model import set_fourier_mode

    model = copy.deepcopy(base)
    if form == FLOOR:
        # The floor's units never run their transform; a DFT-as-matmul form keeps every fp16 policy valid for it.
        return remove_fourier_units(set_fourier_mode(model, "matmul-dense"))
    return set_fourier_mode(model, form)


def make_backend(model: Any, device: str, precision: str, policy: str | None, graphs: bool, **options: Any) -> Any:
    from lama_deploy.runtime.backends.pytorch.backend import TorchBackend

    backend = TorchBackend(model, device=device, weights="bench", precision=precision, fp16_policy=policy,
                           cuda_graphs=graphs, graph_cache=2, **options)
    backend.activate()
    return backend


def spectrum_align(model: Any) -> int | None:
    """The spectrum padding the model's DFT-as-matmul units run with (None: torch.fft or no units)."""
    aligns = {getattr(m, "align", None) for m in model.modules() if type(m).__name__ in ("MatmulDFT", "DenseMatmulDFT")}
    return aligns.pop() if len(aligns) == 1 else None


# --- timing ------------------------------------------------------------------------------------------------------

def gpu_times_ms(torch: Any, run: Callable[[], Any], stream: Any, repeats: int) -> list[float]:
    """GPU time of `run` on `stream`, one CUDA-event pair per repeat."""
    times = []
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            run()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
    return times


def wall_times_ms(run: Callable[[], Any], repeats: int, cap_s: float | None = None) -> list[float]:
    """Wall time of `run`, `repeats` times or until `cap_s` seconds have passed (at least once)."""
    times: list[float] = []
    began = time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
        if cap_s is not None and time.perf_counter() - began > cap_s:
            break
    return times


def hole_error(output: Any, reference: Any, mask: Any) -> dict[str, Any]:
    """Hole mean |output - reference| in 1/255 levels, and the non-finite fraction of the output."""
    import numpy as np

    finite = np.isfinite(output)
    hole = np.broadcast_to(mask > 0, output.shape)
    diff = np.abs(np.where(finite, output, 0.0) - reference)[hole]
    return {"hole_mean_255": round(float(diff.mean()) * 255, 4) if diff.size else 0.0,
            "hole_max": round(float(diff.max()), 5) if diff.size else 0.0,
            "non_finite": round(float(1 - finite.mean()), 6)}


def _error_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


#: A torch.compile cell starts only with this much of the budget left: its first call (the compile) cannot be
#: cut short. A guess (big-lama's inductor compile is expected to take about a minute), not a measurement.
COMPILE_RESERVE_S = 90.0


class Clock:
    """The run's time budget: cells after the deadline (less `reserve_s`) are skipped, not started."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        self.reserve_s = 0.0

    def expired(self) -> str | None:
        left = self.deadline - time.monotonic()
        if left >= self.reserve_s:
            return None
        if self.reserve_s:
            return f"skipped: {left:.0f} s of the GPU time budget left, a compile cell needs {self.reserve_s:.0f} s"
        return f"skipped: past the GPU time budget ({self.budget_s:.0f} s)"


# --- the run -----------------------------------------------------------------------------------------------------

def run_gpu_bench(config: str, sizes: list[int], batches: list[int], batch_at: int, repeats: int, seed: int,
                  budget_s: float = 300.0, device: str = "cuda", grid: str = "full",
                  checkpoint: Path | None = None, compile_modes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Both GPU tables; `{"skipped": reason}` without CUDA. `checkpoint` gets the rows so far after every cell."""
    reason = cuda_skip_reason()
    if reason:
        return {"skipped": reason, "forms": [], "backend": []}
    import torch

    from lama_model import random_model
    from lama_model.synthetic import sample_batch

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are exact fp32 (the DFT-as-matmul needs it)
    torch.backends.cudnn.allow_tf32 = False
    clock = Clock(budget_s)
    started = time.monotonic()
    base = random_model(config, seed=seed, trained_like=True)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(torch.device(device)), "torch": torch.__version__,
                              "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "config": config,
                              "model_build_s": round(time.monotonic() - started, 1), "tf32": False,
                              "repeats": repeats, "grid": grid, "forms": [], "backend": []}

    def save() -> None:
        if checkpoint is not None:
            from lama_deploy.files import atomic_output

            with atomic_output(checkpoint) as tmp:
                tmp.write_text(json.dumps({**report, "partial": True}, indent=1) + "\n")

    feeds: dict[tuple[int, int], dict] = {}

    def feed(batch: int, size: int) -> dict:
        if (batch, size) not in feeds:
            image, mask = sample_batch(batch, size, size, seed=seed)
            feeds[(batch, size)] = {"image": image, "mask": mask}
        return feeds[(batch, size)]

    plan = form_plan(sizes, grid)
    cells = backend_plan(batches, batch_at, grid, compile_modes)
    references: dict[int, Any] = {}  # fp32 torch.fft outputs per size, for the fp16 rows' error
    # In order of what the budget should keep: the first size's grid (the 512 target), the backend rows (batch
    # anomaly), the larger sizes, then torch.compile (its first call cannot be cut short).
    form_rows(torch, base, [c for c in plan if c.size == sizes[0]], feed, references, repeats, clock, device,
              report["forms"], save)
    backend_rows(torch, base, [c for c in cells if c.compile == "off"], feed, repeats, clock, device,
                 report["backend"], save)
    form_rows(torch, base, [c for c in plan if c.size != sizes[0]], feed, references, repeats, clock, device,
              report["forms"], save)
    clock.reserve_s = COMPILE_RESERVE_S
    backend_rows(torch, base, [c for c in cells if c.compile != "off"], feed, repeats, clock, device,
                 report["backend"], save)
    report["speedup_graphs_fp16_vs_eager_fp32"] = speedup(report["backend"], batch_at)
    report["targets"] = exported_form_targets(report["forms"])
    report["batch_scaling"] = batch_scaling(report["backend"])
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def form_rows(torch: Any, base: Any, cells: list[FormCell], feed: Callable[[int, int], dict], references: dict,
              repeats: int, clock: Clock, device: str, rows: list[dict], save: Callable[[], None]) -> list[dict]:
    for cell in cells:
        row = {"form": cell.form, "precision": cell.precision, "policy": cell.policy, "size": cell.size, "batch": 1}
        if cell.variant:
            row["variant"] = cell.variant
        not_offered = cell.policy and C.fp16_policy_problem(cell.policy, cell.form)
        expired = clock.expired()
        if not_offered:
            row["skipped"] = f"not offered: {not_offered}"
        elif expired:
            row["skipped"] = expired
        else:
            row.update(_form_cell(torch, base, cell, feed(1, cell.size), references, repeats, device))
        rows.append(row)
        _add_shares(rows, cell.size, cell.precision, cell.policy)
        save()
    return rows


def _form_cell(torch: Any, base: Any, cell: FormCell, feed: dict, references: dict, repeats: int,
               device: str) -> dict[str, Any]:
    from lama_model import fourier

    backend = None
    try:
        torch.cuda.reset_peak_memory_stats(device)
        backend = make_backend(model_variant(base, cell.form), device, cell.precision, cell.policy, graphs=True)
        if cell.variant == "unpadded":
            fourier.set_spectrum_align(backend.model, 1)
        elif cell.variant == "no basis cache":
            fourier.EAGER_CACHE = False  # every forward rebuilds its bases (and the graph captures the rebuild)
        output = backend.infer(feed)
        executor = backend.executor
        slot = executor.slots[(feed["image"].shape[0],) + feed["image"].shape[2:]]
        graph = gpu_times_ms(torch, slot.graph.replay, executor.stream, repeats)
        eager = gpu_times_ms(torch, lambda: backend._forward(slot.inputs["image"], slot.inputs["mask"]),
                             executor.stream, max(2, repeats // 2))
        result: dict[str, Any] = {"graph_ms": round(statistics.median(graph), 3), "eager_ms": round(statistics.median(eager), 3),
                                  "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                                  "align": spectrum_align(backend.model)}
        if cell.form == "torch" and cell.precision == "fp32":
            references[cell.size] = output["inpainted"]
        if cell.precision != "fp32" and cell.form != FLOOR and cell.size in references:
            result["hot_error"] = hole_error(output["inpainted"], references[cell.size], feed["mask"])
        return result
    except Exception as exc:  # one cell's failure (cuFFT fp16 size limits, OOM, ...) is a row, not the end
        return {"error": _error_line(exc)}
    finally:
        fourier.EAGER_CACHE = True
        if backend is not None:
            backend.deactivate()
        torch.cuda.empty_cache()


def _add_shares(rows: list[dict], size: int, precision: str, policy: str | None) -> None:
    """Fourier-unit share of each form's graph time against the floor of the same precision and size."""
    same = [r for r in rows if (r["size"], r["precision"], r["policy"]) == (size, precision, policy)]
    floor = next((r.get("graph_ms") for r in same if r["form"] == FLOOR and not r.get("variant")), None)
    for row in same:
        if floor and row.get("graph_ms") and row["form"] != FLOOR:
            row["fourier_share"] = round(max(0.0, row["graph_ms"] - floor) / row["graph_ms"], 3)


def backend_rows(torch: Any, base: Any, cells: list[BackendCell], feed: Callable[[int, int], dict], repeats: int,
                 clock: Clock, device: str, rows: list[dict], save: Callable[[], None]) -> list[dict]:
    """The PyTorch backend as users run it (torch.fft form), end to end through `infer`."""
    for cell in cells:
        row: dict[str, Any] = {"mode": cell.mode, "batch": cell.batch, "size": cell.size, "purpose": cell.purpose,
                               **{k: v for k, v in asdict(cell).items() if k not in ("batch", "size", "purpose")}}
        expired = clock.expired()
        row.update({"skipped": expired} if expired else _backend_cell(torch, base, cell, feed(cell.batch, cell.size),
                                                                      repeats, device))
        rows.append(row)
        save()
    return rows


def _backend_cell(torch: Any, base: Any, cell: BackendCell, feed: dict, repeats: int, device: str) -> dict[str, Any]:
    backend = None
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cell.tf32
        torch.cuda.reset_peak_memory_stats(device)
        options = {"compile": cell.compile, "cudnn_benchmark": cell.cudnn_benchmark}
        backend = make_backend(copy.deepcopy(base), device, cell.precision, None, cell.graphs, **options)
        cold = wall_times_ms(lambda: backend.infer(feed), 1)[0]
        backend.infer(feed)
        times = wall_times_ms(lambda: backend.infer(feed), repeats, CELL_CAP_S)
        median = statistics.median(times)
        first_forward = backend.describe().get("first_call_s", {})
        return {"latency_ms": round(median, 3), "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 3),
                "runs": len(times), "first_call_ms": round(cold, 1),
                "first_forward_s": round(max(first_forward.values()), 2) if first_forward else None,
                "images_per_s": round(feed["image"].shape[0] * 1e3 / median, 2),
                "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / 2**20, 1)}
    except Exception as exc:
        return {"error": _error_line(exc)}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32
        if backend is not None:
            backend.deactivate()
        torch.cuda.empty_cache()


# --- verdicts ------------------------------------------------------------------------------------------------------

def _plain(rows: list[dict], mode: str, batch: int, size: int | None = None) -> dict | None:
    for row in rows:
        if row["mode"] == mode and row["batch"] == batch and row.get("purpose") == "batch scaling" \
                and (size is None or row["size"] == size):
            return row
    return None


def speedup(rows: list[dict], size: int) -> dict[str, Any] | None:
    """Issue 12's target: graph-replayed fp16 at batch 1 at least 3x faster than eager fp32, same run."""
    eager, graphs = _plain(rows, "eager fp32", 1, size), _plain(rows, "graphs fp16", 1, size)
    if not (eager and graphs and eager.get("latency_ms") and graphs.get("latency_ms")):
        return None
    ratio = eager["latency_ms"] / graphs["latency_ms"]
    return {"size": size, "ratio": round(ratio, 2), "target": 3.0, "met": ratio >= 3.0}


#: Targets of the exported form against the cuFFT model (issue 23): total <= 1.25x, Fourier-unit share <= 35%.
TARGET_RATIO, TARGET_SHARE = 1.25, 0.35


def exported_form_targets(rows: list[dict]) -> list[dict[str, Any]]:
    """Per size: the fastest DFT-as-matmul fp16 form (graph time) against the cuFFT model (torch.fft, fp16 with
    fp32 Fourier units: what PyTorch users run), with its Fourier-unit share."""
    verdicts = []
    for size in sorted({r["size"] for r in rows}):
        cufft = next((r for r in rows if r["size"] == size and r["form"] == "torch" and r["precision"] == "fp16"
                      and r["policy"] == C.DEFAULT_FP16_POLICY and r.get("graph_ms")), None)
        exported = [r for r in rows if r["size"] == size and r["form"] in ("matmul", "matmul-dense")
                    and r["precision"] == "fp16" and not r.get("variant") and r.get("graph_ms")]
        if not (cufft and exported):
            continue
        best = min(exported, key=lambda r: r["graph_ms"])
        ratio = best["graph_ms"] / cufft["graph_ms"]
        share = best.get("fourier_share")
        verdicts.append({"size": size, "form": best["form"], "policy": best["policy"], "ms": best["graph_ms"],
                         "cufft_ms": cufft["graph_ms"], "ratio": round(ratio, 3), "fourier_share": share,
                         "met": ratio <= TARGET_RATIO and share is not None and share <= TARGET_SHARE})
    return verdicts


def batch_scaling(rows: list[dict]) -> list[dict[str, Any]]:
    """Images/s per batch of the plain graphs rows, fp32 and fp16; `grows` when batch 4 beats batch 1."""
    result = []
    for precision in ("fp32", "fp16"):
        mode = f"graphs {precision}"
        per_batch = {r["batch"]: r.get("images_per_s") for r in rows
                     if r["mode"] == mode and r.get("purpose") == "batch scaling" and r.get("images_per_s")}
        if per_batch:
            grows = per_batch.get(4, 0) > per_batch.get(1, float("inf"))
            result.append({"mode": mode, "images_per_s": per_batch, "grows_1_to_4": grows})
    return result
