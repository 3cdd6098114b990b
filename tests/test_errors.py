"""Exit codes and one-line errors shared by every command (lama_deploy.errors, the `lama-deploy` dispatcher)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lama_deploy.errors import (
    EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USER_ERROR, InputNotFound, UsageError, UserError, cli_entry,
)

ROOT = Path(__file__).resolve().parents[1]


def _raising(exc: BaseException):
    @cli_entry("lama-deploy test")
    def main(argv=None) -> int:
        raise exc

    return main


@pytest.mark.parametrize("exc", [UserError("bad --thing; do X"), UsageError("bad --thing; do X"),
                                 InputNotFound("bad --thing; do X")])
def test_user_errors_are_one_line_exit_2(exc, capsys) -> None:
    assert _raising(exc)([]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "lama-deploy test: error: bad --thing; do X\n"


def test_checkpoint_errors_of_lama_model_are_user_errors(capsys) -> None:
    from lama_model.checkpoint import CheckpointError

    assert _raising(CheckpointError("checkpoint not found: x.ckpt"))([]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "lama-deploy test: error: checkpoint not found: x.ckpt\n"


@pytest.mark.parametrize("exc", [ValueError("operands could not be broadcast"), KeyError("lama.config"),
                                 FileNotFoundError("/internal/cache.bin"), ModuleNotFoundError("lama_deploy.nope",
                                                                                              name="lama_deploy.nope")])
def test_bugs_keep_their_traceback_and_exit_3(exc, capsys) -> None:
    assert _raising(exc)([]) == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "internal error" in err.splitlines()[-1]


def test_missing_third_party_module_is_an_install_hint(capsys) -> None:
    assert _raising(ModuleNotFoundError("No module named 'torch'", name="torch"))([]) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "torch is not installed" in lines[0] and "pip install torch" in lines[0]


def _run_cli(args: list[str], extra_path: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(extra_path or ""), str(ROOT)])))
    code = "import sys; from lama_deploy.scripts.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, text=True, timeout=120, **kwargs)


BLOCKER = textwrap.dedent('''
    import sys
    BLOCKED = {"torch", "onnx", "onnxscript", "polygraphy", "onnxruntime"}

    class Blocker:
        """A runtime-only install: the build-machine packages are absent."""
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
''')


@pytest.mark.parametrize("command", ["demo", "export", "bench"])
def test_runtime_only_install_gets_an_install_hint(command: str, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    done = _run_cli([command, "--help"], extra_path=tmp_path, capture_output=True)
    assert done.returncode == EXIT_USER_ERROR, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lama-deploy {command}: error: ") and "pip install" in lines[0]
    assert "is not installed" in lines[0]


def test_help_into_a_closed_pipe_ends_quietly() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "import sys; from lama_deploy.scripts.cli import main; sys.exit(main())"
    reader, writer = os.pipe()
    os.close(reader)  # `| head` that has already gone away
    try:
        done = subprocess.run([sys.executable, "-c", code, "--help"], env=env, stdout=writer, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(writer)
    assert done.returncode == EXIT_OK and "Traceback" not in done.stderr and done.stderr == ""
