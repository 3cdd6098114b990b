"""The Fourier forms on CUDA: parity with cuFFT (fp32, TF32 off), CUDA-graph capture/replay, torch.compile.

Marked `gpu`: without CUDA they skip at collection with "needs an NVIDIA GPU" (tests/gpu_support.py).
"""

from __future__ import annotations

import pytest
import torch

from lama_model import FOURIER_MODES
from lama_model.ffc import FourierUnit
from lama_model.fourier import TorchFFT, make_fourier_transform

pytestmark = pytest.mark.gpu
FORMS = [mode for mode in FOURIER_MODES if mode != "torch"]
#: odd and even sides, one with a power-of-two factor (factorised path), batch > 1
SHAPES = [(2, 3, 64, 64), (3, 2, 63, 65), (2, 4, 96, 80), (4, 1, 25, 41), (1, 2, 128, 96)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", SHAPES)
def test_form_matches_cufft_on_cuda(form, shape):
    """Built with no device scope: every basis must follow the input onto the GPU."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))).cuda()
    transform, reference = make_fourier_transform(form), TorchFFT()
    spectrum = transform(x)
    assert spectrum.device == x.device
    assert (spectrum - reference(x)).abs().max().item() <= 2e-5
    back = transform.inverse(spectrum, *shape[-2:])
    assert (back - reference.inverse(spectrum, *shape[-2:])).abs().max().item() <= 2e-5
    assert (back - x).abs().max().item() <= 2e-5


def _unit(form: str) -> FourierUnit:
    unit = FourierUnit(4, fourier=form)
    torch.nn.init.normal_(unit.conv_layer.weight, std=0.3, generator=torch.Generator().manual_seed(1))
    return unit.cuda().eval()


@pytest.mark.parametrize("form", FOURIER_MODES)
def test_fourier_unit_graph_capture_and_replay(form):
    unit = _unit(form)
    static = torch.randn(2, 4, 48, 40, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(side):
            for _ in range(2):
                unit(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = unit(static)
        for seed in (3, 4):
            fresh = torch.randn(2, 4, 48, 40, generator=torch.Generator().manual_seed(seed)).cuda()
            static.copy_(fresh)
            graph.replay()
            torch.cuda.synchronize()
            assert (out - unit(fresh)).abs().max().item() <= 1e-6


@pytest.mark.parametrize("form", FORMS)
def test_fourier_unit_compiles_on_cuda(form):
    """torch.compile traces the form with no device graph break and matches eager."""
    import shutil

    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("torch.compile (Inductor/Triton) needs a C compiler on this machine; none found")
    unit = _unit(form)
    x = torch.randn(2, 4, 32, 40, device="cuda")
    compiled = torch.compile(unit, fullgraph=True, dynamic=False)
    with torch.no_grad():
        assert (compiled(x) - unit(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("form", FORMS)
def test_padded_spectrum_matches_cufft_and_its_fp16_products_stay_close(form):
    """Spectrum width padded to a multiple of 8 (zero columns): fp32 parity with cuFFT on the real bins, padding
    exactly zero, and fp16 (tensor cores, aligned path) within fp16 rounding of the unpadded fp16 result."""
    from lama_model.fourier import ALIGN

    x = torch.randn(2, 8, 64, 64, generator=torch.Generator().manual_seed(5)).cuda()
    padded, plain = make_fourier_transform(form, ALIGN), make_fourier_transform(form)
    spectrum = padded(x)
    assert spectrum.shape[-1] == 40 and spectrum[..., 33:].abs().max().item() == 0.0
    assert (spectrum[..., :33] - TorchFFT()(x)).abs().max().item() <= 2e-5
    half = x.half()
    error = (padded.inverse(padded(half), 64, 64).float() - plain.inverse(plain(half), 64, 64).float()).abs().max()
    assert error.item() <= 2e-2, error.item()


def test_bases_read_during_capture_survive_cache_eviction():
    """A captured graph keeps the device addresses of the DFT bases it read: filling the eager cache past its size
    afterwards must not free them (a replay would read reused memory)."""
    from lama_model import fourier

    unit = _unit("matmul-dense")
    static = torch.randn(1, 4, 40, 48, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(side):
            unit(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = unit(static)
        for side_length in range(8, 8 + 2 * fourier.EAGER_CACHE_ENTRIES, 2):  # evicts every uncaptured entry
            unit(torch.randn(1, 4, side_length, side_length, device="cuda"))
        # Reuse whatever blocks were freed, at every size a basis of this unit can have (2 KB .. 128 KB).
        garbage = [torch.full((512 * k,), float("nan"), device="cuda") for k in range(1, 65) for _ in range(2)]
        fresh = torch.randn(1, 4, 40, 48, generator=torch.Generator().manual_seed(2)).cuda()
        static.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.isfinite(out).all() and (out - unit(fresh)).abs().max().item() <= 1e-6
    del garbage
