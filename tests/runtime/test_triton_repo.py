"""Raw-image Triton repositories without a server: layouts, configs field by field, the steps' bytes, the
launcher's preparation. (`test_triton_serve.py` runs them in a real tritonserver.)"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import lama_deploy
from lama_deploy import contract as C
from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.options import InpaintOptions
from lama_deploy.runtime.triton import image_repos as triton_repo, repo as triton, serve as triton_serve, steps as triton_steps
from lama_deploy.scripts.commands import triton_repo as triton_command
from lama_deploy.runtime.triton.model import PATH_ENV, config_parameters, model_py

sys.path.insert(0, str(Path(__file__).parent))
from test_triton import _fake_engine, parse_pbtxt  # noqa: E402  (the text-format reader and fake engine)

sys.path.pop(0)


def _config(repo: Path, name: str) -> dict[str, list]:
    return parse_pbtxt((repo / name / "config.pbtxt").read_text())


def _params(config: dict) -> dict[str, str]:
    return {p["key"][0]: p["value"][0]["string_value"][0] for p in config["parameters"]}


def _io(config: dict, kind: str) -> dict[str, tuple]:
    return {t["name"][0]: (t["data_type"][0], t["dims"]) for t in config[kind]}


RAW_IN = {"image": ("TYPE_UINT8", [-1, -1, 3]), "mask": ("TYPE_UINT8", [-1, -1])}
RAW_OUT = {"inpainted": ("TYPE_UINT8", [-1, -1, 3])}


def test_python_repository(tiny_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    argv = ["--model", str(tiny_onnx), "--output", str(repo), "--repo-kind", "python", "--instances", "3",
            "--threshold", "20", "--max-side", "256", "--margin", "64"]
    assert triton_command.main(argv) == 0
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == \
        ["lama", "lama/1", "lama/1/model.py", f"lama/1/{tiny_onnx.name}", "lama/config.pbtxt"]
    assert (repo / "lama/1" / tiny_onnx.name).read_bytes() == tiny_onnx.read_bytes()
    config = _config(repo, "lama")
    assert config["backend"] == ["python"] and config["max_batch_size"] == [0]
    # the arrays or the encoded files (each optional), the result as array and as PNG file
    assert _io(config, "input") == {**RAW_IN, "image_file": ("TYPE_STRING", [1]), "mask_file": ("TYPE_STRING", [1])}
    assert _io(config, "output") == {**RAW_OUT, "inpainted_file": ("TYPE_STRING", [1])}
    assert config["instance_group"] == [{"count": [3], "kind": ["KIND_CPU"]}]
    # every option under its own name, as `InpaintOptions.as_text` writes and the model reads back
    assert _params(config) == {"model_file": tiny_onnx.name, **InpaintOptions(threshold=20, max_side=256,
                                                                              margin=64).as_text()}
    assert _params(config)["threshold"] == "20" and _params(config)["backend"] == "auto"
    warmup = config["model_warmup"][0]
    assert warmup["batch_size"] == [1] and {i["key"][0] for i in warmup["inputs"]} == {"image", "mask"}
    assert "InpaintModel as TritonPythonModel" in (repo / "lama/1/model.py").read_text()
    assert triton_command.main(argv) == 2  # exists: --force needed


def test_model_py_shim_honours_the_path_variable(tmp_path: Path, monkeypatch) -> None:
    """The stub ignores PYTHONPATH; the shim's own path handling must find lama_deploy from LAMA_PYTHONPATH."""
    text = model_py("PreProcessModel")
    monkeypatch.setenv(PATH_ENV, f"{tmp_path / 'a'}:{tmp_path / 'b'}:{sys.path[0]}")
    before = list(sys.path)
    namespace: dict = {}
    try:
        exec(compile(text, "model.py", "exec"), namespace)
        assert sys.path[:2] == [str(tmp_path / "a"), str(tmp_path / "b")]  # first, in order, and only once
        assert len(sys.path) == len(before) + 2
    finally:
        sys.path[:] = before
    assert namespace["TritonPythonModel"].__name__ == "PreProcessModel"
    with pytest.raises(ValueError, match="unknown python-backend model"):
        model_py("Nope")


def test_ensemble_repository_for_an_engine(tmp_path: Path) -> None:
    engine = _fake_engine(tmp_path)  # profile 64..1024, opt 512, N 1..4
    repo = tmp_path / "repo"
    assert triton_command.main(["--model", str(engine), "--output", str(repo), "--max-batch", "4", "--threshold", "10"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["lama", "lama_model", "lama_post", "lama_pre"]
    ensemble = _config(repo, "lama")
    assert ensemble["platform"] == ["ensemble"] and ensemble["max_batch_size"] == [0]
    assert _io(ensemble, "input") == RAW_IN and _io(ensemble, "output") == RAW_OUT
    scheduled = ensemble["ensemble_scheduling"][0]["step"]
    steps = [(s["model_name"][0], {m["key"][0]: m["value"][0] for m in s["input_map"]},
              {m["key"][0]: m["value"][0] for m in s["output_map"]}) for s in scheduled]
    assert steps == [
        ("lama_pre", {"image": "image", "mask": "mask"}, {"model_image": "model_image", "model_mask": "model_mask"}),
        ("lama_model", {"image": "model_image", "mask": "model_mask"}, {"inpainted": "model_output"}),
        ("lama_post", {"image": "image", "mask": "mask", "model_output": "model_output"}, {"inpainted": "inpainted"}),
    ]
    model = _config(repo, "lama_model")
    assert model["platform"] == ["tensorrt_plan"] and model["max_batch_size"] == [4]
    assert (repo / "lama_model/1/model.plan").read_bytes() == engine.read_bytes()
    warmup = model["model_warmup"][0]["inputs"]
    assert {i["key"][0]: i["value"][0]["dims"] for i in warmup} == {"image": [3, 512, 512], "mask": [1, 512, 512]}
    pre, post = _config(repo, "lama_pre"), _config(repo, "lama_post")
    assert _params(pre) == _params(post)
    assert {k: _params(pre)[k] for k in ("threshold", "min_height", "max_height", "max_width")} == \
        {"threshold": "10", "min_height": "64", "max_height": "1024", "max_width": "1024"}
    assert _io(pre, "output") == {"model_image": ("TYPE_FP32", [-1, 3, -1, -1]),
                                  "model_mask": ("TYPE_FP32", [-1, 1, -1, -1])}
    assert _io(post, "input")["model_output"] == ("TYPE_FP32", [-1, 3, -1, -1])


def test_auto_kind_and_refusals(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    assert triton.repo_kind(Path("m.onnx"), "auto", "gpu") == "ensemble"
    assert triton.repo_kind(Path("m.onnx"), "auto", "cpu") == "python"
    assert triton.repo_kind(Path("m.engine"), "auto", "cpu") == "ensemble"  # and refused: engines are GPU only
    assert triton.repo_kind(Path("m.ckpt"), "auto", "gpu") == "python"
    engine = _fake_engine(tmp_path)
    for argv, message in [
        (["--model", str(engine), "--repo-kind", "python", "--kind", "cpu"], "runs on GPU only"),
        (["--model", str(tiny_onnx), "--repo-kind", "python", "--threshold", "300"], "threshold 300.0 is out of range"),
        (["--model", str(tmp_path / "absent.onnx"), "--repo-kind", "ensemble"], "does not exist"),
    ]:
        assert triton_command.main(argv + ["--output", str(tmp_path / "repo")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_config_parameters_reader() -> None:
    config = json.loads('{"parameters": {"threshold": {"string_value": "5"}, "max_side": {"string_value": ""}}}')
    params = config_parameters(config)
    assert triton_steps.options_from_parameters(params) == InpaintOptions(threshold=5.0)
    with pytest.raises(ValueError, match="margin 'x' is not a whole number"):
        triton_steps.options_from_parameters({"margin": "x"})
    with pytest.raises(ValueError, match="unknown request parameter 'max_side'"):  # start-up only, not per request
        triton_steps.request_options(InpaintOptions(), '{"max_side": "64"}')
    assert triton_steps.request_options(InpaintOptions(), '{"threshold": "iopaint"}').threshold == 127.0


def test_launch_preparation(tmp_path: Path) -> None:
    (tmp_path / "repo" / "lama").mkdir(parents=True)
    (tmp_path / "repo" / "lama" / "config.pbtxt").write_text('name: "lama"\n')
    try:
        launch = triton_serve.prepare_launch(tmp_path / "repo", http_port=9000, grpc_port=9001, metrics_port=9002)
    except triton.UserError as exc:
        pytest.skip(f"needs a tritonserver: {exc}")
    try:
        assert f"--model-repository={tmp_path / 'repo'}" in launch.argv
        for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                     "--http-port=9000", "--grpc-port=9001", "--metrics-port=9002"):
            assert flag in launch.argv
        assert launch.env[PATH_ENV].split(":")[0] == str(Path(lama_deploy.__file__).resolve().parent.parent)
        if launch.bundled:
            backend_dir = Path(next(a for a in launch.argv if a.startswith("--backend-directory=")).split("=", 1)[1])
            stub = backend_dir / "python" / "triton_python_backend_stub"
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            shipped = triton_serve.pytriton_root() / "python_backend_stubs" / version / "triton_python_backend_stub"
            assert stub.read_bytes() == shipped.read_bytes()
            assert sysconfig.get_config_var("LIBDIR") in launch.env["LD_LIBRARY_PATH"].split(":")
    finally:
        launch.cleanup()
    assert launch.scratch is None or not launch.scratch.exists()
    with pytest.raises(triton.UserError, match="must differ"):
        triton_serve.prepare_launch(tmp_path / "repo", http_port=9000, grpc_port=9000)
    with pytest.raises(triton.UserError, match="holds no model"):
        triton_serve.prepare_launch(tmp_path)


def test_triton_modules_import_thin() -> None:
    """No torch / onnx / tritonclient / pytriton at import time: the Triton modules stay on the thin runtime."""
    import subprocess

    heavy = ("torch", "onnx", "tritonclient", "pytriton", "onnxruntime", "tensorrt")
    code = ("import sys\nimport lama_deploy.runtime.triton.repo, lama_deploy.runtime.triton.image_repos, lama_deploy.runtime."
            "triton.serve, lama_deploy.runtime.triton.model, lama_deploy.runtime.triton.steps\n"
            f"print(' '.join(sorted(n for n in {heavy!r} if n in sys.modules)) or '-')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "-", f"imported: {proc.stdout.strip()}"


# --- what triton-serve can serve, and triton-repo failures that leave nothing ------------------------------

def _fake_server(folder: Path, backends: tuple[str, ...]) -> Path:
    """A tritonserver install stand-in: bin/tritonserver and backends/<name>/ folders (never executed)."""
    binary = folder / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    for name in backends:
        (folder / "backends" / name).mkdir(parents=True)
    return binary


def test_serve_reads_each_models_backend(tiny_onnx: Path, tmp_path: Path) -> None:
    triton_repo.write_ensemble_repo(tiny_onnx, tmp_path / "ensemble")
    assert triton_serve.needed_backends(tmp_path / "ensemble") == {
        "lama_model": "onnxruntime", "lama_pre": "python", "lama_post": "python"}
    triton_repo.write_python_repo(tiny_onnx, tmp_path / "python")
    assert triton_serve.needed_backends(tmp_path / "python") == {"lama": "python"}
    engine_repo = tmp_path / "engine" / "m"
    engine_repo.mkdir(parents=True)
    (engine_repo / "config.pbtxt").write_text('name: "m"\nplatform: "tensorrt_plan"\ninput [\n  { backend: "x" }\n]\n')
    assert triton_serve.needed_backends(tmp_path / "engine") == {"m": "tensorrt"}


def test_serve_refuses_a_missing_backend_before_launching(tiny_onnx: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    from lama_deploy.scripts.commands import triton_serve as serve_command

    monkeypatch.setenv(triton_serve.ENV_BINARY, str(_fake_server(tmp_path / "server", ("python",))))
    triton_repo.write_ensemble_repo(tiny_onnx, tmp_path / "ensemble")
    assert serve_command.main(["--repository", str(tmp_path / "ensemble"), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [
        f"lama-deploy triton-serve: error: {tmp_path / 'server' / 'bin' / 'tritonserver'} has no 'onnxruntime' "
        f"backend (it has python), which model 'lama_model' needs; write the repository with `lama-deploy "
        f"triton-repo --repo-kind python` (the python repository kind), or serve this one with the NGC container "
        f"nvcr.io/nvidia/tritonserver"]
    triton_repo.write_python_repo(tiny_onnx, tmp_path / "python")
    assert serve_command.main(["--repository", str(tmp_path / "python"), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "server" / "bin" / "tritonserver"))
    monkeypatch.setenv(triton_serve.ENV_BINARY, str(_fake_server(tmp_path / "ngc", ("python", "onnxruntime"))))
    assert serve_command.main(["--repository", str(tmp_path / "ensemble"), "--dry-run"]) == 0


@pytest.mark.parametrize("args", [
    ["--repo-kind", "ensemble", "--max-batch", "0"],
    ["--repo-kind", "ensemble", "--preferred-batch", "9"],
    ["--repo-kind", "raw", "--instances", "0"],
    ["--repo-kind", "python", "--backend", "tensorrt"],
])
def test_failed_triton_repo_writes_nothing(tiny_onnx: Path, tmp_path: Path, capsys, args: list[str]) -> None:
    output = tmp_path / "repo"
    assert triton_command.main(["--model", str(tiny_onnx), "--output", str(output), *args]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_a_failed_ensemble_keeps_an_existing_repository_as_it_was(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "repo"
    triton_repo.write_python_repo(tiny_onnx, output, name="other")
    before = sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    assert triton_command.main(["--model", str(tiny_onnx), "--output", str(output), "--repo-kind", "ensemble",
                                "--name", "other"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == before
