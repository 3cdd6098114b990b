"""Export with native ONNX `DFT` ops (opset 17: DFT-17, axis as an attribute) instead of DFT-as-matmul.

For runtimes that have a DFT kernel (ONNX Runtime CPU). TensorRT before 11.2 cannot parse `DFT` (its
parser answers "Plugin not found"), which is why the matmul graph is the default. The TorchScript exporter
has no translation for `fft_rfftn`, so the Fourier units are swapped, for the export only, for a transform
whose `symbolic` writes the DFT nodes directly: forward rfft2 = onesided DFT along W then DFT along H;
inverse = inverse DFT along H then inverse onesided DFT along W with `dft_length = W` (odd W exact).
ONNX's inverse DFT divides by the length; the ortho scale is applied explicitly.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import onnx
import torch
from torch import Tensor, nn

from lama_model import InpaintingModel
from lama_model.ffc import FourierUnit
from lama_model.fourier import TorchFFT


def _ortho_scale(g, x, power: float):
    """(H * W) ** power as a float scalar graph value, from the runtime shape of x (…, H, W)."""
    shape = g.op("Shape", x)
    h = g.op("Gather", shape, g.op("Constant", value_t=torch.tensor(-2)))
    w = g.op("Gather", shape, g.op("Constant", value_t=torch.tensor(-1)))
    area = g.op("Cast", g.op("Mul", h, w), to_i=onnx.TensorProto.FLOAT)
    return g.op("Pow", area, g.op("Constant", value_t=torch.tensor(power, dtype=torch.float32)))


class _Rfft2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D401 - autograd signature
        return TorchFFT()(x)

    @staticmethod
    def symbolic(g, x):
        signal = g.op("Unsqueeze", x, g.op("Constant", value_t=torch.tensor([-1])))
        along_w = g.op("DFT", signal, axis_i=3, onesided_i=1, inverse_i=0)
        along_h = g.op("DFT", along_w, axis_i=2, onesided_i=0, inverse_i=0)
        scaled = g.op("Mul", along_h, _ortho_scale(g, x, -0.5))
        return g.op("Transpose", scaled, perm_i=[0, 1, 4, 2, 3])


class _Irfft2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spectrum: Tensor, like: Tensor) -> Tensor:
        return TorchFFT().inverse(spectrum, like.shape[-2], like.shape[-1])

    @staticmethod
    def symbolic(g, spectrum, like):
        interleaved = g.op("Transpose", spectrum, perm_i=[0, 1, 3, 4, 2])      # (B, C, H, Wf, 2)
        along_h = g.op("DFT", interleaved, axis_i=2, onesided_i=0, inverse_i=1)
        width = g.op("Gather", g.op("Shape", like), g.op("Constant", value_t=torch.tensor([-1])))
        signal = g.op("DFT", along_h, width, axis_i=3, onesided_i=1, inverse_i=1)  # (B, C, H, W, 2)
        real = g.op("Gather", signal, g.op("Constant", value_t=torch.tensor(0)), axis_i=4)
        # ONNX's inverse divides by H*W; ortho wants 1/sqrt(H*W): multiply back by sqrt(H*W).
        return g.op("Mul", real, _ortho_scale(g, like, 0.5))


class OnnxDFT(nn.Module):
    """Fourier transform that exports as ONNX DFT ops (computes with torch.fft when run)."""

    def forward(self, x: Tensor) -> Tensor:
        return _Rfft2.apply(x)

    def inverse(self, spectrum: Tensor, height: int, width: int) -> Tensor:
        # A zero-size stand-in carrying (H, W) so the symbolic can read W from the runtime shape.
        like = spectrum.new_zeros(1, 1, height, width)
        return _Irfft2.apply(spectrum, like)


@contextlib.contextmanager
def onnx_dft_units(model: InpaintingModel) -> Iterator[InpaintingModel]:
    """Within the block, `model`'s Fourier units trace to ONNX DFT ops; their own transforms come back after.

    The exporter (`onnx_export`) traces inside this block, so this module needs nothing from it (no circle).
    """
    units = [m for m in model.modules() if isinstance(m, FourierUnit)]
    saved = [u.transform for u in units]
    try:
        for unit in units:
            unit.transform = OnnxDFT()
        yield model
    finally:
        for unit, transform in zip(units, saved):
            unit.transform = transform
