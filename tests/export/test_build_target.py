"""`lama-deploy build` says which GPUs the engine is for when it can know; unknown is null, never a sentence."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lama_deploy import host
from lama_deploy.export import build_engine
from lama_deploy.scripts.commands.build import main

requires_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                  reason="needs tensorrt_rtx (ahead-of-time builds without a GPU)")


@requires_rtx
def test_no_gpu_and_no_target_is_refused_in_one_line(tiny_onnx: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(host, "cuda_compute_capability", lambda device=0: None)
    engine = tmp_path / "x.engine"
    assert main([str(tiny_onnx), "-o", str(engine), "--flavour", "tensorrt_rtx"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and "no NVIDIA GPU here" in err[0] and "--compute-capability X.Y (one of 7.5" in err[0]
    assert not engine.exists()


@requires_rtx
def test_build_gpu_target_is_recorded(tiny_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    """Built for the GPU it runs on (stood in for: none here): the sidecar names that GPU's compute capability."""
    monkeypatch.setattr(host, "cuda_compute_capability", lambda device=0: "8.9")
    engine = tmp_path / "x.engine"
    assert main([str(tiny_onnx), "-o", str(engine), "--flavour", "tensorrt_rtx", "--min", "1x64x64",
                 "--opt", "1x64x64", "--max", "1x64x64"]) == 0
    assert json.loads((tmp_path / "x.engine.json").read_text())["compute_capability"] == "8.9"


@pytest.mark.parametrize("queried", ["8.6", None])
def test_classic_tensorrt_records_the_build_gpu_or_null(monkeypatch, queried) -> None:
    """Classic TensorRT builds for the GPU it runs on: its compute capability when it can be asked, else None
    (the sidecar's null), never the sentence "the build GPU" in a field meant for X.Y."""
    monkeypatch.setattr(host, "cuda_compute_capability", lambda device=0: queried)
    features = type("F", (), {"compute_capabilities": []})()
    assert build_engine.target_compute_capability(features, None) == queried
