"""The runtime under Python 3.8 (JetPack 5) with only numpy, Pillow, tqdm and onnxruntime installed.

Needs the venv `.ci/py38-venv` makes (`.ci/run` builds it and runs this file with LAMA_PY38_PYTHON set);
without it these tests skip and say so. The compile check needs only a python3.8 binary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama_deploy import contract as C

import fake_tensorrt as fake
from test_check_engine import make_reference

REPO = Path(__file__).resolve().parents[2]
PY38 = os.environ.get("LAMA_PY38_PYTHON")
PY38_BIN = "/root/.pyenv/versions/3.8.18/bin/python3.8"
# The runtime's import path: what `inpaint` and `check-engine` load.
RUNTIME_FILES = sorted({*REPO.glob("runtime/*.py"), *REPO.glob("runtime/backends/*.py"), *REPO.glob("lama_deploy/*.py"),
                        REPO / "scripts/cli.py", REPO / "scripts/commands/inpaint.py",
                        REPO / "scripts/commands/check_engine.py", REPO / "scripts/commands/arguments.py"})
needs_venv = pytest.mark.skipif(not PY38, reason="needs LAMA_PY38_PYTHON (the venv of .ci/py38-venv, run by .ci/run)")


def run38(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LAMA_CUDART")}
    environment.update(env or {})
    return subprocess.run([PY38, *args], capture_output=True, text=True, env=environment, cwd=cwd or "/", timeout=300)


def cli38(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run38("-c", "import sys; from lama_deploy.scripts.cli import main; sys.exit(main())", *args, env=env)


@pytest.mark.skipif(not (PY38 or Path(PY38_BIN).is_file()), reason="needs a python3.8 binary (pyenv 3.8.18)")
def test_runtime_compiles_under_python_3_8():
    python = PY38 or PY38_BIN
    code = "import sys\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec', dont_inherit=True)"
    done = subprocess.run([python, "-c", code, *map(str, RUNTIME_FILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(RUNTIME_FILES) > 20


@needs_venv
def test_runtime_imports_without_torch_onnx_or_cuda_python():
    code = ("import importlib.util as u, sys\n"
            "import lama_deploy.runtime, lama_deploy.runtime.backends.trt_backend, lama_deploy.runtime.backends.ort_backend\n"
            "import lama_deploy.scripts.commands.inpaint, lama_deploy.scripts.commands.check_engine\n"
            "print(sys.version_info[:2], [m for m in ('torch', 'onnx', 'cuda', 'tensorrt') if u.find_spec(m)],"
            " [m for m in ('torch', 'onnx') if m in sys.modules])")
    done = run38("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(3, 8) [] []"


@needs_venv
def test_inpaint_bytes_match_python_3_11(tiny_onnx, tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    mask = np.zeros((72, 96), np.uint8)
    mask[20:40, 30:70] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    outputs = {}
    for tag, command in (("311", [sys.executable, "-m", "lama_deploy.scripts.cli"]),
                         ("38", [PY38, "-m", "lama_deploy.scripts.cli"])):
        out = tmp_path / f"out{tag}.png"
        done = subprocess.run(command + ["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png"),
                                         "-o", str(out), "--model", str(tiny_onnx)],
                              capture_output=True, text=True, cwd="/", timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO.parent) if tag == "311" else ""})
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[tag] = out.read_bytes()
    assert len(outputs["38"]) > 1000 and outputs["38"] == outputs["311"]


@needs_venv
def test_check_engine_and_inpaint_on_a_trtexec_engine_under_python_3_8(tmp_path, fake_cudart_path):
    """Reference made here (host), engine without sidecar, fake TensorRT 8.5 + stand-in libcudart there."""
    make_reference(tmp_path / "ref")
    engine = tmp_path / "lama_fp16.plan"
    engine.write_bytes(fake.Spec(generation="8.5").serialize())
    fake.write_fake_package(tmp_path / "site", "8.5")
    env = {"PYTHONPATH": str(tmp_path / "site"), "LAMA_CUDART": str(fake_cudart_path)}
    done = cli38("check-engine", str(engine), "--reference", str(tmp_path / "ref"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "PASSED" and "tensorrt 8.5.2.2" in done.stdout
    assert not (tmp_path / "lama_fp16.plan.json").exists()
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "p.png")
    hole = np.zeros((40, 60), np.uint8)
    hole[10:20, 10:30] = 255
    Image.fromarray(hole).save(tmp_path / "m.png")
    done = cli38("inpaint", str(tmp_path / "p.png"), str(tmp_path / "m.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(engine), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert (out[hole == 0] == 200).all() and (out[hole > 0] == 63).all()  # the fake engine writes 0.25


@needs_venv
def test_export_on_python_3_8_names_the_floor():
    done = cli38("export", "--help")
    assert done.returncode == 2
    assert done.stderr.strip() == ("lama-deploy export: error: needs Python 3.10 or newer (this is 3.8.18); "
                                   "only `inpaint` and `check-engine` run on Python 3.8")
