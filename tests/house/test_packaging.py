"""The wheel installs only `lama_deploy` and `lama_model` as top-level import names; the checkout folders
export/, runtime/ and scripts/ land inside it as lama_deploy.export, .runtime and .scripts, every module
included (a new sub-package missing from pyproject's `packages` list fails here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "lama_deploy", "lama_model", "export", "runtime", "scripts")
MAPPED = {"export": "lama_deploy/export", "runtime": "lama_deploy/runtime", "scripts": "lama_deploy/scripts"}
#: Checkout folders that are tooling, not product: never in the wheel.
NOT_SHIPPED = ("scripts/gpu_lane",)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Built from a copy of the checkout (the build leaves build/ and *.egg-info behind)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(out), str(src)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "No module named pip" in done.stderr:
        pytest.skip("pip is not available to build the wheel")
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("lama_deploy-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_top_level_names_are_namespaced(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == {"lama_deploy", "lama_model"}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
    if top_level:
        assert set(wheel.read(top_level).decode().split()) == {"lama_deploy", "lama_model"}


def test_every_checkout_module_is_in_the_wheel_under_its_mapped_name(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    expected = set()
    for folder in ("lama_deploy", "lama_model", *MAPPED):
        for path in (REPO / folder).rglob("*.py"):
            if any(path.relative_to(REPO).as_posix().startswith(f"{tool}/") for tool in NOT_SHIPPED):
                continue
            relative = path.relative_to(REPO / folder).as_posix()
            expected.add(f"{MAPPED.get(folder, folder)}/{relative}")
    assert expected - names == set()
    assert {"lama_deploy/export/polygraphy_hooks.py", "lama_deploy/runtime/backends/trt_backend.py",
            "lama_deploy/scripts/cli.py", "lama_deploy/profiles.py", "lama_deploy/scripts/bench/command.py",
            "lama_deploy/scripts/bench/gpu.py"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "lama-deploy = lama_deploy.scripts.cli:main" in wheel.read(entry_points).decode()


def test_the_wheel_ships_no_gpu_lane_or_other_tooling(wheel: zipfile.ZipFile) -> None:
    """The GPU lane (scripts/gpu_lane/: stages, pytest plugin, wheelhouse, engine check) exists in the checkout and
    nowhere in the wheel; the benchmark (`lama-deploy bench`, a user feature) is in it."""
    names = wheel.namelist()
    lane_files = sorted(p.name for p in (REPO / "scripts" / "gpu_lane").glob("*.py"))
    assert {"lane.py", "plugin.py", "wheelhouse.py", "engine_check.py"} <= set(lane_files)
    assert [n for n in names if "gpu_lane" in n or "lane_plugin" in n] == []
    assert not any(n.endswith(("/plugin.py", "/wheelhouse.py", "/engine_check.py")) for n in names)
    assert "lama_deploy/scripts/bench/__main__.py" in names
