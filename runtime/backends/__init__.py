"""Inference backends behind one interface (`Backend`): ONNX Runtime, TensorRT, PyTorch.

`create_backend(path)` picks one from the file suffix: `.engine`/`.plan` -> TensorRT, `.onnx` -> ONNX
Runtime, `.ckpt`/`.pt`/`.pth` -> PyTorch. Each backend module imports its framework only when a backend
is created, so importing this package costs numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lama_deploy.errors import UsageError

from .base import Backend, BackendError, InferenceCancelled, Profile, profile_from_override

BACKENDS = ("tensorrt", "onnxruntime", "torch")
#: model file suffix -> backend: the one table (Triton's repository writer maps the same suffixes to platforms)
SUFFIX_BACKENDS = {".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt", ".onnx": "onnxruntime",
                   ".ckpt": "torch", ".pt": "torch", ".pth": "torch"}

__all__ = ["BACKENDS", "Backend", "BackendError", "InferenceCancelled", "Profile", "backend_for_path", "create_backend",
           "profile_from_override"]


def backend_for_path(path: str | Path, backend: str = "auto") -> str:
    """The backend name for a model file (`backend` other than "auto" is checked and returned)."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
        return backend
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_BACKENDS:
        raise UsageError(f"cannot tell the backend of {Path(path).name}: use a .engine/.plan/.trt (TensorRT), .onnx "
                         f"(ONNX Runtime) or .ckpt/.pt/.pth (PyTorch) file, or pass --backend")
    return SUFFIX_BACKENDS[suffix]


def create_backend(path: str | Path, backend: str = "auto", device: str | None = None,
                   providers: Sequence[Any] | None = None, **torch_mode: Any) -> Backend:
    """An (inactive) backend for `path`; importing its framework happens here, not at package import.

    `torch_mode` (precision=, fp16_policy=, cuda_graphs=, compile=, cudnn_benchmark=) configures the PyTorch
    backend; None values (and compile="off") are the defaults, and other backends refuse anything else (their
    precision is fixed at export/build).
    """
    name = backend_for_path(path, backend)
    torch_mode = {key: value for key, value in torch_mode.items()
                  if value is not None and (key, value) != ("compile", "off")}
    if torch_mode and name != "torch" and torch_mode != {"precision": "fp32"}:
        options = ", ".join(f"{key}={value}" for key, value in sorted(torch_mode.items()))
        raise BackendError(f"{options} applies to the PyTorch backend (.ckpt/.pt/.pth) only; for the {name} "
                           f"backend the precision is chosen at export/build time")
    if providers and name != "onnxruntime":
        raise BackendError(f"execution providers apply to the ONNX Runtime backend (.onnx) only, not to a {name} "
                           f"model; drop them")
    if name == "tensorrt":
        from .trt_backend import TensorRTBackend

        return TensorRTBackend(path, device=device)
    if name == "onnxruntime":
        from .ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device, providers=providers)
    from .pytorch.backend import TorchBackend

    return TorchBackend.from_checkpoint(path, device=device, **torch_mode)
