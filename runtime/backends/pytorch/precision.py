"""Precision and execution modes of the PyTorch backend, validated once, and the fp16/bf16 safety policy.

fp16/bf16 run under `torch.autocast`, with the Fourier units kept safe the same way as the fp16 export:

- "fourier-fp32" (default): every `FourierUnit` runs with autocast off, on a float32 copy of its input.
  With trained weights the spectrum passes fp16's range (65504) from about 768x768; in fp32 it cannot.
- "fourier-scaled": `lama_model.precision.fold_fourier_scale` folds an exact scale into the weights
  around each unit so that its fp16 intermediates stay in range; the units then run in fp16 too.

Which precision and policy may combine (and with which Fourier form) is judged by
`lama_deploy.contract.precision_problem`, the same function the exporter and the engine builder ask.

fp16 needs a GPU (CPU autocast supports bfloat16 only); bf16 runs on both.

Execution options beside precision: CUDA graphs (`cuda`), `torch.compile` (`compile`: off by default,
"default" or "max-autotune"; to be chosen by GPU measurement, docs/gpu.md) and, unmeasured, cuDNN's
autotuner for the fp32 batch anomaly (`cudnn_benchmark`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lama_deploy import contract as C

from ..base import BackendError

PRECISIONS = C.TORCH_PRECISIONS
DEFAULT_POLICY = C.DEFAULT_FP16_POLICY
#: CUDA-graph switch values of the CLI / server ("auto": on for CUDA, off for CPU).
GRAPH_CHOICES = ("auto", "on", "off")
COMPILE_CHOICES = C.TORCH_COMPILE_MODES


def fp16_policies() -> tuple[str, ...]:
    """The fp16/bf16 safety policies (the contract's declaration; the bench iterates over them)."""
    return C.FP16_POLICIES


@dataclass(frozen=True)
class TorchMode:
    """How the PyTorch backend runs: device, precision, fp16 policy and CUDA graphs (all checked)."""

    device: str
    precision: str = "fp32"
    policy: str | None = None       # None for fp32
    cuda_graphs: bool = False
    graph_cache: int = 8            # graphs kept (one per padded batch/shape), least recently used evicted
    note: str | None = None         # a one-line remark for the user (graphs ignored on CPU, ...)
    compile: str = "off"            # torch.compile mode (COMPILE_CHOICES)
    cudnn_benchmark: bool | None = None  # cuDNN autotuner around each forward (None: torch's global setting)

    @property
    def autocast_dtype(self) -> Any:
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    @property
    def compile_kwargs(self) -> dict[str, Any] | None:
        """`torch.compile` arguments, or None when off. One graph per input shape (dynamic=False): the shapes
        are the padded sizes the CUDA graphs are captured for. With our CUDA graphs inductor must not add its
        own (they would be captured inside ours), hence max-autotune's no-cudagraphs variant."""
        if self.compile == "off":
            return None
        mode = None if self.compile == "default" else self.compile
        if mode == "max-autotune" and self.cuda_graphs:
            mode = "max-autotune-no-cudagraphs"
        return {"mode": mode, "dynamic": False, "fullgraph": False}

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"precision": self.precision, "cuda_graphs": self.cuda_graphs, "compile": self.compile}
        if self.policy:
            facts["fp16_policy"] = self.policy
        if self.cudnn_benchmark is not None:
            facts["cudnn_benchmark"] = self.cudnn_benchmark
        return facts


def resolve_mode(device: str, precision: str | None = None, policy: str | None = None,
                 cuda_graphs: bool | str | None = None, graph_cache: int = 8, compile: str | None = None,
                 cudnn_benchmark: bool | None = None) -> TorchMode:
    """Check the combination and fill the defaults; every refusal is one line naming the way out."""
    precision = precision or "fp32"
    problem = C.precision_problem(precision, policy, None, "torch")
    if problem:
        raise BackendError(problem)
    on_cuda = device.startswith("cuda")
    if precision == "fp16" and not on_cuda:
        raise BackendError("--precision fp16 needs a CUDA device (CPU autocast has no float16 kernels); "
                           "use --device cuda, or --precision bf16 / fp32 on CPU")
    policy = None if precision == "fp32" else policy or DEFAULT_POLICY
    graphs, note = _resolve_graphs(cuda_graphs, on_cuda, device)
    if graph_cache < 1:
        raise BackendError("the CUDA-graph cache must hold at least 1 graph")
    compile = compile or "off"
    if compile not in COMPILE_CHOICES:
        raise BackendError(f"--compile takes {', '.join(COMPILE_CHOICES)}, not {compile!r}")
    if cudnn_benchmark is not None and not isinstance(cudnn_benchmark, bool):
        raise BackendError(f"cudnn_benchmark takes True, False or None, not {cudnn_benchmark!r}")
    return TorchMode(device, precision, policy, graphs, graph_cache, note, compile, cudnn_benchmark)


def _resolve_graphs(value: bool | str | None, on_cuda: bool, device: str) -> tuple[bool, str | None]:
    if isinstance(value, str):
        if value not in GRAPH_CHOICES:
            raise BackendError(f"--cuda-graphs takes {', '.join(GRAPH_CHOICES)}, not {value!r}")
        value = None if value == "auto" else value == "on"
    if value is None:
        note = None if on_cuda else "CUDA graphs are off on CPU (they need a CUDA device)"
        return on_cuda, note
    if value and not on_cuda:
        raise BackendError(f"--cuda-graphs on needs a CUDA device, not {device!r}; use --device cuda or "
                           "--cuda-graphs off")
    return bool(value), None


# --- applying the policy to a model -------------------------------------------------------------------------

def fourier_units(model: Any) -> list[Any]:
    from lama_model.ffc import FourierUnit

    return [m for m in model.modules() if isinstance(m, FourierUnit)]


def _fp32_forward(forward: Any, device_type: str) -> Any:
    import torch

    def forward_fp32(x: Any) -> Any:
        # Autocast off inside the unit: conv, BatchNorm and both transforms see float32.
        with torch.autocast(device_type, enabled=False):
            return forward(x.float())

    forward_fp32.lama_fp32_island = True  # type: ignore[attr-defined]
    return forward_fp32


def apply_policy(model: Any, mode: TorchMode) -> Any:
    """Prepare `model` (in place) for `mode`: fp32 islands around the Fourier units, or the folded scale."""
    if mode.policy == "fourier-fp32":
        device_type = "cuda" if mode.device.startswith("cuda") else "cpu"
        for unit in fourier_units(model):
            if not getattr(unit.forward, "lama_fp32_island", False):
                unit.forward = _fp32_forward(unit.forward, device_type)
    elif mode.policy == "fourier-scaled":
        from lama_model.fourier import TorchFFT
        from lama_model.precision import choose_fourier_scale, fold_fourier_scale

        # One torch.fft unit is enough to refuse: the scale does not help cuFFT.
        form = "torch" if any(isinstance(u.transform, TorchFFT) for u in fourier_units(model)) else "matmul"
        problem = C.precision_problem(mode.precision, mode.policy, form, "torch")
        if problem:
            raise BackendError(problem)

        result = fold_fourier_scale(model, choose_fourier_scale())  # the export's default scale
        model = result if result is not None else model
    if mode.policy is not None:
        from lama_model.fourier import set_spectrum_align

        set_spectrum_align(model, C.fourier_align(mode.precision, mode.policy))  # the export's padding rule
    return model


def autocast_context(mode: TorchMode) -> Any:
    """The autocast scope of one forward (a no-op context for fp32)."""
    import contextlib

    import torch

    if mode.autocast_dtype is None:
        return contextlib.nullcontext()
    device_type = "cuda" if mode.device.startswith("cuda") else "cpu"
    # No weight-cast cache: CUDA-graph capture requires it off (PyTorch's CUDA-graph notes), and one
    # inference reuses a weight only once anyway.
    return torch.autocast(device_type, dtype=mode.autocast_dtype, cache_enabled=False)


def cudnn_scope(mode: TorchMode) -> Any:
    """cuDNN's autotuner on or off for one forward (`mode.cudnn_benchmark`; None leaves torch's setting).

    Only the benchmark flag changes (`torch.backends.cudnn.flags()` would reset every other flag to its
    default). It is process-wide while the forward runs: backends with different settings in concurrent
    threads see each other's value.
    """
    import contextlib

    import torch

    if mode.cudnn_benchmark is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def scope() -> Any:
        saved = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = mode.cudnn_benchmark
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = saved

    return scope()
