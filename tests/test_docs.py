"""README and docs: the two first commands, paths and commands that exist, nothing only the build machines get."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
TWO_COMMANDS = ['python3 -m pip install torch==2.13.0 -e ".[dev]" && lama-deploy demo', "python3 -m pytest"]


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == TWO_COMMANDS
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd ", "export ", "bash .ci/"))]
    assert ci[:2] == TWO_COMMANDS  # first and unchanged; after them only the Python 3.8 runtime job
    assert [line for line in ci[2:] if "py38" not in line] == []


def test_no_sentence_only_the_build_machines_understand() -> None:
    for text in [README, *DOCS.values()]:
        assert "machines here" not in text and "the runtime docs" not in text


def test_every_repository_path_named_in_the_docs_exists() -> None:
    missing = set()
    for name, text in {"README.md": README, **DOCS}.items():
        for path in re.findall(r"`((?:docs|export|runtime|scripts|lama_model|lama_deploy|tests)/[\w./*-]+)`", text):
            folder = re.sub(r"^lama_deploy/(export|runtime|scripts)/", r"\1/", path)  # the installed name's folder
            if not list(ROOT.glob(folder.rstrip("/"))):
                missing.add(f"{name}: {path}")
    assert missing == set()


def test_readme_trtexec_lines_use_every_file_they_name(tmp_path: Path, tiny_onnx: Path) -> None:
    """`--onnx-fp16 X` on a line whose target never reads it (TensorRT 8.5, fp32) would be ignored silently."""
    lines = [line.split("#")[0].strip() for line in README.splitlines() if "lama_deploy.scripts.trtexec_commands" in line
             and not line.lstrip().startswith("#")]
    assert lines
    assert not any("big-lama-fp16.onnx" in line for line in lines), "give this test an fp16 ONNX stand-in"
    (tmp_path / "big-lama.onnx").write_bytes(tiny_onnx.read_bytes())  # trtexec_commands reads the ONNX's facts
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for line in lines:
        argv = shlex.split(line)
        done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        for flag in ("--onnx", "--onnx-fp16"):
            if flag in argv:
                assert argv[argv.index(flag) + 1] in done.stdout, (line, flag)


def test_export_script_runs_from_any_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(ROOT / "export" / "to_onnx.py"), "--config", "tiny", "--output",
                           "tiny.onnx"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    onnx.checker.check_model(onnx.load(str(elsewhere / "tiny.onnx")))
