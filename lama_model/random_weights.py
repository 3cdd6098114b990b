"""Seeded random weights with calibrated BatchNorm statistics, for tests and demos.

The official weights cannot be downloaded everywhere (CI has no internet), so tests need a stand-in whose
activations have a realistic scale: after PyTorch's default init, the BatchNorm running statistics are
set from generated images and masks (cumulative average in train mode), so every layer sees normalised
inputs and the output is neither saturated nor constant.

`trained_like=True` imitates the trained big-lama's magnitudes (bottleneck activations ~1e3, BatchNorm
running variances ~1e6, Fourier-unit inputs large enough that the spectrum overflows fp16 from about
1024x1024): the BatchNorm affine parameters of the residual branches and of the Fourier-unit inputs are
scaled up before calibration. fp16 problems only show on such weights.
These are random weights: anything made with them is a plumbing demonstration, not inpainting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lama_model.synthetic import sample_batch

from .ffc import FFCResnetBlock, FFCResNetGenerator, SpectralTransform
from .inpainting import InpaintingModel

CALIBRATION_SIZE = (256, 256)
CALIBRATION_BATCHES = 2
CALIBRATION_BATCH_SIZE = 4
#: BatchNorm affine scales that imitate the trained big-lama (field notes): bottleneck activations ~1e3
#: from the residual branches; Fourier-unit inputs whose spectrum (DC ~ mean * sqrt(HW)) passes fp16's
#: 65504 from about 1024x1024 up.
TRAINED_RESIDUAL_SCALE = 25.0
TRAINED_FOURIER_INPUT_SCALE = 500.0


def _randomise_affine(bn: nn.BatchNorm2d, generator: torch.Generator, scale: float) -> None:
    with torch.no_grad():
        bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.5, 1.5, generator=generator) * scale)
        bn.bias.copy_(torch.empty_like(bn.bias).normal_(0.0, 0.1, generator=generator) * scale)


def _trained_like_scales(generator_model: FFCResNetGenerator) -> dict[int, float]:
    """Scale per BatchNorm (by id) whose outputs the trained model carries at large magnitude."""
    scales: dict[int, float] = {}
    for module in generator_model.modules():
        if isinstance(module, FFCResnetBlock):
            for bn in (module.conv2.bn_l, module.conv2.bn_g):
                scales[id(bn)] = TRAINED_RESIDUAL_SCALE
        if isinstance(module, SpectralTransform):
            scales[id(module.conv1[1])] = TRAINED_FOURIER_INPUT_SCALE
    return scales


@torch.no_grad()
def calibrate_batchnorm(model: InpaintingModel, seed: int, size: tuple[int, int] = CALIBRATION_SIZE,
                        batches: int = CALIBRATION_BATCHES, batch_size: int = CALIBRATION_BATCH_SIZE) -> None:
    """Set every BatchNorm's running statistics from generated images (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the calibration batches
    model.train()
    for i in range(batches):
        image, mask = sample_batch(batch_size, size[0], size[1], seed=seed * 1000 + i)
        model(torch.from_numpy(image), torch.from_numpy(mask))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def randomize_weights(model: InpaintingModel, seed: int = 0, trained_like: bool = False) -> InpaintingModel:
    """Seeded init + calibrated BatchNorm, in place; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    scales = _trained_like_scales(model.generator) if trained_like else {}
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            _randomise_affine(module, generator, scales.get(id(module), 1.0))
    calibrate_batchnorm(model, seed)
    # What the weights are travels with the model, so an export of it (or anything else handed the model
    # object) can label it and rebuild it: (seed, trained_like).
    model.random_weights_recipe = (seed, bool(trained_like))
    return model


def describe_random_weights(seed: int, trained_like: bool = False) -> str:
    scale = ", activations scaled like the trained model" if trained_like else ""
    return f"random weights (seed {seed}{scale}; BatchNorm calibrated on generated images) - NOT trained LaMa"


def activation_stats(model: InpaintingModel, image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Largest |activation| at the bottleneck and at the Fourier-unit inputs, for reports and tests."""
    peaks = {"bottleneck": 0.0, "fourier_input": 0.0}
    hooks = []

    def track(key: str):
        def hook(_module, inputs, output):
            tensors = output if isinstance(output, tuple) else (output,)
            for t in tensors:
                if torch.is_tensor(t):
                    peaks[key] = max(peaks[key], float(t.detach().abs().max()))
        return hook

    for module in model.modules():
        if isinstance(module, FFCResnetBlock):
            hooks.append(module.register_forward_hook(track("bottleneck")))
        if isinstance(module, SpectralTransform):
            hooks.append(module.conv1.register_forward_hook(track("fourier_input")))
    try:
        with torch.no_grad():
            model(torch.from_numpy(image), torch.from_numpy(mask))
    finally:
        for h in hooks:
            h.remove()
    return peaks
