"""The GPU lane on a CPU machine: dry run of the whole plan on a simulated bare GPU box with a wheelhouse, the
time budget, the watchdog, the event log, the wheelhouse, the engine check ahead of time, the model cache."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the lane is checkout tooling, imported as `scripts.gpu_lane` from the checkout root
    sys.path.insert(0, str(REPO))

from scripts.gpu_lane import lane as lane_module  # noqa: E402
from scripts.gpu_lane import report as L  # noqa: E402
from scripts.gpu_lane import wheelhouse as W  # noqa: E402

#: Packages a bare GPU machine lacks: import fails and find_spec says "not installed", as for a real absence.
BARE_SITE = """
import sys
for name in ("fastapi", "polygraphy", "tensorrt_rtx", "tensorrt", "uvicorn", "httpx", "starlette", "tritonclient",
             "pytest_timeout", "multipart", "python_multipart", "cuda"):
    sys.modules[name] = None
"""


def fake_wheel(folder: Path, name: str = "lane_fake_pkg", version: str = "1.2.3") -> Path:
    """A minimal valid wheel (pure Python, one package), made here with zipfile: no download."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"__version__ = {version!r}\nVALUE = 42\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{dist}/top_level.txt": f"{name}\n"}
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{dist}/RECORD", "".join(f"{m},,\n" for m in files) + f"{dist}/RECORD,,\n")
    return path


def _run_lane(out: Path, *args: str, env_path: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if env_path is not None:
        env["PYTHONPATH"] = str(env_path)
    return subprocess.run([sys.executable, "-m", "scripts.gpu_lane", "--out", str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_on_a_bare_machine_runs_every_stage_with_a_wheelhouse(tmp_path):
    """`python3 -m scripts.gpu_lane --dry-run --wheelhouse W` on a machine without TensorRT:
    the wheel (xz-compressed and split in two, as for a size-limited transfer) is installed into the lane's own
    folder and imports in its children, every GPU test skips, the engine stage records why TensorRT cannot run,
    the bench says why its rows are empty, and the whole lane fits the budget it planned."""
    bare, wheels = tmp_path / "bare", tmp_path / "wheels"
    bare.mkdir(), wheels.mkdir()
    (bare / "sitecustomize.py").write_text(BARE_SITE)
    packed = lzma.compress(fake_wheel(tmp_path).read_bytes())
    (wheels / "lane_fake_pkg-1.2.3-py3-none-any.whl.xz.part000").write_bytes(packed[:100])
    (wheels / "lane_fake_pkg-1.2.3-py3-none-any.whl.xz.part001").write_bytes(packed[100:])
    result = _run_lane(tmp_path / "lane", "--dry-run", "--wheelhouse", str(wheels), "--budget-s", "480", env_path=bare)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "lane" / "gpu_lane.json").read_text())
    assert summary["status"] == "done" and summary["dry_run"] and summary["seconds"] <= 480
    assert summary["wheelhouse"]["wheels"] == ["lane_fake_pkg-1.2.3-py3-none-any.whl"] and "error" not in summary["wheelhouse"]
    assert summary["environment"]["wheelhouse_imports"]["lane_fake_pkg"].startswith("1.2.3 from " + str(tmp_path / "lane" / "site"))
    tests = summary["pytest"]["tests"]
    assert len(tests) >= 30 and all(t["outcome"] == "skipped" and t["message"].startswith("needs an NVIDIA GPU")
                                    for t in tests.values())
    assert any(nodeid.startswith("tests/gpu/test_trt_device_memory.py") for nodeid in tests)
    assert summary["environment"]["tensorrt"] is None and summary["environment"]["cuda_python"] is None
    assert summary["engine"]["exit_code"] == 0 and summary["engine"]["check"]["error"].startswith("TensorRT not importable")
    assert summary["bench"]["exit_code"] == 0 and summary["bench"]["gpu"]["skipped"].startswith("needs an NVIDIA GPU")
    assert summary["bench"]["command"].startswith("lama-deploy bench --device cuda --out ")
    assert [s["stage"] for s in summary["plan"]["stages"]] == ["wheelhouse", "probe", "tests", "engine", "bench"]
    page = (tmp_path / "lane" / "gpu_lane.md").read_text()
    assert page.startswith("# GPU lane: no NVIDIA GPU") and "Dry run" in page and "## Wheelhouse" in page
    assert "TensorRT not importable" in page and "Not measured: needs an NVIDIA GPU" in page


def test_run_by_path_says_how_to_run_it(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_lane"), "--out", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == ("gpu_lane: error: run it from the checkout root as "
                                                           "`python3 -m scripts.gpu_lane --out DIR`")


def test_budget_leaves_every_later_stage_its_minimum(monkeypatch):
    stages = list(lane_module.STAGES)
    clock = [0.0]
    monkeypatch.setattr(lane_module.time, "monotonic", lambda: clock[0])
    budget = lane_module.Budget(480, stages)
    assert budget.limit("probe") == 60 and budget.limit("bench") == 300
    assert budget.limit("tests") == 180 and budget.limit("tests", 500) == 480 - 30 - 60  # engine + bench minimums
    clock[0] = 400.0  # 80 s left: the engine stage keeps the bench's 60
    assert budget.limit("engine") == 20 and budget.limit("bench") == 80
    clock[0] = 500.0
    assert budget.limit("bench") == 0
    assert sum(s.cap_s for s in stages if s.name != "wheelhouse") >= 480  # caps fill the budget; the plan cuts them


def test_wheelhouse_joins_parts_decompresses_and_installs(tmp_path):
    wheel = fake_wheel(tmp_path)
    folder = tmp_path / "wh"
    folder.mkdir()
    (folder / (wheel.name + ".xz")).write_bytes(lzma.compress(wheel.read_bytes()))
    assert [p.name for p in W.prepare(folder, tmp_path / "scratch")] == [wheel.name]
    assert W.top_level_names(wheel) == ["lane_fake_pkg"]
    result = W.install(folder, tmp_path / "site", timeout_s=120)
    assert "error" not in result and result["modules"] == ["lane_fake_pkg"], result
    assert (tmp_path / "site" / "lane_fake_pkg" / "__init__.py").read_text().endswith("VALUE = 42\n")
    W._unpack(wheel, tmp_path / "unpacked")  # the no-pip path lays out the same package
    assert (tmp_path / "unpacked" / "lane_fake_pkg" / "__init__.py").is_file()
    (folder / "notes.txt").write_text("x")
    assert "not a wheel" in W.install(folder, tmp_path / "site2", timeout_s=60)["error"]
    assert "not a folder" in W.install(tmp_path / "missing", tmp_path / "site3", timeout_s=60)["error"]


@pytest.mark.slow
def test_engine_check_builds_ahead_of_time_without_a_gpu(tmp_path):
    """The engine stage's export and TensorRT-RTX build (for compute capability 8.9, no GPU needed); the run vs
    PyTorch needs a GPU and says so."""
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX (pip install tensorrt-rtx-cu13)")
    from scripts.gpu_lane.engine_check import FORMS, run_check

    result = run_check(tmp_path, dry_run=True, budget_s=600)
    assert "error" not in result and result["tensorrt"].startswith("tensorrt_rtx ")
    assert [(r["config"], r["fourier"], r["precision"]) for r in result["rows"]] == [f[:3] for f in FORMS]
    for row in result["rows"]:
        assert not any(key.endswith("_error") for key in row), row
        assert row["compute_capability"] == "8.9" and row["engine_mb"] > 0.1 and row["run"].startswith("not run: dry run")
    assert json.loads((tmp_path / "engine.json").read_text())["rows"] == result["rows"]


def test_engine_comparison_is_polygraphy_style():
    """A check passes when the max absolute OR the max relative error is within the precision's tolerance."""
    import numpy as np

    from scripts.gpu_lane.engine_check import compare

    reference = np.full((1, 3, 4, 4), 0.5, np.float32)
    mask = np.ones((1, 1, 4, 4), np.float32)
    assert compare(reference + 5e-5, reference, mask, "fp32")["passed"]
    off = compare(reference + 0.01, reference, mask, "fp32")
    assert not off["passed"] and off["max_abs"] == pytest.approx(0.01, rel=1e-3) and off["hole_mean_255"] == pytest.approx(2.55, rel=1e-3)
    assert compare(reference + 0.01, reference, mask, "fp16")["passed"]
    broken = reference.copy()
    broken[0, 0, 0, 0] = np.nan
    assert not compare(broken, reference, mask, "fp16")["passed"]


@pytest.mark.slow
def test_watchdog_records_hangs_and_crashes_and_runs_the_rest(tmp_path):
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_hang.py").write_text(textwrap.dedent("""
        import os, time
        import pytest
        pytestmark = pytest.mark.gpu
        def test_a_passes(): pass
        def test_b_hangs(): time.sleep(600)
        def test_c_kills_the_process(): os._exit(3)
        def test_d_fails(): raise AssertionError("a stand-in failure the lane must record")
        @pytest.mark.skip(reason="needs an NVIDIA GPU (stand-in)")
        def test_e_skips(): pass
        def test_f_passes(): pass
    """))
    result = _run_lane(tmp_path / "lane", "--no-bench", "--no-engine", "--tests", str(tests), "--test-timeout", "4",
                       timeout=300)
    assert result.returncode == 1
    summary = json.loads((tmp_path / "lane" / "gpu_lane.json").read_text())
    outcome = {nodeid.split("::")[-1]: t for nodeid, t in summary["pytest"]["tests"].items()}
    assert {k: v["outcome"] for k, v in outcome.items()} == {
        "test_a_passes": "passed", "test_b_hangs": "failed", "test_c_kills_the_process": "failed",
        "test_d_fails": "failed", "test_e_skips": "skipped", "test_f_passes": "passed"}
    assert outcome["test_b_hangs"]["message"].startswith("timed out: no result within 4 s")
    assert "died (exit 3)" in outcome["test_c_kills_the_process"]["message"]
    assert outcome["test_d_fails"]["message"] == "AssertionError: a stand-in failure the lane must record"
    assert summary["counts"] == {"passed": 2, "failed": 3, "skipped": 1}
    assert "test_b_hangs" in (tmp_path / "lane" / "pytest_tracebacks.txt").read_text()


def test_event_log_survives_a_cut_line(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"event": "start", "nodeid": "a", "t": 1}\n{"event": "report", "nodeid": "a", "when": "call", '
                   '"outcome": "passed"}\n{"event": "finish", "nodeid": "a"}\n{"event": "start", "nodeid": "b", "t": 2}\n{"ev')
    assert L.collect_tests(log)["a"]["outcome"] == "passed" and L.unfinished_test(log) == ("b", 2.0)


def test_tests_a_timeout_left_unrun_are_named(tmp_path):
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_slow.py").write_text("import time, pytest\npytestmark = pytest.mark.gpu\n"
                                        "def test_a(): time.sleep(600)\ndef test_b(): pass\n")
    result = _run_lane(tmp_path / "lane", "--no-bench", "--no-engine", "--tests", str(tests), "--test-timeout", "300",
                       "--tests-timeout", "8", timeout=300)
    summary = json.loads((tmp_path / "lane" / "gpu_lane.json").read_text())
    outcome = {nodeid.split("::")[-1]: t["message"] for nodeid, t in summary["pytest"]["tests"].items()}
    assert result.returncode == 1 and outcome["test_a"].startswith("stopped when the lane's test time (8 s) ran out")
    assert outcome["test_b"] == "not run: the lane's test time (8 s) ran out"


def test_partial_bench_rows_and_engine_errors_render(tmp_path):
    """A bench stopped at its limit shows the rows it finished; an engine build error is shown in full."""
    summary = {"command": "c", "status": "done", "environment": {"gpu": "NVIDIA H200"},
               "engine": {"exit_code": 0, "seconds": 9.0, "check": {"tensorrt": "tensorrt_rtx 1.7.1", "rows": [
                   {"config": "tiny", "fourier": "matmul", "precision": "fp32", "fp16_policy": None,
                    "build_error": "UserError: no kernel for SM 9.0"}]}},
               "bench": {"timed_out": True, "exit_code": None, "seconds": 300.0, "command": "lama-deploy bench",
                         "markdown": "## GPU rows (PyTorch on CUDA)\n\nrows so far\n"}}
    page = L.render_markdown(summary)
    assert "| tiny matmul fp32 |" in page and "build_error: UserError: no kernel for SM 9.0" in page
    assert "stopped at the stage's time limit" in page and "### GPU rows (PyTorch on CUDA)" in page
    assert lane_module.failures(summary) == ["tests", "bench"]


def test_model_cache_round_trips(tmp_path, monkeypatch):
    from model_cache import MODEL_CACHE_ENV, cached_random_model

    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path))
    built = cached_random_model("tiny", seed=3)
    loaded = cached_random_model("tiny", seed=3)
    assert (tmp_path / "tiny-seed3.pt").is_file() and not list(tmp_path.glob(".*tmp"))
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), loaded.state_dict().values()))
