"""fp16 for the Fourier units without overflow: an exact power-of-two scale folded into the weights.

With trained weights a Fourier unit's spectrum reaches about sqrt(H*W) times its input (~1e3 at the
bottleneck), past fp16's 65504 from about 768x768. The spectral path of an FFC is

    x = ReLU(BN1(conv1(u)));   out = conv2(x + FU(x));   FU(x) = iDFT(ReLU(BN(conv(DFT(x)))))

and everything in FU is linear except its ReLU, which commutes with a positive scale. So with a scale S:
BN1's affine divided by S gives x/S (ReLU commutes); the FU's BatchNorm shift divided by S (its 1x1 conv
has no bias) gives FU(x/S) = FU(x)/S; conv2's weights multiplied by S give conv2(x/S + FU(x)/S) * S, the
same output. Every tensor of the unit, its input included, is S times smaller. With S a power of two every
multiplication by S is exact in floating point, so the rescaled model computes the same bits as the original
in fp32 (bar subnormals); only the range of the intermediates changes. Both the plain and the BatchNorm-folded
(`export/speedups.py`, `export/fp16.py`) module trees are handled. Pure math, no I/O. The policy names
(`fourier-scaled` is the one that uses this file) and where they may be used are declared by the deployment
contract, not here: the callers decide whether to fold, this file only knows how.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .ffc import FourierUnit, SpectralTransform

#: Bound on a Fourier unit's input with trained weights (big-lama's bottleneck activations are ~1e3).
TRAINED_ACTIVATION_BOUND = 1e3
#: Largest spectrum magnitude aimed at: 64x below fp16's 65504, headroom for the spectral conv and BN.
TARGET_PEAK = 1024.0
#: Spatial downsampling in front of the Fourier units (three stride-2 layers in every LaMa config).
BOTTLENECK_STRIDE = 8


def fourier_units(model: nn.Module) -> list[nn.Module]:
    """Every FourierUnit of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, FourierUnit)]


def spectral_transforms(model: nn.Module) -> list[SpectralTransform]:
    return [m for m in model.modules() if isinstance(m, SpectralTransform)]


def choose_fourier_scale(max_side: int = 2048, activation_bound: float = TRAINED_ACTIVATION_BOUND,
                         target_peak: float = TARGET_PEAK) -> float:
    """Smallest power of two S with sqrt(Hb*Wb) * bound / S <= target_peak at the largest image side.

    The ortho spectrum of an (Hb, Wb) map is at most sqrt(Hb*Wb) times its largest value (Hb = side / 8).
    Powers of two keep the rescaling exact. 2048 -> 256, 1024 -> 128, 512 -> 64.
    """
    side = max(1, int(max_side) // BOTTLENECK_STRIDE)
    needed = side * activation_bound / target_peak
    return float(2 ** max(0, math.ceil(math.log2(needed)))) if needed > 1 else 1.0


def _is_affine_norm(module: nn.Module) -> bool:
    """A BatchNorm or a folded per-channel scale/shift (`ScaleShift` of export/fp16.py)."""
    return isinstance(module, nn.BatchNorm2d) or (hasattr(module, "scale") and hasattr(module, "shift"))


@torch.no_grad()
def _scale_norm_output(norm: nn.Module, factor: float) -> None:
    """Multiply a BatchNorm's (or ScaleShift's) output by `factor`: affine weight and bias both."""
    if isinstance(norm, nn.BatchNorm2d):
        norm.weight.mul_(factor)
        norm.bias.mul_(factor)
    else:
        norm.scale.mul_(factor)
        norm.shift.mul_(factor)


@torch.no_grad()
def _scale_conv_output(conv: nn.Conv2d, factor: float) -> None:
    conv.weight.mul_(factor)
    if conv.bias is not None:
        conv.bias.mul_(factor)


def _scale_input_path(conv1: nn.Module, factor: float) -> None:
    """Multiply the output of conv1 (conv, BN or folded, ReLU) by `factor` through its last affine layer."""
    layers = list(conv1.children()) if isinstance(conv1, nn.Sequential) else [conv1]
    for layer in reversed(layers):
        if _is_affine_norm(layer):
            return _scale_norm_output(layer, factor)
        if isinstance(layer, nn.Conv2d):
            return _scale_conv_output(layer, factor)
    raise ValueError(f"no convolution or BatchNorm to scale in {type(conv1).__name__}")


@torch.no_grad()
def _scale_unit_shift(unit: FourierUnit, factor: float) -> None:
    """Make the unit's BN (or folded bias) see an input `factor` times the original: shift times factor."""
    if isinstance(unit.bn, nn.BatchNorm2d):
        unit.bn.running_mean.mul_(factor)
        unit.bn.bias.mul_(factor)
    elif _is_affine_norm(unit.bn):
        unit.bn.shift.mul_(factor)
    elif unit.conv_layer.bias is not None:  # BatchNorm folded into the spectral conv
        unit.conv_layer.bias.mul_(factor)


def fold_fourier_scale(model: nn.Module, scale: float) -> nn.Module:
    """A deep copy of `model` whose Fourier units see inputs and produce outputs `scale` times smaller.

    Exact in real arithmetic, and bit-exact in floating point when `scale` is a power of two.
    """
    if not scale > 0:
        raise ValueError(f"the Fourier scale must be positive, not {scale}")
    rescaled = copy.deepcopy(model)
    inverse = 1.0 / scale
    for path in spectral_transforms(rescaled):
        _scale_input_path(path.conv1, inverse)
        _scale_unit_shift(path.fu, inverse)
        with torch.no_grad():
            path.conv2.weight.mul_(scale)  # a bias of conv2 (folded BN) adds after the product: unchanged
    return rescaled
