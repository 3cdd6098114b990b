"""The two interchangeable 2-D real Fourier transforms of the FFC Fourier unit.

`TorchFFT` is the reference: `torch.fft.rfftn` / `irfftn` with `norm="ortho"`, as in the official code.

`MatmulDFT` computes the same numbers with matrix products only, so that the exported ONNX graph holds
no `DFT` op (TensorRT before 11.2 cannot parse one). Its bases are built from the tensor's *runtime*
shape with tensor ops (Range, Mul, Mod, Cos, Sin), never from Python ints, so the exported graph stays
dynamic in H and W. Angles are reduced exactly in integers, `(k * n) mod N`, before the float
multiply, which keeps them accurate for any N; the ortho scale `1/sqrt(N)` is folded into each basis so
spectrum magnitudes stay within `sqrt(HW) * max|x|` (fp16 headroom).

Both return / take the spectrum as real tensors with real and imaginary parts stacked the way the
official Fourier unit stacks them: `(B, C, 2, H, W//2+1)` (dim 2 = real, imaginary).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

FOURIER_MODES = ("torch", "matmul")
#: Not offered to users: the pre-factorisation matmul layout, for before/after benchmarks.
EXTRA_FOURIER_MODES = ("matmul-dense",)


def _length_tensor(n: int | Tensor) -> Tensor:
    # Under ONNX tracing `n` is a traced size; scalar_tensor keeps it symbolic instead of a constant.
    return torch.scalar_tensor(n, dtype=torch.float32) if not isinstance(n, Tensor) else n.to(torch.float32)


def dft_angles(rows: Tensor, cols: Tensor, length: Tensor) -> Tensor:
    """2*pi * ((rows[:, None] * cols[None, :]) mod length) / length, reduced exactly in int32.

    `rows` and `cols` are float index vectors (exact integers); broadcasting rather than `torch.outer`
    keeps the ONNX graph free of `Einsum` (TensorRT 8.x restrictions).
    """
    length_i = length.to(torch.int32)
    product = (rows[:, None] * cols[None, :]).to(torch.int32)
    reduced = torch.remainder(product, length_i).to(torch.float32)
    return reduced * (2.0 * math.pi) / length


def _index(n: int | Tensor) -> Tensor:
    return torch.arange(n, dtype=torch.float32)


def rfft_basis(width: int | Tensor) -> tuple[Tensor, Tensor]:
    """(cos, sin) of shape (W, W//2+1), scaled by 1/sqrt(W)."""
    length = _length_tensor(width)
    angles = dft_angles(_index(width), _index(width // 2 + 1), length)
    scale = torch.rsqrt(length)
    return torch.cos(angles) * scale, torch.sin(angles) * scale


def irfft_basis(width: int | Tensor) -> tuple[Tensor, Tensor]:
    """(cos, sin) of shape (W//2+1, W) for the one-sided inverse, scaled by 1/sqrt(W).

    Bins strictly between DC and Nyquist stand for themselves and their conjugate mirror, so they count
    twice; DC and (for even W) Nyquist count once, and their imaginary parts are ignored exactly, as
    `irfftn` ignores them.
    """
    length = _length_tensor(width)
    bins = _index(width // 2 + 1)
    angles = dft_angles(bins, _index(width), length)
    twice = bins * 2.0
    weight = 2.0 - (bins == 0).to(torch.float32) - (twice == length).to(torch.float32)
    scale = torch.rsqrt(length)
    cos = torch.cos(angles) * (weight * scale)[:, None]
    sin = torch.sin(angles) * (weight * scale)[:, None]
    # Imaginary parts of DC and Nyquist carry no information for a real signal: drop them exactly.
    keep_imag = 1.0 - (bins == 0).to(torch.float32) - (twice == length).to(torch.float32)
    return cos, sin * keep_imag[:, None]


def complex_dft_block(height: int | Tensor, inverse: bool) -> Tensor:
    """(2H, 2H) real block matrix of the complex DFT along H, scaled by 1/sqrt(H).

    Acting on real and imaginary parts stacked along H, `[re; im]`, it returns `[re'; im']`:
    forward `[[C, S], [-S, C]]` (e^{-i theta}), inverse `[[C, -S], [S, C]]` (e^{+i theta}).
    """
    length = _length_tensor(height)
    index = _index(height)
    angles = dft_angles(index, index, length)
    scale = torch.rsqrt(length)
    cos, sin = torch.cos(angles) * scale, torch.sin(angles) * scale
    if inverse:
        sin = -sin
    top = torch.cat([cos, sin], dim=1)
    bottom = torch.cat([-sin, cos], dim=1)
    return torch.cat([top, bottom], dim=0)


def rfft_matrix(width: int | Tensor) -> Tensor:
    """(W, 2*Wf) real DFT with columns (bin, part): one product gives re, im interleaved per bin."""
    cos, sin = rfft_basis(width)
    return torch.stack([cos, -sin], dim=-1).flatten(1, 2)


def irfft_matrix(width: int | Tensor) -> Tensor:
    """(2*Wf, W) one-sided inverse with rows (bin, part), for rows laid out as interleaved re, im."""
    cos, sin = irfft_basis(width)
    return torch.stack([cos, -sin], dim=1).flatten(0, 1)


def complex_dft_matrix(height: int | Tensor, inverse: bool) -> Tensor:
    """(2H, 2H) complex DFT along H acting on the right of rows laid out (part, h).

    Forward: columns (part, k), so the product is `[re' | im']`. Inverse: columns (h, part), the
    interleaved layout the one-sided inverse along W reads after one transpose.
    """
    length = _length_tensor(height)
    index = _index(height)
    angles = dft_angles(index, index, length)
    scale = torch.rsqrt(length)
    cos, sin = torch.cos(angles) * scale, torch.sin(angles) * scale
    sin = sin if inverse else -sin
    # What a real (resp. imaginary) input contributes to (re', im') of each output bin.
    if inverse:
        from_re = torch.stack([cos, sin], dim=-1).flatten(1, 2)
        from_im = torch.stack([-sin, cos], dim=-1).flatten(1, 2)
    else:
        from_re = torch.cat([cos, sin], dim=1)
        from_im = torch.cat([-sin, cos], dim=1)
    return torch.cat([from_re, from_im], dim=0)


class TorchFFT(nn.Module):
    """Reference transform: torch.fft with norm='ortho'."""

    def forward(self, x: Tensor) -> Tensor:
        spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        return torch.stack((spectrum.real, spectrum.imag), dim=2)

    def inverse(self, spectrum: Tensor, height: int, width: int) -> Tensor:
        # Keep the official behaviour: torch.complex needs contiguous real/imag halves.
        complex_spectrum = torch.complex(spectrum[:, :, 0].contiguous(), spectrum[:, :, 1].contiguous())
        return torch.fft.irfftn(complex_spectrum, s=(height, width), dim=(-2, -1), norm="ortho")


class DenseMatmulDFT(nn.Module):
    """The first DFT-as-matmul layout: dense bases, the H pass as a broadcast left-multiply.

    Kept as the before-picture for benchmarks: ONNX Runtime runs its (2H, 2H) @ (B, C, 2H, Wf) product as
    B*C small GEMMs at a fraction of the speed of one large GEMM (see `MatmulDFT`).
    """

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        cos_w, sin_w = rfft_basis(width)
        # Real DFT along W: [re | im] of shape (B, C, H, Wf) each, then stacked along H.
        re = torch.matmul(x, cos_w)
        im = -torch.matmul(x, sin_w)
        stacked = torch.cat([re, im], dim=2)                   # (B, C, 2H, Wf)
        spectrum = torch.matmul(complex_dft_block(height, inverse=False), stacked)
        return spectrum.unflatten(2, (2, -1))                  # (B, C, 2, H, Wf)

    def inverse(self, spectrum: Tensor, height: int, width: int) -> Tensor:
        stacked = spectrum.flatten(2, 3)                       # (B, C, 2H, Wf)
        along_h = torch.matmul(complex_dft_block(height, inverse=True), stacked).unflatten(2, (2, -1))
        cos_w, sin_w = irfft_basis(width)
        return torch.matmul(along_h[:, :, 0], cos_w) - torch.matmul(along_h[:, :, 1], sin_w)


class MatmulDFT(nn.Module):
    """DFT-as-matmul: the same transform as TorchFFT, from MatMul/Transpose/Reshape/Mul/Cos/Sin/Mod only.

    Every product contracts the last axis of a tall (B*C*rows, K) matrix by a (K, N) basis, one large
    GEMM each; the layout between them changes by batched 2-D transposes, which ONNX Runtime either
    fuses into the next MatMul or runs as fast block copies. (A broadcast left-multiply, as in
    `DenseMatmulDFT`, runs as B*C narrow GEMMs, several times slower.)
    """

    def forward(self, x: Tensor) -> Tensor:
        # Sizes come from the input's shape only and merged dims are left to Reshape (-1): the exporter
        # folds sizes read from intermediate tensors into constants, which would pin the batch.
        height, width = x.shape[-2], x.shape[-1]
        freqs = width // 2 + 1
        along_w = torch.matmul(x.flatten(0, 1), rfft_matrix(width))          # (B*C, H, [Wf, 2])
        by_bin = along_w.transpose(1, 2).reshape(-1, freqs, 2 * height)       # (B*C, Wf, [2, H])
        spectrum = torch.matmul(by_bin, complex_dft_matrix(height, inverse=False))  # (B*C, Wf, [2, K])
        # Channels are static, so -1 is the batch: (B, C, 2, H, Wf).
        return spectrum.transpose(1, 2).reshape(-1, x.shape[1], 2, height, freqs)

    def inverse(self, spectrum: Tensor, height: int, width: int) -> Tensor:
        freqs = width // 2 + 1
        by_bin = spectrum.reshape(-1, 2 * height, freqs).transpose(1, 2)     # (B*C, Wf, [2, K])
        along_h = torch.matmul(by_bin, complex_dft_matrix(height, inverse=True))    # (B*C, Wf, [H, 2])
        rows = along_h.reshape(-1, freqs, height, 2).transpose(1, 2).reshape(-1, height, 2 * freqs)
        image = torch.matmul(rows, irfft_matrix(width))                      # (B*C, H, W)
        return image.unflatten(0, (-1, spectrum.shape[1]))


def make_fourier_transform(mode: str) -> nn.Module:
    if mode == "torch":
        return TorchFFT()
    if mode == "matmul":
        return MatmulDFT()
    if mode == "matmul-dense":
        return DenseMatmulDFT()
    raise ValueError(f"unknown Fourier mode {mode!r}; choose one of {FOURIER_MODES}")
