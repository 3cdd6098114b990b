"""Seeded random-weights models kept between test processes: the GPU lane's runs share one calibration.

Calibrating big-lama's BatchNorm runs the model on the CPU (tens of seconds); the GPU lane sets
$LAMA_MODEL_CACHE so that its pytest runs (it starts a fresh one after a hang or crash) build each model once.
Without the variable this is `lama_model.random_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lama_model import InpaintingModel, build_generator, random_model

MODEL_CACHE_ENV = "LAMA_MODEL_CACHE"


def cached_random_model(config: str, seed: int = 0, trained_like: bool = False) -> InpaintingModel:
    """`lama_model.random_model(config, seed, trained_like=...)`, from $LAMA_MODEL_CACHE when built before."""
    folder = os.environ.get(MODEL_CACHE_ENV)
    path = Path(folder) / f"{config}-seed{seed}{'-hot' if trained_like else ''}.pt" if folder else None
    if path is not None and path.is_file():
        model = InpaintingModel(build_generator(config))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = random_model(config, seed=seed, trained_like=trained_like)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)  # atomic: a parallel or killed run never reads half a file
    return model
