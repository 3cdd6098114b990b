"""Fixtures of the runtime tests: the stand-in libcudart (compiled once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

import fake_tensorrt as fake  # helper module beside these tests


@pytest.fixture(scope="session")
def fake_cudart_path(tmp_path_factory) -> Path:
    """`libcudart.so` built from fake_cudart.c: host memory behind CUDA's C entry points."""
    return fake.build_fake_cudart(tmp_path_factory.mktemp("fake_cudart"))
