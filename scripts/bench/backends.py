"""The deployment paths `lama-deploy bench` times, and the child process that times one of them.

Each (backend, batch, size) cell runs in a fresh child process (`run_cell_in_child`): its peak resident
memory (`VmHWM`, Python + framework + model + activations) is then that backend's own, and nothing
one framework allocated or cached bends the next one's numbers. Inside the child: load, warm up, time
the repeats, then one or more extra runs that measure where the time goes (ONNX Runtime's profiler,
or forward hooks on the Fourier units for PyTorch); the timed runs are never profiled.
"""

from __future__ import annotations

import abc
import gc
import multiprocessing as mp
import os
import queue
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lama_deploy.host import peak_rss_mb

#: Node-name fragment of every Fourier-unit node in the exported graph (TorchScript exporter scopes).
FOURIER_SCOPE = "/fu/"


@dataclass(frozen=True)
class BackendSpec:
    """One deployment path. `model` names the exported file it runs (see `benchmark.export_models`)."""

    name: str
    label: str
    kind: str                       # "torch" | "onnxruntime" | "tensorrt"
    device: str = "cpu"
    fourier: str = "torch"          # PyTorch backends: torch.fft or DFT-as-matmul
    precision: str = "fp32"
    model: str = ""                 # exported ONNX key for onnxruntime / tensorrt
    provider: str = "CPUExecutionProvider"


BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in [
    BackendSpec("torch-fft", "PyTorch eager CPU, torch.fft (baseline)", "torch"),
    BackendSpec("torch-matmul", "PyTorch eager CPU, DFT-as-matmul", "torch", fourier="matmul"),
    BackendSpec("ort-cpu", "ONNX Runtime CPU, matmul graph", "onnxruntime", model="matmul"),
    BackendSpec("ort-cpu-plain", "ONNX Runtime CPU, matmul graph without export/speedups.py", "onnxruntime",
                model="matmul-plain"),
    BackendSpec("ort-cpu-dense", "ONNX Runtime CPU, dense matmul graph (--fft matmul-dense)", "onnxruntime",
                model="matmul-dense"),
    BackendSpec("ort-cpu-dft", "ONNX Runtime CPU, DFT-op graph", "onnxruntime", model="dft"),
    BackendSpec("ort-cuda", "ONNX Runtime CUDA EP, matmul graph", "onnxruntime", device="cuda", model="matmul",
                provider="CUDAExecutionProvider"),
    BackendSpec("ort-trt", "ONNX Runtime TensorRT EP, matmul graph", "onnxruntime", device="cuda", model="matmul",
                provider="TensorrtExecutionProvider"),
    BackendSpec("trt-fp32", "TensorRT engine fp32", "tensorrt", device="cuda", model="matmul"),
    BackendSpec("trt-fp16", "TensorRT engine fp16 (Fourier units fp32)", "tensorrt", device="cuda",
                precision="fp16", model="fp16"),
    BackendSpec("torch-cuda-fft", "PyTorch eager CUDA fp32, torch.fft", "torch", device="cuda"),
    BackendSpec("torch-cuda-fp16", "PyTorch eager CUDA fp16 autocast (Fourier units fp32), torch.fft", "torch", device="cuda",
                precision="fp16"),
    BackendSpec("torch-cuda-matmul", "PyTorch eager CUDA fp32, DFT-as-matmul", "torch", device="cuda",
                fourier="matmul"),
]}
BASELINE = "torch-fft"


# --- what this machine can run ------------------------------------------------------------------------------

def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def _tensorrt_runtime() -> str | None:
    """Why TensorRT engines cannot run here, or None when they can."""
    try:
        from lama_deploy.runtime.trt_import import TensorRTUnavailable, import_tensorrt
        import_tensorrt()
    except TensorRTUnavailable as exc:
        return str(exc).splitlines()[0]
    except ImportError as exc:
        return f"cannot import the TensorRT runtime helpers: {exc}"
    try:
        import cuda  # noqa: F401  (cuda-python: the engine backend's device memory)
    except ImportError:
        return "cuda-python is not installed (pip install cuda-python)"
    return None


def unavailable_reason(spec: BackendSpec) -> str | None:
    """One line saying why `spec` cannot run on this machine, or None."""
    if spec.kind == "onnxruntime":
        providers = _ort_providers()
        if not providers:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if spec.provider not in providers:
            hint = "onnxruntime-gpu" if spec.device == "cuda" else "onnxruntime"
            return f"this onnxruntime has no {spec.provider} (available: {', '.join(providers)}; install {hint})"
    if spec.device == "cuda" and not _cuda_available():
        return "no NVIDIA GPU visible to PyTorch (torch.cuda.is_available() is False)"
    if spec.kind == "tensorrt":
        return _tensorrt_runtime()
    return None


# --- inside the child: one runner per kind ------------------------------------------------------------------

class Runner(abc.ABC):
    """Loaded model for one cell: `run()` does one inference, `fourier_share(runs)` measures the FU share."""

    @abc.abstractmethod
    def run(self) -> None:
        """One inference, synchronised: when it returns, the result is computed."""

    def fourier_share(self, runs: int) -> dict[str, Any]:
        return {"fourier_share": None, "share_method": "not measured for this backend"}

    def close(self) -> None:
        pass


class TorchRunner(Runner):
    """The runtime's own `TorchBackend` (eager; `lama-deploy bench --device cuda` times the graph modes)."""

    def __init__(self, spec: BackendSpec, job: dict[str, Any]) -> None:
        import torch

        from lama_deploy.runtime.backends.pytorch.backend import TorchBackend
        from lama_model import InpaintingModel, build_generator, set_fourier_mode

        torch.set_num_threads(job["threads"])
        self.torch = torch
        self.device = torch.device(spec.device)
        model = InpaintingModel(build_generator(job["config"]))
        model.load_state_dict(torch.load(job["weights"], map_location="cpu", weights_only=True))
        self.backend = TorchBackend(set_fourier_mode(model, spec.fourier), device=spec.device, weights="bench",
                                    precision=spec.precision, cuda_graphs=False)
        self.backend.activate()
        self.model = self.backend.model
        image, mask = cell_inputs(job)
        self.feed = {"image": image, "mask": mask}

    def run(self) -> None:
        # Through `infer`: host copies included, the latency a caller of the runtime sees (returns synchronised).
        self.backend.infer(self.feed)

    def close(self) -> None:
        self.backend.deactivate()

    def fourier_share(self, runs: int) -> dict[str, Any]:
        """Wall time inside the Fourier units (forward hooks) over the model's, minimum over `runs`."""
        from lama_model.ffc import FourierUnit

        torch = self.torch
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        spent = [0.0]
        starts: list[float] = []

        def before(_module, _inputs):
            sync()
            starts.append(time.perf_counter())

        def after(_module, _inputs, _output):
            sync()
            spent[0] += time.perf_counter() - starts.pop()

        units = [m for m in self.model.modules() if isinstance(m, FourierUnit)]
        hooks = [h for u in units for h in (u.register_forward_pre_hook(before), u.register_forward_hook(after))]
        shares = []
        try:
            for _ in range(max(1, runs)):
                spent[0] = 0.0
                start = time.perf_counter()
                self.run()
                shares.append(spent[0] / (time.perf_counter() - start))
        finally:
            for hook in hooks:
                hook.remove()
        return {"fourier_share": min(shares), "share_method": "forward hooks on FourierUnit (wall time), "
                f"minimum over {len(shares)} run(s)"}

    def peak_device_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20


class OrtRunner(Runner):
    def __init__(self, spec: BackendSpec, job: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.ort, self.spec, self.job = ort, spec, job
        self.path = job["models"][spec.model]
        self.session = self._session(profile=False)
        image, mask = cell_inputs(job)
        self.feed = {"image": image, "mask": mask}

    def _session(self, profile: bool):
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.job["threads"]
        options.log_severity_level = 3
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(self.job["scratch"]) / f"ort-{self.spec.name}")
        providers = [self.spec.provider] + (["CPUExecutionProvider"] if self.spec.provider != "CPUExecutionProvider" else [])
        return self.ort.InferenceSession(self.path, sess_options=options, providers=providers)

    def run(self) -> None:
        if self.session is None:
            self.session = self._session(profile=False)
        self.session.run(None, self.feed)

    def fourier_share(self, runs: int) -> dict[str, Any]:
        """ORT profiler: per-node kernel time, minimum over `runs` runs, FU nodes over all nodes."""
        # One session at a time: each keeps an arena sized for the cell (about 11 GB for big-lama at
        # 2048x2048), and two of them do not fit a 24 GB machine.
        self.session = None
        gc.collect()
        session = self._session(profile=True)
        for _ in range(max(1, runs)):
            session.run(None, self.feed)
        profile = Path(session.end_profiling())
        try:
            return summarise_ort_profile(profile)
        finally:
            profile.unlink(missing_ok=True)


def summarise_ort_profile(path: Path) -> dict[str, Any]:
    """Share of the Fourier units and the top op types, from per-node minima over the profiled runs.

    A node's minimum over several runs is robust to other processes on the machine, which inflate
    single runs unevenly; ONNX Runtime keeps the original node names (fused nodes keep the name of the
    node they replace), so `/fu/` finds the Fourier units.
    """
    import json

    events = json.loads(path.read_text())
    durations: dict[str, list[int]] = {}
    op_of: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            durations.setdefault(event["name"], []).append(int(event["dur"]))
            op_of[event["name"]] = event.get("args", {}).get("op_name", "?")
    minima = {name: min(values) for name, values in durations.items()}
    total = sum(minima.values()) or 1
    by_op: dict[str, int] = {}
    for name, value in minima.items():
        by_op[op_of[name]] = by_op.get(op_of[name], 0) + value
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
    fourier = sum(value for name, value in minima.items() if FOURIER_SCOPE in name)
    runs = max((len(v) for v in durations.values()), default=0)
    return {"fourier_share": fourier / total, "kernel_ms": total / 1e3,
            "top_ops": {op: round(value / total, 4) for op, value in top},
            "share_method": f"ONNX Runtime profiler, per-node minimum over {runs} run(s), nodes named '{FOURIER_SCOPE}'"}


class TensorRTRunner(Runner):
    """A static-shape engine built for the cell's shape (built once per cell, not timed)."""

    def __init__(self, spec: BackendSpec, job: dict[str, Any]) -> None:
        from lama_deploy.export.build_engine import BuildOptions, build_engine
        from lama_deploy.profiles import Profile
        from lama_deploy.runtime.backends.trt_backend import TensorRTBackend

        image, mask = cell_inputs(job)
        batch, _, height, width = image.shape
        nhw = (batch, height, width)
        engine = Path(job["scratch"]) / f"{spec.name}-{batch}x{height}x{width}.engine"
        build_engine(job["models"][spec.model], engine, BuildOptions(profiles=[Profile(nhw, nhw, nhw)], precision=spec.precision))
        self.backend = TensorRTBackend(engine)
        self.backend.activate()
        self.feed = {"image": image, "mask": mask}

    def run(self) -> None:
        # Includes host<->device copies: the latency a caller of the runtime sees.
        self.backend.infer(self.feed)

    def close(self) -> None:
        self.backend.deactivate()


RUNNERS: dict[str, Callable[[BackendSpec, dict[str, Any]], Runner]] = {
    "torch": TorchRunner, "onnxruntime": OrtRunner, "tensorrt": TensorRTRunner}


def measure_cell(spec: BackendSpec, job: dict[str, Any]) -> dict[str, Any]:
    """Load, warm up, time `repeats` runs (fewer if the time budget says so), then measure the FU share."""
    runner = RUNNERS[spec.kind](spec, job)
    try:
        warmup_times = []
        for _ in range(job["warmup"]):
            start = time.perf_counter()
            runner.run()
            warmup_times.append(time.perf_counter() - start)
        times: list[float] = []
        deadline = time.perf_counter() + job["budget_s"]
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            runner.run()
            times.append(time.perf_counter() - start)
            if time.perf_counter() + times[-1] > deadline:
                break  # the next run would pass the cell's budget: keep what we have
        result: dict[str, Any] = {"times_s": times, "warmup_s": warmup_times}
        if job["share_runs"] > 0:
            result.update(runner.fourier_share(job["share_runs"]))
        device_mb = getattr(runner, "peak_device_mb", lambda: None)()
        if device_mb is not None:
            result["peak_device_mb"] = round(device_mb, 1)
        return result
    finally:
        runner.close()


def _child_main(spec: BackendSpec, job: dict[str, Any], results: mp.Queue) -> None:
    import sys

    sys.path.insert(0, job["repo"])
    try:
        result = measure_cell(spec, job)
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        results.put(("ok", result))
    except BaseException as exc:  # report any failure of the child as one line to the parent
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        results.put(("error", f"{type(exc).__name__}: {line}", traceback.format_exc(limit=3)))


def run_cell_in_child(spec: BackendSpec, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Measure one cell in a fresh process; {'error': ...} if it fails or outlives `timeout_s`."""
    context = mp.get_context("spawn")
    results: mp.Queue = context.Queue()
    child = context.Process(target=_child_main, args=(spec, job, results), daemon=True)
    child.start()
    deadline = time.monotonic() + timeout_s
    outcome = None
    try:
        while outcome is None:
            try:
                outcome = results.get(timeout=5.0)
            except queue.Empty:
                if not child.is_alive():
                    try:  # it may have reported just before exiting
                        outcome = results.get(timeout=1.0)
                    except queue.Empty:
                        # Killed without a word, e.g. by the kernel's out-of-memory killer (exit code -9).
                        outcome = ("error", f"child process died (exit code {child.exitcode}; -9 is usually "
                                   "the out-of-memory killer)", "")
                elif time.monotonic() > deadline:
                    outcome = ("error", f"timed out after {timeout_s:.0f} s", "")
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
    if outcome[0] == "ok":
        return outcome[1]
    return {"error": outcome[1]}


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cell_inputs(job: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The cell's seeded synthetic images and LaMa-style masks, made in the child (no large pickles)."""
    from lama_model.synthetic import sample_batch

    image, mask = sample_batch(job["batch"], job["size"], job["size"], seed=job["seed"])
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.float32)
