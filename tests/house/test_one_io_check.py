"""`contract.io_problem` is the one answer to "is this file our model?": an ONNX with one extra output is
refused by every command with the same line (decision: refused everywhere - the builder, Triton and the
runtime would all carry a tensor the contract does not know)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from lama_deploy import contract as C
from lama_deploy.engine_sidecar import sidecar_path
from lama_deploy.model_facts import read_model_facts
from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.backends import BackendError


@pytest.fixture(scope="module")
def extra_output_onnx(tiny_onnx: Path, tmp_path_factory) -> Path:
    """The tiny export with one more graph output (a copy of `inpainted`)."""
    model = onnx.load(str(tiny_onnx))
    model.graph.node.append(helper.make_node("Identity", [C.OUTPUT], ["extra"], name="extra_copy"))
    model.graph.output.append(helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, ["N", 3, "H", "W"]))
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("extra") / "extra.onnx"
    onnx.save(model, str(path))
    return path


def _error_line(module: str, argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert importlib.import_module(module).main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0].split(": error: ", 1)[1]


def test_extra_output_is_refused_by_every_command_with_one_line(extra_output_onnx: Path, tmp_path: Path,
                                                                 capsys) -> None:
    expected = C.io_problem(read_model_facts(extra_output_onnx))
    assert expected == ("extra.onnx is not a lama-deploy inpainting model: its inputs are ['image', 'mask'] and "
                        "outputs ['extra', 'inpainted'], expected ['image', 'mask'] -> ['inpainted']; "
                        "export it with `lama-deploy export`")
    with pytest.raises(BackendError) as excinfo:
        Inpainter.from_path(extra_output_onnx)
    assert str(excinfo.value) == expected
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    from PIL import Image

    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(image)
    Image.fromarray(np.full((24, 24), 255, np.uint8)).save(mask)
    got = {
        "inpaint": _error_line("lama_deploy.scripts.commands.inpaint", [str(image), str(mask), "-o", str(tmp_path / "out.png"),
                                                           "--model", str(extra_output_onnx)], capsys),
        "validate": _error_line("lama_deploy.scripts.commands.validate", [str(extra_output_onnx), "--out-dir",
                                                                str(tmp_path / "val")], capsys),
        "build": _error_line("lama_deploy.scripts.commands.build", [str(extra_output_onnx), "-o", str(tmp_path / "x.engine"),
                                                                 "--flavour", "tensorrt_rtx",
                                                                 "--compute-capability", "8.9"], capsys),
        "triton-repo": _error_line("lama_deploy.scripts.commands.triton_repo", ["--model", str(extra_output_onnx), "--output",
                                                                  str(tmp_path / "repo")], capsys),
    }
    assert got == dict.fromkeys(got, expected)
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "x.engine").exists()
    assert not (tmp_path / "repo" / "lama").exists()


def test_engine_facts_come_from_the_sidecar_and_get_the_same_check(tmp_path: Path, capsys) -> None:
    """An engine whose sidecar lists an extra output: triton-repo refuses it with the contract's line."""
    import hashlib

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan" * 64)
    nchw = {C.IMAGE: 3, C.MASK: 1, C.OUTPUT: 3, "extra": 3}
    io = {name: {"mode": "input" if name in C.INPUT_NAMES else "output", "shape": [-1, ch, -1, -1], "dtype": "float"}
          for name, ch in nchw.items()}
    sidecar_path(engine).write_text(json.dumps({
        "engine_bytes": engine.stat().st_size, "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "io": io, "profiles": [{"min": [1, 64, 64], "opt": [1, 64, 64], "max": [2, 64, 64]}],
        "lama": {C.META_RANDOM_SEED: "0"}}))
    facts = read_model_facts(engine)
    assert facts.kind == "engine" and sorted(facts.outputs) == ["extra", C.OUTPUT]
    assert C.is_random_weights(facts.metadata) and facts.inputs[C.MASK].dims == (-1, 1, -1, -1)
    line = _error_line("lama_deploy.scripts.commands.triton_repo", ["--model", str(engine), "--output", str(tmp_path / "r")], capsys)
    assert line == C.io_problem(facts) and line.startswith("m.engine is not a lama-deploy inpainting model")
    del io["extra"]
    sidecar = json.loads(sidecar_path(engine).read_text())
    sidecar["io"] = io
    sidecar_path(engine).write_text(json.dumps(sidecar))
    assert C.io_problem(read_model_facts(engine)) is None


def test_wrong_channel_count_is_the_same_kind_of_line(tiny_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    model.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 3   # mask with 3 channels
    path = tmp_path / "three.onnx"
    onnx.save(model, str(path))
    assert C.io_problem(read_model_facts(path)) == ("three.onnx is not a lama-deploy inpainting model: mask has dims "
                                                    "['N', 3, 'H', 'W'], expected [N,1,H,W]; export it with "
                                                    "`lama-deploy export`")
