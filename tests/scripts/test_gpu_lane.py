"""The GPU lane on a CPU machine: dry run on a simulated bare GPU box, watchdog, summaries, GPU-row rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from lama_deploy.contract import fp16_policy_problem
from lama_deploy.scripts.bench import gpu as G
from lama_deploy.scripts import gpu_lane_report as L
from lama_deploy.scripts.bench.gpu_report import BEGIN, END, gpu_markdown, with_gpu_section
from lama_deploy.scripts.bench.report import NOTES_MARKER
from lama_model import FOURIER_MODES, random_model

REPO = Path(__file__).resolve().parents[2]
LANE = REPO / "scripts" / "gpu_lane.py"
#: Packages a bare GPU machine lacks: import fails and find_spec says "not installed", as for a real absence.
BARE_SITE = """
import sys
for name in ("fastapi", "polygraphy", "tensorrt_rtx", "tensorrt", "uvicorn", "httpx", "starlette", "tritonclient",
             "pytest_timeout", "multipart", "python_multipart", "cuda"):
    sys.modules[name] = None
"""


def _run_lane(out: Path, *args: str, env_path: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if env_path is not None:
        env["PYTHONPATH"] = str(env_path)
    return subprocess.run([sys.executable, str(LANE), "--out", str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_on_a_bare_machine_skips_every_gpu_test_and_writes_summaries(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "sitecustomize.py").write_text(BARE_SITE)
    result = _run_lane(tmp_path / "lane", "--dry-run", env_path=bare)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "lane" / "gpu_lane.json").read_text())
    tests = summary["pytest"]["tests"]
    assert summary["status"] == "done" and summary["dry_run"] and len(tests) >= 30
    assert all(t["outcome"] == "skipped" and t["message"].startswith("needs an NVIDIA GPU") for t in tests.values())
    assert any(nodeid.startswith("tests/gpu/test_trt_device_memory.py") for nodeid in tests)
    assert summary["environment"]["tensorrt"] is None and summary["environment"]["cuda_python"] is None
    assert summary["bench"]["exit_code"] == 0 and summary["bench"]["gpu"]["skipped"].startswith("needs an NVIDIA GPU")
    page = (tmp_path / "lane" / "gpu_lane.md").read_text()
    assert page.startswith("# GPU lane: no NVIDIA GPU") and "Dry run" in page and "skipped" in page


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
        def test_d_fails(): assert 1 == 2, "one is not two"
        @pytest.mark.skip(reason="needs an NVIDIA GPU (stand-in)")
        def test_e_skips(): pass
        def test_f_passes(): pass
    """))
    result = _run_lane(tmp_path / "lane", "--no-bench", "--tests", str(tests), "--test-timeout", "4", timeout=300)
    assert result.returncode == 1
    summary = json.loads((tmp_path / "lane" / "gpu_lane.json").read_text())
    outcome = {nodeid.split("::")[-1]: t for nodeid, t in summary["pytest"]["tests"].items()}
    assert {k: v["outcome"] for k, v in outcome.items()} == {
        "test_a_passes": "passed", "test_b_hangs": "failed", "test_c_kills_the_process": "failed",
        "test_d_fails": "failed", "test_e_skips": "skipped", "test_f_passes": "passed"}
    assert outcome["test_b_hangs"]["message"].startswith("timed out: no result within 4 s")
    assert "died (exit 3)" in outcome["test_c_kills_the_process"]["message"]
    assert outcome["test_d_fails"]["message"] == "AssertionError: one is not two"
    assert summary["counts"] == {"passed": 2, "failed": 3, "skipped": 1}
    assert "test_b_hangs" in (tmp_path / "lane" / "pytest_tracebacks.txt").read_text()


def test_event_log_survives_a_cut_line(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"event": "start", "nodeid": "a", "t": 1}\n{"event": "report", "nodeid": "a", "when": "call", '
                   '"outcome": "passed"}\n{"event": "finish", "nodeid": "a"}\n{"event": "start", "nodeid": "b", "t": 2}\n{"ev')
    assert L.collect_tests(log)["a"]["outcome"] == "passed" and L.unfinished_test(log) == ("b", 2.0)


# --- the GPU rows' logic, on CPU ------------------------------------------------------------------------------

def _fake_gpu_report() -> dict:
    forms = []
    for form, ms in (("torch", 10.0), ("matmul", 18.0), ("matmul-dense", 15.8), ("none", 7.2)):
        forms.append({"form": form, "precision": "fp16", "policy": "fourier-fp32", "size": 512, "batch": 1,
                      "graph_ms": ms, "eager_ms": 40.0, "peak_gpu_mb": 900.0,
                      **({"hot_error": {"hole_mean_255": 0.43, "non_finite": 0.0}} if form != "none" else {})})
    forms.append({"form": "torch", "precision": "fp16", "policy": "fourier-scaled", "size": 768, "batch": 1,
                  "error": "RuntimeError: cuFFT only supports dimensions whose sizes are powers of two"})
    backend = [{"mode": "eager fp32", "batch": 1, "size": 512, "latency_ms": 30.0, "images_per_s": 33.3},
               {"mode": "graphs fp16", "batch": 1, "size": 512, "latency_ms": 9.0, "images_per_s": 111.0},
               {"mode": "graphs fp16", "batch": 4, "size": 512, "skipped": "skipped: past the GPU time budget (1 s)"}]
    G._add_shares(forms, 512, "fp16", "fourier-fp32")
    return {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.x", "cuda": "12.8", "config": "big-lama", "repeats": 5,
            "forms": forms, "backend": backend, "speedup_graphs_fp16_vs_eager_fp32": G.speedup(backend, 512)}


def test_shares_speedup_and_markdown_of_gpu_rows():
    gpu = _fake_gpu_report()
    shares = {r["form"]: r.get("fourier_share") for r in gpu["forms"][:4]}
    assert shares == {"torch": 0.28, "matmul": 0.6, "matmul-dense": 0.544, "none": None}
    assert gpu["speedup_graphs_fp16_vs_eager_fp32"] == {"size": 512, "ratio": 3.33, "target": 3.0, "met": True}
    page = gpu_markdown(gpu, "lama-deploy bench --device cuda --gpu-quick")
    assert "NVIDIA H100 80GB HBM3" in page and "| 512 | fp16 (fourier-fp32) | matmul | 18.00 | 40.00 | 60% | 0.430" in page
    assert "no Fourier units (floor)" in page and "cuFFT only supports" in page and "3.33x" in page and "met" in page
    assert page.startswith(BEGIN) and page.rstrip().endswith(END)


def test_gpu_section_replaces_itself_and_survives_cpu_rewrites():
    first = with_gpu_section("# Benchmarks\n\nCPU table\n", gpu_markdown({"skipped": "x"}, "c"))
    assert first.count(BEGIN) == 1 and NOTES_MARKER in first and first.index(NOTES_MARKER) < first.index(BEGIN)
    second = with_gpu_section(first + "\nhand notes\n", gpu_markdown(_fake_gpu_report(), "c"))
    assert second.count(BEGIN) == 1 and "NVIDIA H100" in second and "hand notes" in second and "Not measured" not in second


def test_floor_and_forms_run_on_cpu_and_errors_are_measured_in_levels():
    base = random_model("tiny", seed=0)
    image, mask = torch.rand(1, 3, 64, 64), (torch.rand(1, 1, 64, 64) > 0.6).float()
    with torch.inference_mode():
        outputs = {form: G.model_variant(base, form)(image, mask) for form in FOURIER_MODES + (G.FLOOR,)}
    assert all(torch.allclose(outputs[f], outputs["torch"], atol=1e-5) for f in FOURIER_MODES)
    assert (outputs[G.FLOOR] - outputs["torch"]).abs().max() > 1e-4  # the floor really drops the units
    reference = np.zeros((1, 3, 4, 4), np.float32)
    output = reference.copy()
    output[0, 0, 0, 0] = 2 / 255
    output[0, 1, 0, 0] = np.inf
    error = G.hole_error(output, reference, np.ones((1, 1, 4, 4), np.float32))
    assert error["non_finite"] == pytest.approx(1 / 48, abs=1e-6) and error["hole_mean_255"] == pytest.approx(2 / 48, abs=1e-3)


def test_bench_device_cuda_without_a_gpu_writes_why(tmp_path):
    from lama_deploy.scripts.bench.command import main

    assert main(["--device", "cuda", "--config", "tiny", "--sizes", "64", "--batch", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert data["skipped"].startswith("needs an NVIDIA GPU") and data["forms"] == [] and data["backend"] == []
    assert "Not measured: needs an NVIDIA GPU" in (tmp_path / "bench_gpu.md").read_text()


def test_model_cache_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv(G.MODEL_CACHE_ENV, str(tmp_path))
    built = G.cached_random_model("tiny", seed=3)
    loaded = G.cached_random_model("tiny", seed=3)
    assert (tmp_path / "tiny-seed3.pt").is_file()
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), loaded.state_dict().values()))


def test_gpu_json_from_the_lane_renders_into_the_docs_page(tmp_path):
    from lama_deploy.scripts.bench.command import main

    source = tmp_path / "bench_gpu.json"
    source.write_text(json.dumps({**_fake_gpu_report(), "command": "lama-deploy bench --device cuda --gpu-quick"}))
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\nCPU rows\n\n{NOTES_MARKER}\n\nnotes\n")
    assert main(["--from-json", str(source), "--docs", str(docs), "--out", str(tmp_path / "out")]) == 0
    page = docs.read_text()
    assert page.count(BEGIN) == 1 and "NVIDIA H100" in page and "CPU rows" in page and page.rstrip().endswith("notes")


@pytest.mark.slow
def test_gpu_bench_flow_runs_end_to_end_on_cpu_stand_ins(monkeypatch):
    """run_gpu_bench with CUDA replaced by CPU stand-ins: every cell, share, error and target is filled."""
    from cuda_stubs import stub_executor

    from lama_deploy.runtime.backends.torch_backend import TorchBackend

    def make_backend(model, device, precision, policy, graphs):
        backend = TorchBackend(model, device="cpu", weights="bench", precision="bf16" if precision == "fp16" else precision,
                               fp16_policy=policy, cuda_graphs=False)
        backend.activate()
        backend.executor = stub_executor(backend._forward, use_graphs=graphs, capacity=2)
        return backend

    def times(torch_module, run, stream, repeats):
        with torch.inference_mode():  # as gpu_times_ms runs them (CUDA events replaced by wall time)
            return G.wall_times_ms(run, repeats)

    monkeypatch.setattr(G, "cuda_skip_reason", lambda: None)
    monkeypatch.setattr(G, "make_backend", make_backend)
    monkeypatch.setattr(G, "gpu_times_ms", times)
    for name, stub in {"reset_peak_memory_stats": lambda *a: None, "max_memory_allocated": lambda *a: 3 * 2**20,
                       "empty_cache": lambda: None, "get_device_name": lambda *a: "CPU stand-in"}.items():
        monkeypatch.setattr(torch.cuda, name, stub)
    gpu = G.run_gpu_bench("tiny", sizes=[32], batches=[1, 2], batch_at=32, repeats=2, seed=0, budget_s=300, device="cpu")
    assert gpu["gpu"] == "CPU stand-in" and len(gpu["forms"]) == len(G.precisions()) * (len(FOURIER_MODES) + 1)
    offered = [r for r in gpu["forms"] if not (r["policy"] and fp16_policy_problem(r["policy"], r["form"]))]
    refused = [r for r in gpu["forms"] if r not in offered]
    assert [(r["form"], r["policy"]) for r in refused] == [("torch", "fourier-scaled")]
    assert refused[0]["skipped"].startswith("not offered: fp16 policy 'fourier-scaled' needs")
    assert all("error" not in r and r["graph_ms"] > 0 and r["eager_ms"] > 0 for r in offered), \
        [r for r in offered if "error" in r or not r.get("graph_ms")]
    assert all(0 <= r["fourier_share"] <= 1 for r in offered if r["form"] != G.FLOOR)
    hot = [r["hot_error"] for r in offered if r["precision"] == "fp16" and r["form"] != G.FLOOR]
    assert hot and all(h["non_finite"] == 0 and h["hole_mean_255"] < 5 for h in hot)
    assert len(gpu["backend"]) == 8 and all(r["latency_ms"] > 0 and r["peak_gpu_mb"] == 3.0 for r in gpu["backend"])
    assert gpu["speedup_graphs_fp16_vs_eager_fp32"]["ratio"] > 0
    assert "CPU stand-in" in gpu_markdown(gpu, "test")


def test_tests_a_timeout_left_unrun_are_named(tmp_path):
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_slow.py").write_text("import time, pytest\npytestmark = pytest.mark.gpu\n"
                                        "def test_a(): time.sleep(600)\ndef test_b(): pass\n")
    result = _run_lane(tmp_path / "lane", "--no-bench", "--tests", str(tests), "--test-timeout", "300",
                       "--tests-timeout", "8", timeout=300)
    summary = json.loads((tmp_path / "lane" / "gpu_lane.json").read_text())
    outcome = {nodeid.split("::")[-1]: t["message"] for nodeid, t in summary["pytest"]["tests"].items()}
    assert result.returncode == 1 and outcome["test_a"].startswith("stopped when the lane's test time (8 s) ran out")
    assert outcome["test_b"] == "not run: the lane's test time (8 s) ran out"
