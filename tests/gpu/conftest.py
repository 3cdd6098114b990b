"""GPU tests compare fp32 results exactly: TF32 off around each test (TensorRT fp32 builds turn it off too)."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items) -> None:
    """torch.compile tests last: their cold compiles are the slowest, the lane's time limit should cut them first."""
    items.sort(key=lambda item: "compile" in item.nodeid)


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off: the DFT-as-matmul and graph-vs-eager checks are exact fp32 only then."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
