"""Generated trtexec / polygraphy lines: the right flags per TensorRT version, none that version removed."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
from pathlib import Path

import onnx
import pytest

from lama_deploy.profiles import Profile, make_profiles
from lama_deploy import contract as C
from lama_deploy.errors import UserError
from lama_deploy.export.polygraphy_hooks import HOOK_SCRIPT
from lama_deploy.scripts.trtexec_commands import (
    REMOVED_FLAGS, TARGETS, OnnxFacts, generate_scripts, main, polygraphy_command, read_onnx_facts, render,
    trtexec_command,
)

REPO = Path(__file__).resolve().parents[2]
PROFILE = make_profiles(None, None, None)[0]
SECOND = Profile((1, 64, 64), (1, 128, 128), (1, 256, 256))
FP16_ONNX = OnnxFacts("fp16", [], "tiny")
MAX_ARG_STRLEN = 131072  # Linux limit on one argument


def _flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def _value(argv: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
    return value


@pytest.fixture(scope="module")
def facts32(tiny_onnx: Path) -> OnnxFacts:
    return read_onnx_facts(tiny_onnx)


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_fp32_lines_have_the_version_flags_and_no_removed_ones(key: str) -> None:
    target = TARGETS[key]
    argv = trtexec_command(target, [PROFILE], "fp32", onnx="m.onnx", engine="m.engine", timing_cache="t.cache")
    assert argv[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    assert _value(argv, "--minShapes") == C.shape_spec(1, 256, 256) == "image:1x3x256x256,mask:1x1x256x256"
    assert _value(argv, "--optShapes") == C.shape_spec(*PROFILE.opt)
    assert _value(argv, "--maxShapes") == C.shape_spec(*PROFILE.max)
    assert _value(argv, "--memPoolSize") == "workspace:4096" and _value(argv, "--timingCacheFile") == "t.cache"
    assert "--noTF32" in argv and argv[-1] == ("--buildOnly" if key == "trt85" else "--skipInference")
    assert not set(_flags(argv)) & set(REMOVED_FLAGS[key])
    assert not {"--fp16", "--layerPrecisions", "--stronglyTyped"} & set(_flags(argv))


@pytest.mark.parametrize("key", ["trt85", "trt86", "trt10"])
def test_fp16_on_weak_typing_pins_everything_but_the_generator_layers(key: str, facts32: OnnxFacts,
                                                                      tiny_onnx: Path) -> None:
    argv = trtexec_command(TARGETS[key], [PROFILE], "fp16", facts=facts32)
    assert {"--fp16", "--layerPrecisions", "--layerOutputTypes"} <= set(_flags(argv))
    assert "--precisionConstraints=obey" in argv and not set(_flags(argv)) & set(REMOVED_FLAGS[key])
    precisions = _value(argv, "--layerPrecisions").split(",")
    assert precisions[0] == "*:fp32" and _value(argv, "--layerOutputTypes") == _value(argv, "--layerPrecisions")
    names = {entry.rsplit(":", 1)[0] for entry in precisions[1:]}
    assert all(entry.endswith(":fp16") for entry in precisions[1:])
    nodes = {node.name: node.op_type for node in onnx.load(str(tiny_onnx)).graph.node}
    assert names <= set(nodes) and len(names) == len(facts32.fp16_layers) > 10  # real names, 8.5 has no patterns
    assert not any("/fu/" in name or "*" in name for name in names)
    assert {nodes[name] for name in names} >= {"Conv", "Relu"}
    assert not {"Cos", "Sin", "Range", "Mod", "MatMul"} & {nodes[name] for name in names}


def test_fp16_onnx_on_10x_builds_strongly_typed_and_on_11x_needs_no_flags() -> None:
    argv10 = trtexec_command(TARGETS["trt10"], [PROFILE], "fp16", facts=FP16_ONNX)
    assert "--stronglyTyped" in argv10 and "--fp16" not in argv10
    argv11 = trtexec_command(TARGETS["trt11"], [PROFILE], "fp16", facts=FP16_ONNX)
    assert not set(_flags(argv11)) & set(REMOVED_FLAGS["trt11"])
    with pytest.raises(UserError, match="strongly typed: --precision fp16 needs the fp16 ONNX"):
        trtexec_command(TARGETS["trt11"], [PROFILE], "fp16", facts=OnnxFacts("fp32", ["x"], "tiny"))


def test_profiles_and_optimization_level_per_version() -> None:
    argv = trtexec_command(TARGETS["trt10"], [PROFILE, SECOND], "fp32", optimization_level=4)
    assert [a for a in argv if a.startswith("--profile=")] == ["--profile=0", "--profile=1"]
    assert argv.index("--profile=1") < argv.index(f"--minShapes={C.shape_spec(*SECOND.min)}")
    assert "--builderOptimizationLevel=4" in argv
    assert "--builderOptimizationLevel=4" in trtexec_command(TARGETS["trt86"], [PROFILE], optimization_level=4)
    with pytest.raises(UserError, match="one optimisation profile"):
        trtexec_command(TARGETS["trt86"], [PROFILE, SECOND])
    with pytest.raises(UserError, match="added in 8.6"):
        trtexec_command(TARGETS["trt85"], [PROFILE], optimization_level=4)


def test_polygraphy_lines_mirror_the_profile() -> None:
    argv = polygraphy_command(TARGETS["trt86"], [PROFILE], "fp32", onnx="m.onnx", engine="m.engine")
    start = argv.index("--trt-min-shapes")
    assert argv[start + 1: start + 3] == ["image:[1,3,256,256]", "mask:[1,1,256,256]"]
    assert argv[argv.index("--trt-max-shapes") + 1] == "image:[2,3,1024,1024]"
    assert argv[argv.index("--pool-limit") + 1] == "workspace:4096M" and "--fp16" not in argv
    rtx = polygraphy_command(None, [PROFILE], "fp32", compute_capability="8.9")
    assert rtx[rtx.index("--compute-capabilities") + 1] == "8.9" and "--load-timing-cache" not in rtx


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="needs TensorRT-RTX")
def test_generated_tensorrt_rtx_polygraphy_line_builds_an_engine(tiny_onnx: Path, tmp_path: Path) -> None:
    engine = tmp_path / "tiny.engine"
    # No pool limit: how much workspace the max shape needs depends on the graph (measured, not the point here).
    argv = polygraphy_command(None, [PROFILE], "fp32", onnx=str(tiny_onnx), engine=str(engine), workspace_mib=None,
                              compute_capability="8.9")
    done = subprocess.run(argv, cwd=REPO, env={**os.environ, "POLYGRAPHY_USE_TENSORRT_RTX": "1"},
                          capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert engine.stat().st_size > 100_000 and "compute capabilities: [(8, 9)]" in log
    assert "TF32" not in log.split("Flags", 1)[1].splitlines()[0]  # our config hook turned TF32 off


def test_written_scripts_are_executable_and_parse(facts32: OnnxFacts, tmp_path: Path) -> None:
    paths = generate_scripts(tmp_path, [PROFILE], facts32, FP16_ONNX)
    names = {p.name for p in paths}
    assert {"trtexec_trt85_fp32.sh", "trtexec_trt85_fp16.sh", "trtexec_trt11_fp16.sh",
            "polygraphy_rtx_fp16.sh"} <= names and len(paths) == 18
    for path in paths:
        assert os.access(path, os.X_OK)
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, path.name
    text = (tmp_path / "trtexec_trt85_fp16.sh").read_text()
    assert "# Target: JetPack 5.1.x (TensorRT 8.5.2)" in text and '"--onnx=${ONNX}"' in text


CHECKED_IN = sorted((REPO / "scripts" / "trtexec").glob("*.sh"))


@pytest.mark.parametrize("path", CHECKED_IN, ids=[p.name for p in CHECKED_IN])
def test_checked_in_scripts_follow_the_contract(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "# Target: " in text and os.access(path, os.X_OK)
    argv = shlex.split(text.split('TIMING_CACHE="${3:-${ENGINE%.*}.timing.cache}"\n', 1)[1].replace("\\\n", " "))
    key = path.stem.split("_")[1]
    if argv[0] == "trtexec":
        assert not set(_flags(argv)) & set(REMOVED_FLAGS[key])
        assert _value(argv, "--minShapes") == C.shape_spec(*PROFILE.min)
        assert _value(argv, "--maxShapes") == C.shape_spec(*PROFILE.max)
        assert all(len(a) < MAX_ARG_STRLEN for a in argv)
    else:
        assert argv[argv.index("--trt-min-shapes") + 1] == "image:[1,3,256,256]"


def test_print_mode(tiny_onnx: Path, capsys) -> None:
    assert main(["--onnx", str(tiny_onnx), "--print", "--target", "trt86", "--precision", "fp16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# TensorRT 8.6") and out[1].startswith("trtexec ") and out[2].startswith("polygraphy ")
    assert "--fp16" in out[1] and "'--layerPrecisions=*:fp32," in out[1]


def test_render_keeps_placeholders_expandable() -> None:
    text = render(["trtexec", "--onnx=${ONNX}", "--layerPrecisions=*:fp32"])
    assert text == "trtexec \"--onnx=${ONNX}\" '--layerPrecisions=*:fp32'"


def test_polygraphy_hook_script_imports_from_a_bare_checkout(tmp_path: Path) -> None:
    """The generated polygraphy lines load export/polygraphy_hooks.py as a script: it must work uninstalled."""
    import shutil
    import sys

    for folder in ("lama_deploy", "export", "runtime", "scripts"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    load = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('hooks', sys.argv[1]); "
            "module = importlib.util.module_from_spec(spec); sys.modules['hooks'] = module; "
            "spec.loader.exec_module(module); print(module.polygraphy_pin_fp32, file=sys.stderr); "
            "print(sys.modules['lama_deploy.contract'].__file__)")
    # -S: no site-packages (so no editable install); -P: not the working directory either, as for the
    # polygraphy entry point. Only the script's own path setup can make lama_deploy importable.
    done = subprocess.run([sys.executable, "-S", "-P", "-c", load, str(tmp_path / HOOK_SCRIPT)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(tmp_path / "lama_deploy" / "contract.py")
