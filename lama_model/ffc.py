"""LaMa's Fast Fourier Convolution generator (FFCResNetGenerator).

Suvorov et al., "Resolution-robust Large Mask Inpainting with Fourier Convolutions", WACV 2022.
Official code: advimman/lama, `saicinpainting/training/modules/ffc.py`. This re-implementation keeps the
official module tree and `state_dict` keys (`model.N.ffc.convl2l.weight`, `model.N.bn_l.*`, ...) so the
official weights load with `strict=True`, and only the options big-lama and lama-fourier use (no LFU,
no gating, no spectral positional encoding, no SE). The Fourier transform is pluggable (`fourier`):
`"torch"` (torch.fft, the reference) or `"matmul"` (DFT-as-matmul, the deployable graph).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from .configs import GeneratorConfig
from .fourier import make_fourier_transform

# A branch that carries no channels is the integer 0, as in the official code.
Branch = Union[Tensor, int]
Pair = tuple[Branch, Branch]


class FourierUnit(nn.Module):
    """rfft2 -> 1x1 conv on stacked (real, imag) channels -> BN -> ReLU -> irfft2.

    Args:
        channels: input and output channels; the spectral conv sees twice as many.
        fourier: "torch" or "matmul", the transform implementation.
    """

    def __init__(self, channels: int, fourier: str = "torch") -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(channels * 2, channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels * 2)
        self.relu = nn.ReLU()
        self.transform = make_fourier_transform(fourier)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2], x.shape[-1]
        spectrum = self.transform(x)                       # (B, C, 2, H, Wf)
        # Channel order c0.re, c0.im, c1.re, ... as in the official unit.
        features = spectrum.flatten(1, 2)
        features = self.relu(self.bn(self.conv_layer(features)))
        return self.transform.inverse(features.unflatten(1, (-1, 2)), height, width)


class SpectralTransform(nn.Module):
    """The global-to-global path: 1x1 conv-BN-ReLU, Fourier unit with a residual, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, fourier: str = "torch") -> None:
        super().__init__()
        hidden = out_channels // 2
        self.downsample = nn.Identity()  # stride 1 in every block LaMa uses
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
        )
        self.fu = FourierUnit(hidden, fourier)
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))


def _conv_or_identity(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Module:
    if in_channels == 0 or out_channels == 0:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False, padding_mode="reflect")


class FFC(nn.Module):
    """Fast Fourier Convolution: local/global split with four cross paths.

    Args:
        ratio_gin, ratio_gout: share of global channels at the input and output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, fourier: str = "torch") -> None:
        super().__init__()
        in_g = int(in_channels * ratio_gin)
        in_l = in_channels - in_g
        out_g = int(out_channels * ratio_gout)
        out_l = out_channels - out_g
        self.ratio_gout = ratio_gout
        self.convl2l = _conv_or_identity(in_l, out_l, kernel_size, stride, padding)
        self.convl2g = _conv_or_identity(in_l, out_g, kernel_size, stride, padding)
        self.convg2l = _conv_or_identity(in_g, out_l, kernel_size, stride, padding)
        self.convg2g = nn.Identity() if in_g == 0 or out_g == 0 else SpectralTransform(in_g, out_g, fourier)
        self.gate = nn.Identity()  # gating is off in every released LaMa

    def forward(self, x: Union[Tensor, Pair]) -> Pair:
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        out_l: Branch = 0
        out_g: Branch = 0
        if self.ratio_gout != 1:
            # Identity placeholders pass the integer 0 through, so an empty branch adds nothing.
            out_l = self.convl2l(x_l) + self.convg2l(x_g)
        if self.ratio_gout != 0:
            out_g = self.convl2g(x_l) + self.convg2g(x_g)
        return out_l, out_g


class FFC_BN_ACT(nn.Module):  # noqa: N801 - official name, part of the checkpoint's module tree
    """FFC followed by BatchNorm and activation on each non-empty branch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, fourier: str = "torch") -> None:
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding, fourier)
        global_channels = int(out_channels * ratio_gout)
        local_channels = out_channels - global_channels
        self.bn_l = nn.Identity() if ratio_gout == 1 else nn.BatchNorm2d(local_channels)
        self.bn_g = nn.Identity() if ratio_gout == 0 else nn.BatchNorm2d(global_channels)
        self.act_l = nn.Identity() if ratio_gout == 1 else nn.ReLU()
        self.act_g = nn.Identity() if ratio_gout == 0 else nn.ReLU()

    def forward(self, x: Union[Tensor, Pair]) -> Pair:
        x_l, x_g = self.ffc(x)
        return self.act_l(self.bn_l(x_l)), self.act_g(self.bn_g(x_g))


class FFCResnetBlock(nn.Module):
    """Two 3x3 FFCs with a residual connection on both branches."""

    def __init__(self, channels: int, ratio: float, fourier: str = "torch") -> None:
        super().__init__()
        self.conv1 = FFC_BN_ACT(channels, channels, 3, ratio, ratio, padding=1, fourier=fourier)
        self.conv2 = FFC_BN_ACT(channels, channels, 3, ratio, ratio, padding=1, fourier=fourier)

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = x
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        return x_l + y_l, x_g + y_g


class ConcatTupleLayer(nn.Module):
    """(local, global) -> one tensor along channels."""

    def forward(self, x: Pair) -> Tensor:
        x_l, x_g = x
        if not torch.is_tensor(x_g):
            return x_l
        return torch.cat([x_l, x_g], dim=1)


class FFCResNetGenerator(nn.Module):
    """LaMa's generator: stem, downsampling, FFC resnet blocks, transposed-conv upsampling, 7x7 head.

    Input: (B, input_nc, H, W) = cat(image * (1 - mask), mask); output: (B, output_nc, H, W) in 0..1.
    H and W must be multiples of 2**n_downsampling.

    Args:
        config: channel widths, depth and split ratio (see `lama_model.configs`).
        fourier: "torch" (reference) or "matmul" (DFT-as-matmul, deployable).
    """

    def __init__(self, config: GeneratorConfig, fourier: str = "torch") -> None:
        super().__init__()
        self.config = config
        self.fourier = fourier
        ngf, cap = config.ngf, config.max_features
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFC_BN_ACT(config.input_nc, ngf, 7, 0, 0, fourier=fourier),
        ]
        for i in range(config.n_downsampling):
            ratio_gout = config.ratio if i == config.n_downsampling - 1 else 0
            layers.append(FFC_BN_ACT(min(cap, ngf * 2**i), min(cap, ngf * 2 ** (i + 1)), 3, 0, ratio_gout,
                                     stride=2, padding=1, fourier=fourier))
        bottleneck = min(cap, ngf * 2**config.n_downsampling)
        layers += [FFCResnetBlock(bottleneck, config.ratio, fourier) for _ in range(config.n_blocks)]
        layers.append(ConcatTupleLayer())
        for i in range(config.n_downsampling):
            mult = 2 ** (config.n_downsampling - i)
            in_ch, out_ch = min(cap, ngf * mult), min(cap, ngf * mult // 2)
            layers += [
                nn.ConvTranspose2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, config.output_nc, kernel_size=7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
