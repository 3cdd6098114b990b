"""Random weights have realistic activations; the trained-like variant has the trained model's magnitudes."""

from __future__ import annotations

import torch

from lama_model.synthetic import sample_batch
from lama_model import InpaintingModel, describe_random_weights, random_model
from lama_model.random_weights import activation_stats


def _generator_output(model: InpaintingModel, seed: int = 5) -> torch.Tensor:
    image, mask = (torch.from_numpy(a) for a in sample_batch(2, 128, 128, seed))
    with torch.no_grad():
        return model.generator(torch.cat([image * (1 - mask), mask], 1))


def test_outputs_neither_saturated_nor_constant(tiny_model: InpaintingModel) -> None:
    out = _generator_output(tiny_model)
    saturated = ((out < 0.01) | (out > 0.99)).float().mean().item()
    assert out.std().item() > 0.02, f"output nearly constant (std {out.std().item():.4f})"
    assert saturated < 0.2, f"{saturated:.0%} of outputs saturated"


def test_seeded_weights_are_reproducible() -> None:
    a, b, c = random_model("tiny", seed=1), random_model("tiny", seed=1), random_model("tiny", seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.state_dict()["generator.model.1.ffc.convl2l.weight"],
                           c.state_dict()["generator.model.1.ffc.convl2l.weight"])


def test_trained_like_weights_reach_trained_magnitudes(big_lama_trained_like_model: InpaintingModel) -> None:
    image, mask = sample_batch(1, 256, 256, 7)
    peaks = activation_stats(big_lama_trained_like_model, image, mask)
    assert 3e2 < peaks["bottleneck"] < 3e4, peaks
    largest_var = max(m.running_var.max().item() for m in big_lama_trained_like_model.modules()
                      if isinstance(m, torch.nn.BatchNorm2d))
    assert largest_var > 1e5, f"running_var max {largest_var:.3g}: not trained-like"
    out = _generator_output(big_lama_trained_like_model)
    assert torch.isfinite(out).all() and out.std().item() > 0.02


def test_random_weights_always_say_so() -> None:
    assert "random weights" in describe_random_weights(0)
    assert "NOT trained" in describe_random_weights(3, trained_like=True)
