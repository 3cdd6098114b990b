"""The inpainting model as the official predictor runs it: mask, generate, composite.

`bin/predict.py` in advimman/lama feeds the generator `cat(image * (1 - mask), mask)` and keeps
`mask * prediction + (1 - mask) * image` (`out_key: inpainted`). The mask is binarised here (> 0 is a
hole) so that the exported graph accepts soft or 0/255-style masks the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .configs import GeneratorConfig, get_config
from .ffc import FFCResNetGenerator, FourierUnit
from .fourier import make_fourier_transform


class InpaintingModel(nn.Module):
    """(image [N,3,H,W] in 0..1, mask [N,1,H,W]) -> inpainted [N,3,H,W].

    Args:
        generator: an FFCResNetGenerator (weights loaded by the caller).
    """

    def __init__(self, generator: FFCResNetGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        hole = (mask > 0).to(image.dtype)
        masked = image * (1 - hole)
        prediction = self.generator(torch.cat([masked, hole], dim=1))
        return hole * prediction + (1 - hole) * image


def build_generator(config: str | GeneratorConfig = "big-lama", fourier: str = "torch") -> FFCResNetGenerator:
    """An uninitialised generator of a named (or explicit) configuration."""
    cfg = get_config(config) if isinstance(config, str) else config
    return FFCResNetGenerator(cfg, fourier=fourier)


def set_fourier_mode(module: nn.Module, fourier: str) -> nn.Module:
    """Switch every Fourier unit of a model to another transform, keeping the weights."""
    for sub in module.modules():
        if isinstance(sub, FourierUnit):
            sub.transform = make_fourier_transform(fourier)
        if isinstance(sub, FFCResNetGenerator):
            sub.fourier = fourier
    return module
