"""PyTorch backend: runs `lama_model` directly from a checkpoint (or seeded random weights).

This is the only backend that imports torch and lama_model, and it does so when it is created, so the
edge runtime (ONNX Runtime / TensorRT) never pays for them. Precision (fp32 / fp16 / bf16 with the Fourier
units kept safe) and the execution options (`torch.compile`, cuDNN autotuning) are `precision`; on
CUDA, pinned staging and CUDA graphs are `cuda`. With `compile` on, the first call of each input shape
compiles; its time is reported apart (`describe()["first_call_s"]`), as it is not the steady state.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import InputNotFound, missing_dependency

from ..base import Backend, BackendError, InferenceCancelled, Profile
from .precision import TorchMode, apply_policy, autocast_context, cudnn_scope, resolve_mode


def import_torch():
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "pip install torch (see pytorch.org for the build for your GPU)") from None
    return torch


def resolve_device(device: str | None) -> str:
    """"cuda" when available and nothing was asked; refuse cuda without a GPU before any model is built."""
    torch = import_torch()
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--device {device} was asked for but this torch has no usable CUDA GPU; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BackendError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    return device


class TorchBackend(Backend):
    """An `lama_model.InpaintingModel` on "cpu" or "cuda[:i]" (default: cuda when available)."""

    name = "torch"

    def __init__(self, model: Any, device: str | None = None, weights: str | None = None,
                 path: str | Path | None = None, precision: str | None = None, fp16_policy: str | None = None,
                 cuda_graphs: bool | str | None = None, graph_cache: int = 8, compile: str | None = None,
                 cudnn_benchmark: bool | None = None) -> None:
        super().__init__()
        self.torch = import_torch()
        self.model = model
        self.path = Path(path) if path is not None else None
        self._weights = weights
        self.device = resolve_device(device)
        self.mode: TorchMode = resolve_mode(self.device, precision, fp16_policy, cuda_graphs, graph_cache, compile,
                                            cudnn_benchmark)
        self.executor: Any = None
        self._run: Any = self._eager_forward     # the model's forward, or its torch.compile'd version
        self.first_call_s: dict[str, float] = {}  # input shape -> seconds of its first forward (compile included)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None, config: str | None = None,
                        **mode: Any) -> "TorchBackend":
        device = resolve_device(device)
        resolve_mode(device, **_mode_args(mode))  # refuse a bad mode before the checkpoint is read
        import lama_model

        path = Path(path)
        if not path.is_file():
            raise InputNotFound(f"checkpoint {path} does not exist; pass a LaMa .ckpt/.pt/.pth with --model")
        model = lama_model.load_inpainting_model(path, config=config, fourier="torch")
        return cls(model, device=device, weights=f"checkpoint {path.name}", path=path, **mode)

    @classmethod
    def from_random_weights(cls, config: str = "tiny", seed: int = 0, device: str | None = None,
                            **mode: Any) -> "TorchBackend":
        device = resolve_device(device)
        resolve_mode(device, **_mode_args(mode))
        import lama_model

        model = lama_model.random_model(config, seed=seed, fourier="torch")
        return cls(model, device=device, weights=f"{config}: {lama_model.describe_random_weights(seed)}", **mode)

    def activate_impl(self) -> None:
        self.model = apply_policy(self.model.to(self.device).eval(), self.mode)
        options = self.mode.compile_kwargs
        # The autocast scope is compiled with the model, so the compiled graph carries the precision policy.
        self._run = self._eager_forward if options is None else self.torch.compile(self._eager_forward, **options)
        # A forward stops at its next layer when cancelled; compiled, at its end (a hook per layer would break
        # the compiled graph into hundreds of pieces).
        self._cancel_hooks = [] if options is not None else [
            module.register_forward_pre_hook(self._stop_if_cancelled) for module in self.model.modules()]
        if self.device.startswith("cuda"):
            from .cuda import CudaExecutor

            self.executor = CudaExecutor(self.torch, self._forward, self.device, self.mode.cuda_graphs,
                                         self.mode.graph_cache)

    def _eager_forward(self, image: Any, mask: Any) -> Any:
        with autocast_context(self.mode):
            return self.model(image, mask).float()

    def _forward(self, image: Any, mask: Any) -> Any:
        """One forward; the first of each input shape is timed (with compile on, that is the compile)."""
        shape = "x".join(str(d) for d in image.shape)
        with cudnn_scope(self.mode):
            if shape in self.first_call_s:
                return self._run(image, mask)
            start = time.perf_counter()
            try:
                output = self._run(image, mask)
            except Exception as exc:
                # Not the compile's fault: a cancel, a user error, the GPU out of memory.
                if self.mode.compile == "off" or isinstance(exc, (InferenceCancelled, BackendError,
                                                                  self.torch.cuda.OutOfMemoryError)):
                    raise
                line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise BackendError(f"--compile {self.mode.compile} failed on the first call ({type(exc).__name__}: "
                                   f"{line}); run with --compile off") from exc
            if image.is_cuda and not self.torch.cuda.is_current_stream_capturing():
                self.torch.cuda.synchronize(image.device)
        self.first_call_s[shape] = round(time.perf_counter() - start, 3)
        return output

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.executor is not None:
            return {C.OUTPUT: self.executor.run(feed)}
        with self.torch.inference_mode():
            image = self.torch.from_numpy(feed[C.IMAGE])
            mask = self.torch.from_numpy(feed[C.MASK])
            output = self._forward(image, mask)
        return {C.OUTPUT: output.cpu().numpy()}

    def _stop_if_cancelled(self, module: Any, inputs: Any) -> None:
        self._raise_if_cancelled()

    def deactivate_impl(self) -> None:
        for hook in getattr(self, "_cancel_hooks", []):
            hook.remove()
        self._cancel_hooks = []
        if self.executor is not None:
            self.executor.close()
            self.executor = None

    @property
    def profile(self) -> Profile:
        return Profile()

    @property
    def weights(self) -> str | None:
        return self._weights

    def describe(self) -> dict[str, Any]:
        facts = {"device": self.device, "torch": self.torch.__version__, **self.mode.describe(),
                 "first_call_s": dict(self.first_call_s)}
        if self.executor is not None:
            facts.update(self.executor.stats())
        return facts


def _mode_args(mode: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `resolve_mode` among a backend's mode options."""
    names = {"precision": "precision", "fp16_policy": "policy", "cuda_graphs": "cuda_graphs", "graph_cache": "graph_cache",
             "compile": "compile", "cudnn_benchmark": "cudnn_benchmark"}
    unknown = set(mode) - set(names)
    if unknown:
        raise TypeError(f"unknown PyTorch backend option(s): {', '.join(sorted(unknown))}")
    return {names[key]: value for key, value in mode.items()}
