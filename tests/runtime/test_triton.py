"""`lama-deploy triton-repo`: the generated config.pbtxt, field by field, and the refusals.

config.pbtxt is parsed with a small protobuf-text-format reader written here (tritonclient's protos are
not a dependency). Where a `tritonserver` binary is available (`LAMA_TRITONSERVER` or on PATH), one
test also lets the real server parse the generated repository.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from lama_deploy import contract as C
from lama_deploy.engine_sidecar import verify_sidecar
from lama_deploy.runtime.triton import image_repos as triton_repo, pbtxt, repo as triton
from lama_deploy.scripts.commands import triton_repo as triton_command

# --- a minimal protobuf text-format reader ------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while text[pos:].strip():
        match = _TOKEN.match(text, pos)
        assert match and match.end() > pos, f"unparsable config near {text[pos:pos + 30]!r}"
        pos = match.end()
        token = match.group(1) or match.group(2) or match.group(3)
        if token:
            out.append(token)
    return out


def _scalar(token: str):
    if token.startswith('"'):
        return token[1:-1]
    try:
        return int(token)
    except ValueError:
        return token  # enum names (TYPE_FP32, KIND_GPU)


def _message(tokens: list[str], end: str | None) -> dict[str, list]:
    fields: dict[str, list] = {}
    while tokens and tokens[0] != end:
        name = tokens.pop(0)
        if tokens[0] == ":":
            tokens.pop(0)
        fields.setdefault(name, []).extend(_values(tokens))
    if end:
        assert tokens.pop(0) == end
    return fields


def _values(tokens: list[str]) -> list:
    token = tokens.pop(0)
    if token == "{":
        return [_message(tokens, "}")]
    if token == "[":
        items = []
        while tokens[0] != "]":
            items.extend(_values(tokens))
            if tokens[0] == ",":
                tokens.pop(0)
        tokens.pop(0)
        return items
    return [_scalar(token)]


def parse_pbtxt(text: str) -> dict[str, list]:
    """Every field maps to the list of its values (repeated fields and `[a, b]` lists alike)."""
    return _message(_tokens(text), None)


# --- fixtures -----------------------------------------------------------------------------------------------

def _fake_engine(folder: Path, max_n: int = 4, min_n: int = 1, flavour: str = "tensorrt", batch_dim: int = -1,
                 dtype: str = "float", profiles: list | None = None) -> Path:
    """Engine bytes are opaque to triton-repo; the sidecar is the builder's format (export.build_engine)."""
    from lama_deploy.profiles import Profile

    engine = folder / "lama.engine"
    engine.write_bytes(b"\x00fake-plan" * 100)
    profiles = profiles or [Profile((min_n, 64, 64), (1, 512, 512), (max_n, 1024, 1024))]
    io = {name: {"shape": [batch_dim, C.CHANNELS[name], -1, -1], "dtype": dtype}
          for name in C.INPUT_NAMES + C.OUTPUT_NAMES}
    sidecar = {"format": 1, "engine": engine.name, "engine_bytes": engine.stat().st_size,
               "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
               "tensorrt": {"flavour": flavour, "version": "10.8.0.43"}, "profiles": [p.as_lists() for p in profiles],
               "io": io, "lama": {C.META_WEIGHTS: C.RANDOM_WEIGHTS_LABEL}}
    (folder / "lama.engine.json").write_text(json.dumps(sidecar))
    return engine


def _config(repo: Path, name: str = "lama") -> dict[str, list]:
    return parse_pbtxt((repo / name / "config.pbtxt").read_text())


def _tensors(config: dict, kind: str) -> dict[str, dict]:
    return {t["name"][0]: t for t in config[kind]}


# --- ONNX ---------------------------------------------------------------------------------------------------

def test_onnx_repository_declares_the_contract(tiny_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    code = triton_command.main(["--repo-kind", "raw", "--model", str(tiny_onnx), "--output", str(repo), "--kind", "cpu",
                        "--max-batch", "8", "--instances", "2", "--preferred-batch", "4", "2",
                        "--max-queue-delay-us", "250"])
    assert code == 0
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == \
        ["lama", "lama/1", "lama/1/model.onnx", "lama/config.pbtxt"]
    assert (repo / "lama/1/model.onnx").read_bytes() == tiny_onnx.read_bytes()
    config = _config(repo)
    assert config["name"] == ["lama"] and config["platform"] == ["onnxruntime_onnx"]
    assert config["max_batch_size"] == [8]
    inputs, outputs = _tensors(config, "input"), _tensors(config, "output")
    assert list(inputs) == list(C.INPUT_NAMES) and list(outputs) == [C.OUTPUT]
    for name, tensor in {**inputs, **outputs}.items():
        assert tensor["data_type"] == ["TYPE_FP32"]
        assert tensor["dims"] == [C.CHANNELS[name], -1, -1]  # no batch dim: Triton's is implicit
    assert config["instance_group"] == [{"count": [2], "kind": ["KIND_CPU"]}]
    assert config["dynamic_batching"] == [{"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": [250]}]
    assert set(config) == {"name", "platform", "max_batch_size", "input", "output", "instance_group",
                           "dynamic_batching"}


def test_no_dynamic_batching_and_defaults(tiny_onnx: Path, tmp_path: Path) -> None:
    result = triton.write_triton_repo(tiny_onnx, tmp_path / "repo", name="inpaint-v2", dynamic_batching=False)
    config = _config(tmp_path / "repo", "inpaint-v2")
    assert "dynamic_batching" not in config
    assert config["max_batch_size"] == [4] and config["instance_group"] == [{"count": [1], "kind": ["KIND_GPU"]}]
    assert Path(result.model_path) == tmp_path / "repo/inpaint-v2/1/model.onnx"


def test_existing_model_needs_force_and_is_replaced_whole(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    assert triton_command.main(["--repo-kind", "raw", "--model", str(tiny_onnx), "--output", str(repo), "--max-batch", "2"]) == 0
    assert triton_command.main(["--repo-kind", "raw", "--model", str(tiny_onnx), "--output", str(repo), "--max-batch", "3"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert _config(repo)["max_batch_size"] == [2]
    assert triton_command.main(["--repo-kind", "raw", "--model", str(tiny_onnx), "--output", str(repo), "--max-batch", "3",
                        "--force"]) == 0
    assert _config(repo)["max_batch_size"] == [3]
    assert sorted(p.name for p in repo.iterdir()) == ["lama"]  # no staging or retired folders left


def test_onnx_with_fixed_batch_is_refused(tmp_path: Path, capsys) -> None:
    from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx
    from lama_model import random_model

    static = tmp_path / "static.onnx"
    export_inpainting_onnx(static, model=random_model("tiny", seed=0), config="tiny", options=ExportOptions(batch=1))
    assert triton_command.main(["--repo-kind", "raw", "--model", str(static), "--output", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err
    assert "fixed batch dim" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "repo" / "lama").exists()


# --- TensorRT engine ----------------------------------------------------------------------------------------

def test_engine_repository_uses_plan_and_sidecar_label(tmp_path: Path) -> None:
    engine = _fake_engine(tmp_path, max_n=4)
    result = triton.write_triton_repo(engine, tmp_path / "repo", max_batch=4)
    config_text = (tmp_path / "repo/lama/config.pbtxt").read_text()
    config = parse_pbtxt(config_text)
    assert config["platform"] == ["tensorrt_plan"] and config["max_batch_size"] == [4]
    assert (tmp_path / "repo/lama/1/model.plan").read_bytes() == engine.read_bytes()
    assert config["instance_group"] == [{"count": [1], "kind": ["KIND_GPU"]}]
    assert f"# weights: {C.RANDOM_WEIGHTS_LABEL}" in config_text  # random weights stay labelled
    assert any("built with TensorRT 10.8.0.43" in note for note in result.notes)


def test_engine_batch_range_spans_every_profile(tmp_path: Path) -> None:
    from lama_deploy.profiles import Profile

    profiles = [Profile((1, 64, 64), (1, 256, 256), (2, 512, 512)), Profile((1, 512, 512), (1, 1024, 1024), (3, 2048, 2048))]
    engine = _fake_engine(tmp_path, profiles=profiles)
    assert triton.engine_batch_range(verify_sidecar(engine)) == (1, 3)
    with pytest.raises(triton.UserError, match="exceeds the engine's profile max batch 3"):
        triton.write_triton_repo(engine, tmp_path / "repo", max_batch=4)
    assert triton.write_triton_repo(engine, tmp_path / "repo", max_batch=3).max_batch_size == 3


def test_fp16_engine_io_is_declared_fp16(tmp_path: Path) -> None:
    triton.write_triton_repo(_fake_engine(tmp_path, dtype="half"), tmp_path / "repo")
    config = _config(tmp_path / "repo")
    assert {t["name"][0]: t["data_type"] for t in config["input"] + config["output"]} == \
        {name: ["TYPE_FP16"] for name in C.INPUT_NAMES + C.OUTPUT_NAMES}


def test_max_batch_beyond_engine_profile_is_refused(tmp_path: Path, capsys) -> None:
    engine = _fake_engine(tmp_path, max_n=2)
    assert triton_command.main(["--repo-kind", "raw", "--model", str(engine), "--output", str(tmp_path / "repo"),
                        "--max-batch", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("lama-deploy triton-repo: error: --max-batch 4 exceeds the engine's profile max batch 2; "
                   "use --max-batch 2 or rebuild the engine with a larger max N")
    assert not (tmp_path / "repo" / "lama").exists()


def _has_tensorrt_rtx() -> bool:
    try:
        import tensorrt_rtx  # noqa: F401
    except Exception:  # a broken install raises more than ImportError
        return False
    return True


@pytest.mark.skipif(not _has_tensorrt_rtx(), reason="needs tensorrt_rtx (its builder runs without a GPU)")
def test_real_builder_sidecar(tiny_onnx: Path, tmp_path: Path) -> None:
    """The sidecar `lama-deploy build` really writes: read, RTX refused, the same engine as TensorRT accepted."""
    from lama_deploy.export.build_engine import BuildOptions, build_engine
    from lama_deploy.profiles import Profile

    engine = tmp_path / "tiny.engine"
    build_engine(tiny_onnx, engine, BuildOptions([Profile((1, 64, 64), (1, 128, 128), (2, 256, 256))],
                                                 flavour="tensorrt_rtx", compute_capability="8.9"))  # no GPU here: say which GPU the engine is for
    sidecar = verify_sidecar(engine)
    assert triton.engine_batch_range(sidecar) == (1, 2)
    with pytest.raises(triton.UserError, match="TensorRT-RTX engine"):
        triton.write_triton_repo(engine, tmp_path / "repo", max_batch=2)
    sidecar["tensorrt"]["flavour"] = "tensorrt"  # same file layout as a TensorRT build: the rest must pass
    (tmp_path / "tiny.engine.json").write_text(json.dumps(sidecar))
    triton.write_triton_repo(engine, tmp_path / "repo", max_batch=2)
    assert _config(tmp_path / "repo")["max_batch_size"] == [2]


@pytest.mark.parametrize("case, message", [
    ("no_sidecar", "lama.engine.json not found next to the engine"),
    ("replaced_engine", "lama.engine is corrupt or was replaced"),
    ("rtx", "TensorRT-RTX engine"),
    ("min_batch", "smallest profile batch is 2"),
    ("fixed_batch", "fixed batch dim"),
    ("cpu", "runs on GPU only"),
    ("preferred", "--preferred-batch [8] must lie in 1..4"),
])
def test_engine_refusals(tmp_path: Path, capsys, case: str, message: str) -> None:
    engine = _fake_engine(tmp_path, max_n=4, min_n=2 if case == "min_batch" else 1,
                          flavour="tensorrt_rtx" if case == "rtx" else "tensorrt",
                          batch_dim=1 if case == "fixed_batch" else -1)
    if case == "no_sidecar":
        (tmp_path / "lama.engine.json").unlink()
    if case == "replaced_engine":
        engine.write_bytes(b"another engine of the same length!"[:10] * 100)
    argv = ["--repo-kind", "raw", "--model", str(engine), "--output", str(tmp_path / "repo")]
    argv += {"cpu": ["--kind", "cpu"], "preferred": ["--preferred-batch", "8"]}.get(case, [])
    assert triton_command.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "repo" / "lama").exists()


def test_unknown_file_type_and_missing_model(tmp_path: Path, capsys) -> None:
    weird = tmp_path / "model.pt"
    weird.write_bytes(b"not a model")
    assert triton_command.main(["--repo-kind", "raw", "--model", str(weird), "--output", str(tmp_path / "repo")]) == 2
    assert "cannot tell what model.pt is" in capsys.readouterr().err
    assert triton_command.main(["--repo-kind", "raw", "--model", str(tmp_path / "absent.onnx"),
                        "--output", str(tmp_path / "repo")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_bad_name_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(triton.UserError, match="not a valid model folder name"):
        triton.write_triton_repo(tiny_onnx, tmp_path / "repo", name="../escape")


def test_failed_copy_leaves_nothing_behind(tiny_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    def broken_copy(src, dst):
        Path(dst).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pbtxt.shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        triton.write_triton_repo(tiny_onnx, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and list(tmp_path.iterdir()) == []  # not even the empty folder


# --- the real tritonserver, where one is installed ----------------------------------------------------------

def _tritonserver() -> str | None:
    """$LAMA_TRITONSERVER, PATH, or the nvidia-pytriton wheel's binary (as `lama-deploy triton-serve` finds it)."""
    from lama_deploy.runtime.triton.serve import find_tritonserver

    try:
        return str(find_tritonserver()[0])
    except triton.UserError:
        return None


@pytest.mark.skipif(_tritonserver() is None, reason="needs a tritonserver binary (pip install 'lama-deploy[triton]', "
                                                    "LAMA_TRITONSERVER or PATH)")
def test_tritonserver_parses_generated_config(tiny_onnx: Path, tmp_path: Path) -> None:
    """The server accepts the config; loading may still fail where its onnxruntime backend is absent."""
    triton.write_triton_repo(tiny_onnx, tmp_path / "repo", kind="cpu", preferred_batch=[2, 4])
    binary = Path(_tritonserver())
    backends = binary.parent.parent / "backends"
    cmd = [str(binary), f"--model-repository={tmp_path / 'repo'}", "--exit-on-error=true", "--allow-grpc=false",
           "--allow-metrics=false", "--http-port=0", "--log-verbose=1", "--exit-timeout-secs=1"]
    if backends.is_dir():
        cmd.append(f"--backend-directory={backends}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    log = proc.stdout + proc.stderr
    assert "failed to read text proto" not in log
    assert "Server side auto-completed config" in log
    completed = log.split("Server side auto-completed config")[1]
    assert 'platform: "onnxruntime_onnx"' in completed and "max_batch_size: 4" in completed
    assert "preferred_batch_size: 2" in completed and "preferred_batch_size: 4" in completed
