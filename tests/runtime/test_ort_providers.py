"""ONNX Runtime execution providers chosen by the caller: short or full names, order kept, refused in one line
naming the providers this onnxruntime has (the CPU build here: no CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from lama_deploy import contract as C
from lama_deploy.errors import UsageError
from lama_deploy.runtime.backends import BackendError, create_backend
from lama_deploy.runtime.backends.ort_backend import choose_providers, parse_providers, providers_problem

AVAILABLE = tuple(onnxruntime.get_available_providers())


def test_parse_providers_maps_short_names_in_order() -> None:
    assert parse_providers("TensorRT, cuda,CPU") == (
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert parse_providers("OpenVINO,DirectML,CoreML,cpu,CPU") == (
        "OpenVINOExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider")
    assert parse_providers("MIGraphXExecutionProvider") == ("MIGraphXExecutionProvider",)


@pytest.mark.parametrize("text, words", [("", "no execution provider named"), ("gpu", "unknown execution provider 'gpu'")])
def test_parse_providers_refuses_in_one_line(text: str, words: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_providers(text)
    assert words in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_a_missing_provider_names_the_available_ones() -> None:
    assert "CPUExecutionProvider" in AVAILABLE and "CUDAExecutionProvider" not in AVAILABLE
    line = providers_problem(parse_providers("CUDA,CPU"), AVAILABLE)
    assert line == (f"this onnxruntime has no CUDAExecutionProvider; it has {', '.join(AVAILABLE)}: ask for those; "
                    f"CUDA/TensorRT need `pip install onnxruntime-gpu`")
    assert providers_problem(parse_providers("CPU"), AVAILABLE) is None
    assert choose_providers(AVAILABLE, requested=["cpu"]) == ["CPUExecutionProvider"]


def test_the_backend_refuses_a_missing_provider_and_runs_with_a_present_one(tiny_onnx: Path) -> None:
    backend = create_backend(tiny_onnx, providers=parse_providers("CUDA"))
    with pytest.raises(BackendError) as excinfo:
        backend.activate()
    assert str(excinfo.value) == providers_problem(("CUDAExecutionProvider",), AVAILABLE)
    with create_backend(tiny_onnx, providers=("CPU",)) as backend:
        assert backend.describe()["providers"] == ["CPUExecutionProvider"]
        feed = {C.IMAGE: np.zeros((1, 3, 32, 32), np.float32), C.MASK: np.zeros((1, 1, 32, 32), np.float32)}
        assert backend.infer(feed)[C.OUTPUT].shape == (1, 3, 32, 32)


def test_providers_for_another_backend_are_refused(tmp_path: Path) -> None:
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"0")
    with pytest.raises(BackendError, match="execution providers apply to the ONNX Runtime backend"):
        create_backend(engine, providers=("CUDA",))
