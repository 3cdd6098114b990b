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


# --- bases kept across eager calls -----------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_eager_calls_reuse_their_bases_and_stay_exact_across_sizes(layout, monkeypatch) -> None:
    """The second call of a size builds no basis (no Cos), other sizes and dtypes get their own, and
    results match torch.fft whichever order the sizes come in."""
    from lama_model import fourier

    monkeypatch.setattr(fourier, "_EAGER_BASES", type(fourier._EAGER_BASES)())
    monkeypatch.setattr(fourier, "EAGER_CACHE_ENTRIES", 8)  # one size needs 4-6 entries: evicts below
    built = []
    real_cos = torch.cos
    monkeypatch.setattr(torch, "cos", lambda t: built.append(tuple(t.shape)) or real_cos(t))
    dft = layout()
    builds = []
    for height, width, dtype in [(24, 16, torch.float32), (24, 16, torch.float32), (16, 24, torch.float32),
                                 (24, 16, torch.float64), (40, 40, torch.float32), (24, 16, torch.float32)]:
        before = len(built)
        x = torch.randn(1, 2, height, width, dtype=dtype, generator=torch.Generator().manual_seed(height))
        with torch.inference_mode():
            spectrum = dft(x)
            image = dft.inverse(spectrum, height, width)
        assert (spectrum - TorchFFT()(x)).abs().max().item() <= 1e-5
        assert (image - x).abs().max().item() <= 1e-5
        builds.append(len(built) - before)
    # Built once, reused, built for each new size or dtype, and again once evicted (8 entries kept).
    assert builds[0] > 0 and builds[1] == 0 and all(n > 0 for n in builds[2:]), builds
    assert len(fourier._EAGER_BASES) == 8
    # Bases built under inference mode still serve autograd (no "inference tensor" error).
    x = torch.randn(1, 2, 24, 16, requires_grad=True)
    dft.inverse(dft(x), 24, 16).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_traced_graph_builds_its_bases_from_the_runtime_size() -> None:
    """An eager call first fills the cache; a trace afterwards must still compute the bases from its input's
    size (not bake the cached ones in as constants), so the traced unit is right at another size."""
    from lama_model.ffc import FourierUnit

    unit = FourierUnit(2, fourier="matmul-dense").eval()
    reference = FourierUnit(2, fourier="torch").eval()
    reference.load_state_dict(unit.state_dict())
    with torch.no_grad():
        unit(torch.randn(1, 2, 16, 16))  # fills the eager cache at 16x16
        traced = torch.jit.trace(unit, torch.randn(1, 2, 16, 16), check_trace=False)
        x = torch.randn(1, 2, 24, 40)
        assert (traced(x) - reference(x)).abs().max().item() <= 1e-5
