"""The exact Fourier scale: same outputs in fp32, Fourier-unit tensors S times smaller."""

from __future__ import annotations

import copy
from functools import lru_cache

import pytest
import torch

from lama_model import random_model
from lama_model.precision import choose_fourier_scale, fold_fourier_scale, fourier_units
from lama_model.synthetic import sample_batch


@lru_cache(maxsize=None)
def _tiny(trained_like: bool):
    """Built once per module (BatchNorm calibration is the slow part); callers get a copy."""
    return random_model("tiny", seed=0, trained_like=trained_like)


def tiny(trained_like: bool):
    return copy.deepcopy(_tiny(trained_like))


def _run(model, size: int = 64) -> torch.Tensor:
    image, mask = sample_batch(1, size, size, 3)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(image), torch.from_numpy(mask))


def _unit_input_peaks(model, size: int = 64) -> list[float]:
    peaks: list[float] = []
    handles = [u.register_forward_hook(lambda _m, inputs, _o: peaks.append(inputs[0].abs().max().item()))
               for u in fourier_units(model)]
    _run(model, size)
    for handle in handles:
        handle.remove()
    return peaks


@pytest.mark.parametrize("trained_like", [False, True])
@pytest.mark.parametrize("scale", [256.0, 3.0])
def test_folded_scale_keeps_fp32_outputs(trained_like: bool, scale: float) -> None:
    model = tiny(trained_like)
    error = (_run(fold_fourier_scale(model, scale)) - _run(model)).abs().max().item()
    assert error <= 1e-5, f"scale {scale}: {error:.2e}"


def test_units_see_inputs_scale_times_smaller_and_the_original_is_untouched() -> None:
    model = tiny(True)
    before = _unit_input_peaks(model)
    rescaled = fold_fourier_scale(model, 64.0)
    after = _unit_input_peaks(rescaled)
    assert len(before) == len(fourier_units(model)) > 0
    assert all(abs(b / a - 64.0) <= 1e-3 * 64 for b, a in zip(before, after))
    assert _unit_input_peaks(model) == before


@pytest.mark.parametrize("fold", ["speedups", "fp16"])
def test_folded_scale_on_batchnorm_folded_models(fold: str) -> None:
    """The export folds BatchNorms first (into convolutions, or into fp16's ScaleShift): still exact."""
    from lama_deploy.export.fp16 import fold_batchnorm
    from lama_deploy.export.speedups import apply_speedups

    model = tiny(True).eval()
    folded = apply_speedups(model, head=False, share_bases=False) if fold == "speedups" else fold_batchnorm(
        apply_speedups(model, head=False, fold_batchnorm=False, share_bases=False))
    error = (_run(fold_fourier_scale(folded, 128.0)) - _run(model)).abs().max().item()
    assert error <= 1e-5, f"{fold}: {error:.2e}"


def test_scale_is_a_power_of_two_growing_with_the_side() -> None:
    assert [choose_fourier_scale(side) for side in (64, 512, 1024, 2048)] == [8.0, 64.0, 128.0, 256.0]
    with pytest.raises(ValueError, match="positive"):
        fold_fourier_scale(tiny(False), 0.0)


def test_big_lama_has_36_fourier_units() -> None:
    from lama_model import InpaintingModel, build_generator

    with torch.device("meta"):
        assert len(fourier_units(InpaintingModel(build_generator("big-lama", "matmul")))) == 36
