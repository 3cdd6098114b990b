"""The generator: official key names/shapes, parameter counts, and the two Fourier modes agreeing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lama_model import CONFIGS, InpaintingModel, build_generator, random_model, set_fourier_mode

# The official generator's key names and shapes (advimman/lama), as printed from the reference module.
TABLES = Path(__file__).resolve().parents[1] / "data"


def _official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    table = TABLES / f"{name}-state-dict.tsv"
    shapes = {}
    for line in table.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return shapes


@pytest.mark.parametrize("name,params,entries", [("big-lama", 50_975_875, 989), ("lama-fourier", 27_048_835, 521)])
def test_official_state_dict_loads_strictly(name: str, params: int, entries: int) -> None:
    official = _official_shapes(name)
    generator = build_generator(name)
    ours = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    assert len(ours) == entries and ours == official
    assert sum(p.numel() for p in generator.parameters()) == params
    # A random state_dict with the official key set and shapes loads with strict=True.
    random_official = {k: torch.randn(s) if s else torch.tensor(0) for k, s in official.items()}
    build_generator(name).load_state_dict(random_official, strict=True)


def test_big_lama_fourier_modes_agree_on_odd_feature_sizes(big_lama_model: InpaintingModel) -> None:
    """200x328 gives 25x41 feature maps at 1/8: odd spectra in every Fourier unit."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 200, 328, generator=g)
    mask = (torch.rand(1, 1, 200, 328, generator=g) > 0.6).float()
    with torch.no_grad():
        reference = big_lama_model.generator(torch.cat([image * (1 - mask), mask], 1))
        set_fourier_mode(big_lama_model, "matmul")
        try:
            matmul = big_lama_model.generator(torch.cat([image * (1 - mask), mask], 1))
        finally:
            set_fourier_mode(big_lama_model, "torch")
    error = (reference - matmul).abs().max().item()
    assert error <= 1e-4, f"generator torch vs matmul: {error:.3e}"
    assert reference.std().item() > 0.01, "random-weights output is constant"


@pytest.mark.parametrize("size", [(16, 16), (64, 96), (264, 200)])
def test_tiny_modes_agree_and_composite(size: tuple[int, int]) -> None:
    model = random_model("tiny", seed=3)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, *size, generator=g)
    mask = (torch.rand(2, 1, *size, generator=g) > 0.5).float() * 255  # 0/255 masks binarise to 0/1
    with torch.no_grad():
        reference = model(image, mask)
        matmul = set_fourier_mode(model, "matmul")(image, mask)
    assert reference.shape == image.shape
    assert (reference - matmul).abs().max().item() <= 1e-5
    keep = mask == 0
    assert torch.equal(reference.expand_as(image)[keep.expand_as(image)], image[keep.expand_as(image)])


def test_configs_table_is_the_single_source() -> None:
    assert set(CONFIGS) >= {"big-lama", "lama-fourier", "tiny"}
    with pytest.raises(ValueError, match="unknown model config"):
        build_generator("huge-lama")
