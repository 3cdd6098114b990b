"""DFT-as-matmul against torch.fft (norm='ortho'), forward and inverse, over many shapes."""

from __future__ import annotations

import pytest
import torch

from lama_model.fourier import (DenseMatmulDFT, MatmulDFT, TorchFFT, begin_shared_bases, end_shared_bases, irfft_basis,
                                rfft_basis)

SHAPES = [(1, 1), (1, 2), (1, 7), (2, 1), (2, 2), (3, 3), (3, 8), (5, 4), (8, 8), (7, 13), (16, 9), (25, 41),
          (33, 24), (41, 25), (64, 64), (63, 65), (100, 37), (128, 128), (127, 255), (256, 256), (256, 255)]


LAYOUTS = [MatmulDFT, DenseMatmulDFT]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("height,width", SHAPES)
def test_forward_matches_torch_fft(height: int, width: int, layout) -> None:
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))
    error = (layout()(x) - TorchFFT()(x)).abs().max().item()
    assert error <= 1e-5, f"forward {height}x{width}: max abs error {error:.3e}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("height,width", SHAPES)
def test_inverse_matches_irfftn_on_arbitrary_spectra(height: int, width: int, layout) -> None:
    """Arbitrary (non-Hermitian) spectra: the DC/Nyquist imaginary parts must be ignored as irfftn does."""
    g = torch.Generator().manual_seed(7 + height * 31 + width)
    spectrum = torch.randn(2, 3, 2, height, width // 2 + 1, generator=g)
    error = (layout().inverse(spectrum, height, width) - TorchFFT().inverse(spectrum, height, width)).abs().max().item()
    assert error <= 1e-5, f"inverse {height}x{width}: max abs error {error:.3e}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_bases_are_keyed_by_size(layout) -> None:
    """Inside one scope, units of different sizes must still get their own bases."""
    token = begin_shared_bases()
    try:
        for height, width in [(64, 48), (48, 64), (64, 64), (64, 48)]:
            x = torch.randn(1, 2, height, width, generator=torch.Generator().manual_seed(height + width))
            dft = layout()
            assert (dft(x) - TorchFFT()(x)).abs().max().item() <= 1e-5
            assert (dft.inverse(dft(x), height, width) - x).abs().max().item() <= 1e-5
    finally:
        end_shared_bases(token)


@pytest.mark.parametrize("height,width", [(1, 1), (5, 4), (25, 41), (64, 64), (256, 255)])
def test_round_trip_restores_input(height: int, width: int) -> None:
    x = torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(3))
    dft = MatmulDFT()
    error = (dft.inverse(dft(x), height, width) - x).abs().max().item()
    assert error <= 1e-5, f"round trip {height}x{width}: {error:.3e}"


def test_bases_carry_the_ortho_scale_and_exact_dc_nyquist() -> None:
    cos, sin = rfft_basis(8)
    assert cos.shape == (8, 5)
    assert torch.allclose(cos[:, 0], torch.full((8,), 8 ** -0.5))
    # Integer-reduced angles: sin of DC and Nyquist columns is exactly zero.
    assert sin[:, 0].abs().max().item() == 0.0
    assert sin[:, 4].abs().max().item() < 1e-7
    inv_cos, inv_sin = irfft_basis(8)
    assert inv_sin[0].abs().max().item() == 0.0 and inv_sin[4].abs().max().item() == 0.0
    assert torch.allclose(inv_cos[1], 2 * cos[:, 1])  # interior bins count twice


def test_large_sides_keep_accuracy_through_integer_reduction() -> None:
    """(k*n) mod N in integers: at N=1000 the raw angle 2*pi*k*n/N would lose ~1e-4 in fp32."""
    x = torch.randn(1, 1, 3, 1000, generator=torch.Generator().manual_seed(0))
    error = (MatmulDFT()(x) - TorchFFT()(x)).abs().max().item()
    assert error <= 1e-5, f"N=1000: {error:.3e}"
