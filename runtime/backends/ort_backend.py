"""ONNX Runtime backend: TensorRT EP, then CUDA EP, then CPU EP, whichever this onnxruntime build has.

Or the execution providers the caller names (`providers`, order = preference; `parse_providers` reads the
`CUDA,CPU` text form): each must be in this onnxruntime build, else one line names the available ones.

Imports only `onnxruntime` (lazily, on activation); the exported model's metadata (`lama.*` keys) is read
through ONNX Runtime's own model-metadata API, so neither `onnx` nor torch is needed on the edge box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import InputNotFound, UsageError, missing_dependency
from lama_deploy.model_facts import facts_from_session

from ..memory import MemoryCost, ort_cpu_cost
from .base import Backend, BackendError, Profile

#: Preferred order; only the providers this onnxruntime build offers are used.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = PREFERRED_PROVIDERS[:2]
#: Short names of the execution providers users can ask for, and ONNX Runtime's names for them.
PROVIDER_NAMES = {
    "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider", "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "cpu": "CPUExecutionProvider",
}
#: After every run the CPU arena hands back what that run grew (one large image must not keep gigabytes).
ARENA_SHRINKAGE = ("memory.enable_memory_arena_shrinkage", "cpu:0")


def memory_lean_options(ort: Any, threads: int | None = None) -> Any:
    """Session options that keep CPU peak memory near what the model needs (measured by scripts/bench_memory).

    - no memory pattern: with dynamic H/W a pattern is planned per shape and allocated as one block beside
      the arena's chunks from the tracing run, which roughly doubles the peak of the second call;
    - sequential execution: parallel branches would hold their full-resolution tensors at the same time;
    - no layout optimisation (ORT_ENABLE_EXTENDED, not ALL): the NCHWc rewrite brackets every full-resolution
      convolution with ReorderInput/ReorderOutput copies (1 GB each at 2048x2048 for big-lama).
    The arena itself stays on (without it every large tensor is a fresh malloc: slower and no smaller).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's per-node warnings are noise for users of a finished model
    options.enable_mem_pattern = False
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if threads:
        options.intra_op_num_threads = threads
    return options


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise missing_dependency("onnxruntime", "pip install onnxruntime (CPU) or pip install onnxruntime-gpu") from None
    return onnxruntime


def provider_name(name: str) -> str:
    """ONNX Runtime's name for a provider: a short name (CUDA, TensorRT, OpenVINO, DirectML, CoreML, CPU; any
    case) or a full `XExecutionProvider` name, kept as written. Anything else is a UsageError (one line)."""
    text = name.strip()
    if text.endswith("ExecutionProvider"):
        return text
    if text.lower() in PROVIDER_NAMES:
        return PROVIDER_NAMES[text.lower()]
    raise UsageError(f"unknown execution provider {text!r}; use {', '.join(_SHORT_NAMES)} or a full "
                     f"XExecutionProvider name")


_SHORT_NAMES = ("CUDA", "TensorRT", "OpenVINO", "DirectML", "CoreML", "CPU")


def parse_providers(text: str) -> tuple[str, ...]:
    """`"TensorRT,CUDA,CPU"` -> ONNX Runtime's provider names in that order (first = preferred), repeats dropped."""
    names = [part for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError(f"no execution provider named; give a comma-separated list such as CUDA,CPU "
                         f"(names: {', '.join(_SHORT_NAMES)})")
    return tuple(dict.fromkeys(provider_name(part) for part in names))


def providers_problem(requested: Sequence[str], available: Sequence[str]) -> str | None:
    """The one line when this onnxruntime build lacks a requested provider (names as `provider_name` gives them)."""
    missing = [name for name in requested if name not in available]
    if not missing:
        return None
    gpu_hint = ("; CUDA/TensorRT need `pip install onnxruntime-gpu`"
                if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(missing) else "")
    return (f"this onnxruntime has no {', '.join(missing)}; it has {', '.join(available)}: ask for those"
            f"{gpu_hint}")


def choose_providers(available: Sequence[str], device: str | None = None,
                     requested: Sequence[Any] | None = None) -> list[Any]:
    """Providers to ask for, in order. `requested` wins; else the preferred ones that are available.

    device "cpu" keeps only the CPU EP; device "cuda" requires a GPU provider.
    """
    if requested:
        # (name, options) pairs pass through with their options; names may be short ("CUDA") or full.
        chosen = [(provider_name(p[0]), p[1]) if isinstance(p, (tuple, list)) else provider_name(p) for p in requested]
        problem = providers_problem([p[0] if isinstance(p, tuple) else p for p in chosen], available)
        if problem:
            raise BackendError(problem)
        return chosen
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise BackendError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device is not None and device.startswith("cuda"):
        if not any(p in available for p in _GPU_PROVIDERS):
            raise BackendError("this onnxruntime has no CUDA or TensorRT provider; install onnxruntime-gpu "
                               "(pip install onnxruntime-gpu) or use --device cpu")
        index = device.partition(":")[2]
        if index:
            chosen = [(p, {"device_id": int(index)}) if p in _GPU_PROVIDERS else p for p in chosen]
    return chosen


def _dim(value: Any) -> int | None:
    """A static dim as int, a symbolic/unknown one as None."""
    return value if isinstance(value, int) and value > 0 else None


class OnnxRuntimeBackend(Backend):
    """An `onnxruntime.InferenceSession` over an exported LaMa ONNX file."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str | None = None, providers: Sequence[Any] | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.device = device
        self.requested_providers = providers
        self.threads = threads
        self.session = None
        self._run_options = None
        self._metadata: dict[str, str] = {}
        self._dtypes: dict[str, Any] = {}
        self._profile = Profile()
        if not self.path.is_file():
            raise InputNotFound(f"model file {self.path} does not exist; pass an exported .onnx with --model")

    def activate_impl(self) -> None:
        ort = import_onnxruntime()
        options = memory_lean_options(ort, self.threads)
        providers = choose_providers(ort.get_available_providers(), self.device, self.requested_providers)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"cannot load ONNX model {self.path}: {first}; "
                               f"re-export it with `lama-deploy export`") from None
        self._check_io()
        self._metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._profile = self._profile_from_session()
        self._run_options = ort.RunOptions()
        self._run_options.terminate = self.cancelled  # cancelled before it was activated
        if self._cpu_only():
            self._run_options.add_run_config_entry(*ARENA_SHRINKAGE)

    def _cpu_only(self) -> bool:
        return self.session is not None and set(self.session.get_providers()) <= {"CPUExecutionProvider"}

    def host_memory_cost(self) -> MemoryCost | None:
        """Peak host bytes per tensor pixel on the CPU EP; None on GPU providers (device memory)."""
        return ort_cpu_cost(self._metadata.get(C.META_SPEEDUPS, "")) if self._cpu_only() else None

    def _check_io(self) -> None:
        problem = C.io_problem(facts_from_session(self.session, self.path.name))
        if problem:
            raise BackendError(problem)
        numpy_types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
        for arg in self.session.get_inputs():
            self._dtypes[arg.name] = numpy_types.get(arg.type, np.float32)

    def _profile_from_session(self) -> Profile:
        image = next(i for i in self.session.get_inputs() if i.name == C.IMAGE)
        n, _, h, w = (list(image.shape) + [None] * 4)[:4]
        multiple = int(self._metadata.get(C.META_SIZE_MULTIPLE, C.SIZE_MULTIPLE) or C.SIZE_MULTIPLE)
        min_side = int(self._metadata.get(C.META_MIN_SIDE, C.MIN_SIDE) or C.MIN_SIDE)
        return Profile.ranges(min_batch=_dim(n) or 1, max_batch=_dim(n), min_height=_dim(h) or min_side,
                              min_width=_dim(w) or min_side, max_height=_dim(h), max_width=_dim(w),
                              size_multiple=multiple)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        typed = {name: array.astype(self._dtypes.get(name, np.float32), copy=False) for name, array in feed.items()}
        (output,) = self.session.run([C.OUTPUT], typed, self._run_options)
        return {C.OUTPUT: np.asarray(output, dtype=np.float32)}

    def cancel_impl(self) -> None:
        # ONNX Runtime checks this flag between kernels and ends the run with an error (`Backend.infer` turns
        # that into InferenceCancelled); big-lama's CPU kernels are short, so the run stops within a second
        run_options = getattr(self, "_run_options", None)
        if run_options is not None:
            run_options.terminate = True

    def reset_cancel_impl(self) -> None:
        run_options = getattr(self, "_run_options", None)
        if run_options is not None:
            run_options.terminate = False

    def deactivate_impl(self) -> None:
        self.session = None

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    @property
    def weights(self) -> str | None:
        return self._metadata.get(C.META_WEIGHTS) or None

    def describe(self) -> dict[str, Any]:
        providers = self.session.get_providers() if self.session is not None else None
        return {"providers": providers, "device": self.device, "precision": self._metadata.get(C.META_PRECISION),
                "config": self._metadata.get(C.META_CONFIG)}
