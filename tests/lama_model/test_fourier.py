"""DFT-as-matmul against torch.fft (norm='ortho'), forward and inverse, over many shapes."""

from __future__ import annotations

import pytest
import torch

from lama_model.fourier import (ALIGN, DenseMatmulDFT, MatmulDFT, TorchFFT, begin_shared_bases, end_shared_bases,
                                irfft_basis, rfft_basis, spectrum_width)

SHAPES = [(1, 1), (1, 2), (1, 7), (2, 1), (2, 2), (3, 3), (3, 8), (5, 4), (8, 8), (7, 13), (16, 9), (25, 41),
          (33, 24), (41, 25), (64, 64), (63, 65), (100, 37), (128, 128), (127, 255), (256, 256), (256, 255)]


LAYOUTS = [MatmulDFT, DenseMatmulDFT]
#: Every form with its default (padded) spectrum width and unpadded.
ALIGNED = [pytest.param(lambda: layout(align), id=f"{layout.__name__}-align{align}")
           for layout in LAYOUTS for align in (ALIGN, 1)]


def unpadded(spectrum: torch.Tensor, width: int) -> torch.Tensor:
    """The W//2+1 real bins of a spectrum; its padding columns, if any, must be exactly zero."""
    padding = spectrum[..., width // 2 + 1:]
    assert padding.numel() == 0 or padding.abs().max().item() == 0.0
    return spectrum[..., :width // 2 + 1]


@pytest.mark.parametrize("make", ALIGNED)
@pytest.mark.parametrize("height,width", SHAPES)
def test_forward_matches_torch_fft(height: int, width: int, make) -> None:
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))
    dft = make()
    spectrum = dft(x)
    assert spectrum.shape == (2, 3, 2, height, spectrum_width(width, dft.align))
    error = (unpadded(spectrum, width) - TorchFFT()(x)).abs().max().item()
    assert error <= 1e-5, f"forward {height}x{width}: max abs error {error:.3e}"


@pytest.mark.parametrize("make", ALIGNED)
@pytest.mark.parametrize("height,width", SHAPES)
def test_inverse_matches_irfftn_on_arbitrary_spectra(height: int, width: int, make) -> None:
    """Arbitrary (non-Hermitian) spectra: the DC/Nyquist imaginary parts must be ignored as irfftn does, and
    so must whatever the padding columns hold (the Fourier unit's conv writes its bias there)."""
    g = torch.Generator().manual_seed(7 + height * 31 + width)
    dft = make()
    padded = torch.randn(2, 3, 2, height, spectrum_width(width, dft.align), generator=g)
    padded[..., width // 2 + 1:] = 1e3  # large, so that any weight on the padding shows
    reference = TorchFFT().inverse(padded[..., :width // 2 + 1], height, width)
    error = (dft.inverse(padded, height, width) - reference).abs().max().item()
    assert error <= 1e-5, f"inverse {height}x{width}: max abs error {error:.3e}"


@pytest.mark.parametrize("width", [1, 2, 7, 8, 14, 15, 16, 64, 65, 128, 256, 255])
def test_padded_width_is_the_next_multiple_of_eight(width: int) -> None:
    """Wp = W//2+1 rounded up to ALIGN (same arithmetic on a traced size); align 1 is the plain width."""
    padded = spectrum_width(width, ALIGN)
    assert padded % ALIGN == 0 and width // 2 + 1 <= padded < width // 2 + 1 + ALIGN
    assert spectrum_width(width, 1) == width // 2 + 1
    assert int(spectrum_width(torch.tensor(width), ALIGN)) == padded


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_bases_are_keyed_by_size(layout) -> None:
    """Inside one scope, units of different sizes must still get their own bases."""
    token = begin_shared_bases()
    try:
        for height, width in [(64, 48), (48, 64), (64, 64), (64, 48)]:
            x = torch.randn(1, 2, height, width, generator=torch.Generator().manual_seed(height + width))
            dft = layout()
            assert (unpadded(dft(x), width) - TorchFFT()(x)).abs().max().item() <= 1e-5
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
    error = (unpadded(MatmulDFT()(x), 1000) - TorchFFT()(x)).abs().max().item()
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
        assert (unpadded(spectrum, width) - TorchFFT()(x)).abs().max().item() <= 1e-5
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


# --- spectrum width padded for tensor cores -------------------------------------------------------------------

@pytest.mark.parametrize("form", ["matmul", "matmul-dense"])
def test_big_lama_unit_at_the_1024_bottleneck_is_exact_with_padding(form: str) -> None:
    """One big-lama-size Fourier unit (192 channels, 384 in the spectral conv) on a 128x128 map, the bottleneck of
    a 1024x1024 image. Padded (Wf 65 -> 72 columns that the conv fills with its bias) it gives what the unpadded
    form gives (within 1e-6), and both match the torch.fft unit in fp32 within 1e-6 of the output's peak (~23
    here: the DC bin sums the whole map; 1e-5 in absolute terms is fp32 rounding at that magnitude).
    Random weights, BatchNorm with a non-zero shift."""
    from lama_model.ffc import FourierUnit
    from lama_model.fourier import set_spectrum_align

    torch.manual_seed(0)
    reference = FourierUnit(192, fourier="torch").eval()
    with torch.no_grad():
        reference.bn.bias.uniform_(-0.02, 0.02)   # a shift: the padding columns become non-zero after the conv
    units = {}
    for align in (1, ALIGN):
        units[align] = set_spectrum_align(FourierUnit(192, fourier=form).eval(), align)
        units[align].load_state_dict(reference.state_dict())
    x = torch.randn(1, 192, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        plain, padded = units[1](x), units[ALIGN](x)
        width = units[ALIGN].transform(x).shape[-1]
    peak = expected.abs().max().item()
    error = (padded - expected).abs().max().item()
    padding_error = (padded - plain).abs().max().item()
    assert width == 72 and padding_error <= 1e-6, f"{form}: padded vs unpadded {padding_error:.3e}"
    assert error <= 1e-6 * peak, f"{form} 128x128 unit: max abs error {error:.3e} (output peak {peak:.1f})"


def test_set_spectrum_align_reaches_every_matmul_transform_and_refuses_zero() -> None:
    from lama_model import random_model, set_fourier_mode
    from lama_model.fourier import set_spectrum_align

    model = set_fourier_mode(random_model("tiny", seed=0), "matmul-dense")
    set_spectrum_align(model, ALIGN)
    aligns = [m.align for m in model.modules() if isinstance(m, DenseMatmulDFT)]
    assert len(aligns) >= 2 and set(aligns) == {ALIGN}
    with pytest.raises(ValueError, match="positive integer"):
        set_spectrum_align(model, 0)


@pytest.mark.parametrize("form", ["matmul", "matmul-dense"])
def test_padded_unit_exported_once_pads_from_the_runtime_width(form: str, tmp_path) -> None:
    """Exported at 16x16 (Wf 9 -> 16), run at other sizes by ONNX Runtime: the padding follows the runtime W."""
    import onnxruntime as ort

    from lama_model.ffc import FourierUnit
    from lama_model.fourier import set_spectrum_align

    torch.manual_seed(0)
    unit = set_spectrum_align(FourierUnit(4, fourier=form).eval(), ALIGN)
    reference = FourierUnit(4, fourier="torch").eval()
    reference.load_state_dict(unit.state_dict())
    path = tmp_path / "unit.onnx"
    torch.onnx.export(unit, (torch.randn(1, 4, 16, 16),), str(path), opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
                      dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in [(16, 16), (24, 40), (64, 64), (8, 30)]:
        x = torch.randn(2, 4, height, width, generator=torch.Generator().manual_seed(width))
        got = session.run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            error = float(abs(got - reference(x).numpy()).max())
        assert error <= 1e-5, f"{form} exported at 16x16, run at {height}x{width}: {error:.3e}"


def test_switching_the_eager_cache_off_rebuilds_every_call(monkeypatch) -> None:
    """`EAGER_CACHE = False` (the benchmark's `no basis cache` rows): every call builds its bases again."""
    from lama_model import fourier

    monkeypatch.setattr(fourier, "_EAGER_BASES", type(fourier._EAGER_BASES)())
    built = []
    real_cos = torch.cos
    monkeypatch.setattr(torch, "cos", lambda t: built.append(1) or real_cos(t))
    x = torch.randn(1, 2, 16, 24)
    dft = DenseMatmulDFT()
    counts = []
    for cache in (True, True, False, False):
        monkeypatch.setattr(fourier, "EAGER_CACHE", cache)
        before = len(built)
        assert (unpadded(dft(x), 24) - TorchFFT()(x)).abs().max().item() <= 1e-5
        counts.append(len(built) - before)
    assert counts[0] > 0 and counts[1] == 0 and counts[2] == counts[3] == counts[0], counts
