"""One folder -> import-name mechanism (lama_deploy/__init__.py) and one bootstrap for files run by path;
commands apart from the library (no argparse under export/ but the launcher)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lama_deploy

ROOT = Path(__file__).resolve().parents[2]
#: Files run by path (python FILE, Polygraphy's script hooks); each starts with the bootstrap.
RUN_BY_PATH = {"export/to_onnx.py", "export/polygraphy_hooks.py", "scripts/trtexec_commands.py"}
#: Exceptions: none (the bench and the GPU lane run with `-m`).
ELSEWHERE: set[str] = set()


def _sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for folder in ("export", "runtime", "scripts", "lama_deploy")
            for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}


def test_files_run_by_path_use_the_one_bootstrap_verbatim() -> None:
    sources = _sources()
    bootstrapped = {path for path, text in sources.items() if lama_deploy.CHECKOUT_BOOTSTRAP in text}
    assert bootstrapped == RUN_BY_PATH
    # No other module-level sys.path edit keyed on the file's place (child processes and the generated Triton
    # model.py get their path from their parent, on purpose).
    edits = {path for path, text in sources.items()
             if re.search(r"^(if __package__|sys\.path\.(insert|append)\(.*__file__)", text, re.MULTILINE)}
    assert edits - ELSEWHERE == RUN_BY_PATH
    assert "lama_deploy/__init__.py" not in bootstrapped and "CHECKOUT_BOOTSTRAP" in lama_deploy.__doc__


def test_to_onnx_help_runs_from_another_directory_without_install(tmp_path: Path) -> None:
    """From a folder outside the checkout, by path: the launcher's bootstrap finds this checkout's command."""
    done = subprocess.run([sys.executable, str(ROOT / "export" / "to_onnx.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: lama-deploy export") and "--fp16-policy" in done.stdout


def test_a_copied_checkout_resolves_its_own_folders(tmp_path: Path) -> None:
    for folder in ("lama_deploy", "export", "runtime", "scripts"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import lama_deploy.export as e, lama_deploy.scripts as s; "
            "print(e.__file__); print(s.__file__)")
    done = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(tmp_path / "export" / "__init__.py"), str(tmp_path / "scripts" / "__init__.py")]


def test_library_modules_under_export_hold_no_argparse() -> None:
    holders = set()
    for path in (ROOT / "export").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in node.names} | {node.module for node in ast.walk(tree)
                                             if isinstance(node, ast.ImportFrom) and node.module}
        if "argparse" in names:
            holders.add(path.name)
    assert holders == set()
    for command in ("export", "build", "fourier-report"):
        from lama_deploy.scripts.cli import COMMANDS

        assert COMMANDS[command][0].startswith("lama_deploy.scripts.commands.")
