"""PyTorch backend: runs `lama_model` directly from a checkpoint (or seeded random weights).

This is the only backend that imports torch and lama_model, and it does so when it is created, so the
edge runtime (ONNX Runtime / TensorRT) never pays for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import InputNotFound, missing_dependency

from .base import Backend, BackendError, Profile


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
                 path: str | Path | None = None) -> None:
        super().__init__()
        self.torch = import_torch()
        self.model = model
        self.path = Path(path) if path is not None else None
        self._weights = weights
        self.device = resolve_device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None, config: str | None = None) -> "TorchBackend":
        device = resolve_device(device)
        import lama_model

        path = Path(path)
        if not path.is_file():
            raise InputNotFound(f"checkpoint {path} does not exist; pass a LaMa .ckpt/.pt/.pth with --model")
        model = lama_model.load_inpainting_model(path, config=config, fourier="torch")
        return cls(model, device=device, weights=f"checkpoint {path.name}", path=path)

    @classmethod
    def from_random_weights(cls, config: str = "tiny", seed: int = 0, device: str | None = None) -> "TorchBackend":
        device = resolve_device(device)
        import lama_model

        model = lama_model.random_model(config, seed=seed, fourier="torch")
        return cls(model, device=device, weights=f"{config}: {lama_model.describe_random_weights(seed)}")

    def activate_impl(self) -> None:
        self.model.to(self.device).eval()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            image = torch.from_numpy(feed[C.IMAGE]).to(self.device)
            mask = torch.from_numpy(feed[C.MASK]).to(self.device)
            output = self.model(image, mask)
        return {C.OUTPUT: output.float().cpu().numpy()}

    @property
    def profile(self) -> Profile:
        return Profile()

    @property
    def weights(self) -> str | None:
        return self._weights

    def describe(self) -> dict[str, Any]:
        return {"device": self.device, "torch": self.torch.__version__}
