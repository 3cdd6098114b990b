"""Shared fixtures: models and exports are built once per test session.

Small `tiny` models serve the fast tests; big-lama (random weights, BatchNorm calibrated) is built and
exported once, for the checks where fidelity matters (marked slow; they run in CI too).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from gpu_support import apply_skips
from lama_model import InpaintingModel, random_model

# 2 threads on the shared CI machine; the GPU lane raises it (LAMA_TEST_THREADS) for its CPU-side model builds.
torch.set_num_threads(int(os.environ.get("LAMA_TEST_THREADS", "2")))


def pytest_collection_modifyitems(config, items) -> None:
    """GPU tests skip without CUDA ("needs an NVIDIA GPU"), TensorRT tests without TensorRT, before fixtures."""
    apply_skips(items)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def tiny_model() -> InpaintingModel:
    """Seeded random-weights tiny model in torch.fft (reference) mode."""
    return random_model("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_onnx(artifacts: Path) -> Path:
    """fp32 DFT-as-matmul ONNX of `tiny_model`'s weights (same seed)."""
    from lama_deploy.export.onnx_export import export_inpainting_onnx

    path = artifacts / "tiny.onnx"
    export_inpainting_onnx(path, model=random_model("tiny", seed=0), config="tiny")
    return path


@pytest.fixture(scope="session")
def big_lama_model() -> InpaintingModel:
    """Seeded random-weights big-lama, torch.fft reference mode."""
    return random_model("big-lama", seed=0)


@pytest.fixture(scope="session")
def big_lama_onnx(artifacts: Path) -> Path:
    from lama_deploy.export.onnx_export import export_inpainting_onnx

    path = artifacts / "big-lama.onnx"
    export_inpainting_onnx(path, model=random_model("big-lama", seed=0), config="big-lama")
    return path


@pytest.fixture(scope="session")
def big_lama_trained_like_model() -> InpaintingModel:
    """big-lama random weights with the trained model's activation magnitudes (fp16 stress)."""
    return random_model("big-lama", seed=0, trained_like=True)


@pytest.fixture(scope="session")
def big_lama_fp16_onnx(artifacts: Path) -> Path:
    """Mixed-precision export of the trained-like big-lama weights."""
    from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx

    path = artifacts / "big-lama-fp16.onnx"
    export_inpainting_onnx(path, model=random_model("big-lama", seed=0, trained_like=True), config="big-lama",
                           options=ExportOptions(precision="fp16"))
    return path
