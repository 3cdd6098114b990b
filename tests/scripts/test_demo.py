"""`lama-deploy demo`: an engine the user asked for that is not built fails the demo; the ONNX says what it is."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from lama_deploy import contract as C
from lama_deploy.scripts import demo


@pytest.fixture(scope="module")
def failed_engine_demo(tmp_path_factory) -> tuple[int, Path]:
    """The tiny demo with `--engine` whose build fails (exit 2 from `lama-deploy build`)."""
    import lama_deploy.scripts.commands.build as build_engine

    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build_engine, "main", lambda argv: 2)
        code = demo.main(["--config", "tiny", "--out", str(out), "--engine"])
    return code, out


def test_engine_build_failure_fails_the_demo(failed_engine_demo, capsys) -> None:
    code, out = failed_engine_demo
    assert code == 1
    assert "build failed (exit 2" in (out / "demo.json").read_text()


def test_engine_without_tensorrt_fails_the_demo(monkeypatch, tmp_path: Path) -> None:
    from lama_deploy.runtime import trt_import

    def unavailable(flavour=None):
        raise trt_import.TensorRTUnavailable("TensorRT is not available (test)")

    monkeypatch.setattr(trt_import, "import_tensorrt", unavailable)
    note, built = demo._build_engine(tmp_path / "x.onnx", tmp_path, "8.9")
    assert built is False and note.startswith("not built: TensorRT is not available")


def test_demo_onnx_is_labelled_with_its_seed_and_validates(failed_engine_demo, tmp_path: Path, capsys) -> None:
    from lama_deploy.scripts.commands.validate import main as validate_main

    _, out = failed_engine_demo
    metadata = {p.key: p.value for p in onnx.load(str(out / "tiny.onnx"), load_external_data=False).metadata_props}
    assert metadata[C.META_WEIGHTS].startswith("random weights (seed 0")
    assert metadata[C.META_RANDOM_SEED] == "0" and metadata[C.META_TRAINED_LIKE] == "false"
    capsys.readouterr()
    assert validate_main([str(out / "tiny.onnx"), "--out-dir", str(tmp_path), "--shapes", "1x16x16",
                          "--no-tensorrt"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("PASSED")
