"""The DFT-as-matmul forms build every basis, index and scalar on the input's device and in its dtype.

`meta` tensors stand in for CUDA (no GPU here): on its own, meta lets a CPU 0-dim tensor mix with another
device silently, so a dispatch-mode guard refuses every op whose tensor arguments span CPU and another device.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lama_model import InpaintingModel, build_generator
from lama_model.fourier import DenseMatmulDFT, MatmulDFT, TorchFFT, begin_shared_bases, end_shared_bases

FORMS = ("matmul", "matmul-dense")


class RefuseMixedDevices(TorchDispatchMode):
    """Raises on any op that takes a CPU tensor together with a tensor on another device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor)]
        devices = {t.device.type for t in tensors}
        if "cpu" in devices and len(devices) > 1:
            raise AssertionError(f"{func} mixes devices {sorted(devices)}")
        self.ops += 1
        return func(*args, **(kwargs or {}))


def test_guard_refuses_a_cpu_scalar_next_to_meta() -> None:
    """The guard must catch the mix that meta alone lets through (a CPU 0-dim tensor)."""
    x = torch.ones(4, device="meta")
    with pytest.raises(AssertionError, match="mixes devices"), RefuseMixedDevices():
        x * torch.scalar_tensor(2.0)


@pytest.mark.parametrize("fourier", FORMS)
@pytest.mark.parametrize("shared", [False, True])
def test_big_lama_runs_on_meta_without_mixing_devices(fourier: str, shared: bool) -> None:
    with torch.device("meta"):  # only the weights are created here; the forward runs outside the scope
        model = InpaintingModel(build_generator("big-lama", fourier)).eval()
    image, mask = torch.empty(1, 3, 512, 768, device="meta"), torch.empty(1, 1, 512, 768, device="meta")
    guard = RefuseMixedDevices()
    token = begin_shared_bases() if shared else None
    try:
        with torch.no_grad(), guard:
            out = model(image, mask)
    finally:
        if token is not None:
            end_shared_bases(token)
    assert out.device.type == "meta" and out.shape == (1, 3, 512, 768)
    assert guard.ops > 1000


@pytest.mark.parametrize("layout", [MatmulDFT, DenseMatmulDFT])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_bases_follow_the_input_dtype(layout, dtype) -> None:
    """No dtype mix either: the products run in the input's dtype (float64 here checks it tightly)."""
    x = torch.randn(1, 2, 24, 20, generator=torch.Generator().manual_seed(1))
    spectrum = layout()(x.to(dtype))
    restored = layout().inverse(spectrum, 24, 20)
    assert spectrum.dtype == dtype and restored.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float64 else 5e-2
    assert (spectrum[..., :20 // 2 + 1].float() - TorchFFT()(x)).abs().max().item() <= tolerance
    assert (restored.float() - x).abs().max().item() <= tolerance * 4


@pytest.mark.parametrize("fourier", FORMS)
def test_torch_compile_traces_the_tiny_model_in_one_graph(fourier: str) -> None:
    """fullgraph=True fails on any graph break (a CPU basis next to the input would be one on a GPU)."""
    torch._dynamo.reset()
    with torch.device("cpu"):
        model = InpaintingModel(build_generator("tiny", fourier)).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 48, generator=generator)
    mask = (torch.rand(1, 1, 32, 48, generator=generator) > 0.5).float()
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=False)
    with torch.no_grad():
        expected = model(image, mask)
        got = compiled(image, mask)
    assert (got - expected).abs().max().item() <= 1e-6
    explanation = torch._dynamo.explain(model)(image, mask)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
