"""GPU rows of `lama-deploy bench --device cuda`: Fourier forms x precision policies, and PyTorch-backend modes.

Everything runs through the PyTorch backend (`TorchBackend` + its `CudaExecutor`), so the benchmark times
the code users run. Two tables:

- **Fourier forms** (issue 11): for each form in `lama_model.FOURIER_MODES` and with the Fourier units
  removed (the floor: each unit returns zeros of its input's shape), in fp32 (TF32 off) and in fp16 under
  each safety policy: GPU time of one CUDA-graph replay and of one eager forward (CUDA events, median),
  the Fourier-unit share `(t_form - t_floor) / t_form` of the graph time, and the hot-weight error (the
  trained-like weights' hole mean |fp16 - fp32 torch.fft| in 1/255 levels, non-finite fraction).
- **PyTorch backend** (issue 12): eager fp32 (today's default, as IOPaint runs it), eager fp16 policy,
  graphs fp32 / fp16, batch 1 and 4: end-to-end `backend.infer` latency (host copies included), images/s,
  peak GPU memory (`torch.cuda.max_memory_allocated`).

Without CUDA every row is skipped with its reason; a cell that fails records its error line and the
run goes on; cells past the time budget are skipped and say so.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Callable

from lama_deploy import contract as C

FLOOR = "none"
NO_CUDA = "needs an NVIDIA GPU (torch.cuda.is_available() is False)"
BACKEND_MODES = (("eager", "fp32"), ("eager", "fp16"), ("graphs", "fp32"), ("graphs", "fp16"))


#: A folder where seeded random weights are kept between processes (the GPU lane's tests and benchmark).
MODEL_CACHE_ENV = "LAMA_MODEL_CACHE"


def cached_random_model(config: str, seed: int = 0, trained_like: bool = False) -> Any:
    """`lama_model.random_model`, loaded from $LAMA_MODEL_CACHE when an earlier process built it.

    Calibrating big-lama's BatchNorm runs the model on the CPU; the lane builds it once, not per process.
    """
    import os
    from pathlib import Path

    import torch

    from lama_model import InpaintingModel, build_generator, random_model

    folder = os.environ.get(MODEL_CACHE_ENV)
    path = Path(folder) / f"{config}-seed{seed}{'-hot' if trained_like else ''}.pt" if folder else None
    if path is not None and path.is_file():
        model = InpaintingModel(build_generator(config))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = random_model(config, seed=seed, trained_like=trained_like)
    if path is not None:
        from lama_deploy.files import atomic_output

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            torch.save(model.state_dict(), tmp)
    return model


def cuda_skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs torch"
    return None if torch.cuda.is_available() else NO_CUDA


def precisions() -> list[tuple[str, str | None]]:
    """(precision, policy): fp32, then fp16 under every policy this lama_model offers."""
    from lama_deploy.runtime.backends.torch_precision import fp16_policies

    return [("fp32", None)] + [("fp16", policy) for policy in fp16_policies()]


def remove_fourier_units(model: Any) -> Any:
    """The floor: every FourierUnit returns zeros of its input's shape (the rest of the model unchanged)."""
    import torch

    from lama_deploy.runtime.backends.torch_precision import fourier_units

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


def _device_scoped(model: Any, device: str) -> None:
    """Run the model inside `torch.device(device)`: Fourier forms whose bases are made on the default device."""
    import torch

    forward = model.forward

    def scoped(*args: Any) -> Any:
        with torch.device(device):
            return forward(*args)

    model.forward = scoped


def make_backend(model: Any, device: str, precision: str, policy: str | None, graphs: bool) -> Any:
    from lama_deploy.runtime.backends.torch_backend import TorchBackend

    backend = TorchBackend(model, device=device, weights="bench", precision=precision, fp16_policy=policy,
                           cuda_graphs=graphs, graph_cache=2)
    backend.activate()
    return backend


def first_run(backend: Any, feed: dict, device: str) -> tuple[Any, str | None]:
    """One `infer` (captures the graph); retried in a device scope if the Fourier bases sit on the CPU."""
    try:
        return backend.infer(feed), None
    except RuntimeError as exc:
        if "device" not in str(exc):
            raise
        backend.deactivate()
        _device_scoped(backend.model, device)
        backend.activate()
        note = "bases built on the CPU: ran inside torch.device(cuda) (lama_model fix pending)"
        return backend.infer(feed), note


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


def wall_times_ms(run: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
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


class Clock:
    """The run's time budget: cells after the deadline are skipped, not started."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s

    def expired(self) -> str | None:
        return f"skipped: past the GPU time budget ({self.budget_s:.0f} s)" if time.monotonic() > self.deadline else None


def run_gpu_bench(config: str, sizes: list[int], batches: list[int], batch_at: int, repeats: int, seed: int,
                  budget_s: float = 300.0, device: str = "cuda") -> dict[str, Any]:
    """Both GPU tables; `{"skipped": reason}` without CUDA."""
    reason = cuda_skip_reason()
    if reason:
        return {"skipped": reason, "forms": [], "backend": []}
    import torch

    from lama_model.synthetic import sample_batch

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are exact fp32 (the DFT-as-matmul needs it)
    torch.backends.cudnn.allow_tf32 = False
    clock = Clock(budget_s)
    started = time.monotonic()
    base = cached_random_model(config, seed=seed, trained_like=True)
    build_s = time.monotonic() - started
    feeds = {}
    for batch, size in sorted({(1, s) for s in sizes} | {(b, batch_at) for b in batches}):
        image, mask = sample_batch(batch, size, size, seed=seed)
        feeds[(batch, size)] = {"image": image, "mask": mask}
    # The backend rows first: they hold issue 12's 3x target and cost little; the form grid can be cut by the budget.
    backend = backend_rows(torch, base, {b: feeds[(b, batch_at)] for b in batches}, batch_at, repeats, clock, device)
    forms = form_rows(torch, base, {s: feeds[(1, s)] for s in sizes}, repeats, clock, device)
    return {"gpu": torch.cuda.get_device_name(torch.device(device)), "torch": torch.__version__,
            "cuda": torch.version.cuda, "config": config, "model_build_s": round(build_s, 1), "tf32": False,
            "repeats": repeats, "forms": forms, "backend": backend,
            "speedup_graphs_fp16_vs_eager_fp32": speedup(backend, batch_at)}


def form_rows(torch: Any, base: Any, feeds: dict[int, dict], repeats: int, clock: Clock, device: str) -> list[dict]:
    from lama_model import FOURIER_MODES

    references: dict[int, Any] = {}
    rows: list[dict] = []
    for size, feed in feeds.items():
        for precision, policy in precisions():
            for form in FOURIER_MODES + (FLOOR,):
                row = {"form": form, "precision": precision, "policy": policy, "size": size, "batch": 1}
                not_offered = policy and C.fp16_policy_problem(policy, form)
                expired = clock.expired()
                if not_offered:
                    row["skipped"] = f"not offered: {not_offered}"
                elif expired:
                    row["skipped"] = expired
                else:
                    row.update(_form_cell(torch, base, form, precision, policy, feed, references, repeats, device))
                rows.append(row)
            _add_shares(rows, size, precision, policy)
    return rows


def _form_cell(torch: Any, base: Any, form: str, precision: str, policy: str | None, feed: dict,
               references: dict, repeats: int, device: str) -> dict[str, Any]:
    backend = None
    try:
        torch.cuda.reset_peak_memory_stats(device)
        backend = make_backend(model_variant(base, form), device, precision, policy, graphs=True)
        output, note = first_run(backend, feed, device)
        executor = backend.executor
        slot = executor.slots[(feed["image"].shape[0],) + feed["image"].shape[2:]]
        graph = gpu_times_ms(torch, slot.graph.replay, executor.stream, repeats)
        eager = gpu_times_ms(torch, lambda: backend._forward(slot.inputs["image"], slot.inputs["mask"]),
                             executor.stream, max(2, repeats // 2))
        result: dict[str, Any] = {"graph_ms": round(statistics.median(graph), 3), "eager_ms": round(statistics.median(eager), 3),
                                  "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
        size = feed["image"].shape[-1]
        if form == "torch" and precision == "fp32":
            references[size] = output["inpainted"]
        if precision != "fp32" and form != FLOOR and size in references:
            result["hot_error"] = hole_error(output["inpainted"], references[size], feed["mask"])
        if note:
            result["note"] = note
        return result
    except Exception as exc:  # one cell's failure (cuFFT fp16 size limits, OOM, ...) is a row, not the end
        return {"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"}
    finally:
        if backend is not None:
            backend.deactivate()
        torch.cuda.empty_cache()


def _add_shares(rows: list[dict], size: int, precision: str, policy: str | None) -> None:
    """Fourier-unit share of each form's graph time against the floor of the same precision and size."""
    same = [r for r in rows if (r["size"], r["precision"], r["policy"]) == (size, precision, policy)]
    floor = next((r.get("graph_ms") for r in same if r["form"] == FLOOR), None)
    for row in same:
        if floor and row.get("graph_ms") and row["form"] != FLOOR:
            row["fourier_share"] = round(max(0.0, row["graph_ms"] - floor) / row["graph_ms"], 3)


def backend_rows(torch: Any, base: Any, feeds: dict[int, dict], size: int, repeats: int, clock: Clock,
                 device: str) -> list[dict]:
    """The PyTorch backend as users run it (torch.fft form), end to end through `infer`."""
    rows = []
    for batch, feed in feeds.items():
        for graphs, precision in BACKEND_MODES:
            row: dict[str, Any] = {"mode": f"{graphs} {precision}", "batch": batch, "size": size}
            expired = clock.expired()
            row.update({"skipped": expired} if expired else _backend_cell(torch, base, feed, graphs == "graphs",
                                                                          precision, repeats, device))
            rows.append(row)
    return rows


def _backend_cell(torch: Any, base: Any, feed: dict, graphs: bool, precision: str, repeats: int,
                  device: str) -> dict[str, Any]:
    backend = None
    try:
        torch.cuda.reset_peak_memory_stats(device)
        backend = make_backend(copy.deepcopy(base), device, precision, None, graphs)
        cold = wall_times_ms(lambda: backend.infer(feed), 1)[0]
        backend.infer(feed)
        times = wall_times_ms(lambda: backend.infer(feed), repeats)
        median = statistics.median(times)
        return {"latency_ms": round(median, 3), "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 3),
                "first_call_ms": round(cold, 1), "images_per_s": round(feed["image"].shape[0] * 1e3 / median, 2),
                "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"}
    finally:
        if backend is not None:
            backend.deactivate()
        torch.cuda.empty_cache()


def speedup(rows: list[dict], size: int) -> dict[str, Any] | None:
    """Issue 12's target: graph-replayed fp16 at batch 1 at least 3x faster than eager fp32, same run."""
    by_mode = {r["mode"]: r.get("latency_ms") for r in rows if r["batch"] == 1 and r["size"] == size}
    if not (by_mode.get("eager fp32") and by_mode.get("graphs fp16")):
        return None
    ratio = by_mode["eager fp32"] / by_mode["graphs fp16"]
    return {"size": size, "ratio": round(ratio, 2), "target": 3.0, "met": ratio >= 3.0}
