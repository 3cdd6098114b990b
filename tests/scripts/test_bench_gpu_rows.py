"""The benchmark's GPU rows on a CPU machine: plans, shares, verdicts, Markdown, and the whole flow on stand-ins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lama_deploy.contract import fp16_policy_problem
from lama_deploy.scripts.bench import gpu as G
from lama_deploy.scripts.bench.gpu_report import BEGIN, END, PARTIAL, gpu_markdown, with_gpu_section
from lama_deploy.scripts.bench.report import NOTES_MARKER
from lama_model import FOURIER_MODES, random_model


def _fake_gpu_report() -> dict:
    forms = []
    for form, ms in (("torch", 10.0), ("matmul", 18.0), ("matmul-dense", 12.0), ("none", 7.2)):
        forms.append({"form": form, "precision": "fp16", "policy": "fourier-fp32", "size": 512, "batch": 1,
                      "graph_ms": ms, "eager_ms": 40.0, "peak_gpu_mb": 900.0, "align": 1,
                      **({"hot_error": {"hole_mean_255": 0.43, "non_finite": 0.0}} if form != "none" else {})})
    forms.append({"form": "matmul-dense", "precision": "fp16", "policy": "fourier-fp32", "size": 512, "batch": 1,
                  "variant": "unpadded", "graph_ms": 14.0, "eager_ms": 41.0, "align": 1})
    forms.append({"form": "torch", "precision": "fp16", "policy": "fourier-scaled", "size": 768, "batch": 1,
                  "error": "RuntimeError: cuFFT only supports dimensions whose sizes are powers of two"})
    backend = [{"mode": "eager fp32", "batch": 1, "size": 512, "purpose": "batch scaling", "latency_ms": 30.0,
                "images_per_s": 33.3, "runs": 5},
               {"mode": "graphs fp16", "batch": 1, "size": 512, "purpose": "batch scaling", "latency_ms": 9.0,
                "images_per_s": 111.0, "runs": 5},
               {"mode": "graphs fp16", "batch": 4, "size": 512, "purpose": "batch scaling", "latency_ms": 30.0,
                "images_per_s": 133.3, "runs": 5},
               {"mode": "graphs fp32", "batch": 1, "size": 512, "purpose": "batch scaling", "latency_ms": 33.0,
                "images_per_s": 30.3, "runs": 5},
               {"mode": "graphs fp32", "batch": 4, "size": 512, "purpose": "batch scaling", "latency_ms": 611.0,
                "images_per_s": 6.5, "runs": 2},
               {"mode": "graphs fp32 cudnn.benchmark on", "batch": 4, "size": 512, "purpose": "fp32 batch diagnosis",
                "skipped": "skipped: past the GPU time budget (1 s)"}]
    G._add_shares(forms, 512, "fp16", "fourier-fp32")
    return {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.x", "cuda": "12.8", "cudnn": 91900, "config": "big-lama",
            "repeats": 5, "forms": forms, "backend": backend, "speedup_graphs_fp16_vs_eager_fp32": G.speedup(backend, 512),
            "targets": G.exported_form_targets(forms), "batch_scaling": G.batch_scaling(backend)}


def test_shares_verdicts_and_markdown_of_gpu_rows():
    gpu = _fake_gpu_report()
    shares = {(r["form"], r.get("variant")): r.get("fourier_share") for r in gpu["forms"][:5]}
    assert shares == {("torch", None): 0.28, ("matmul", None): 0.6, ("matmul-dense", None): 0.4, ("none", None): None,
                      ("matmul-dense", "unpadded"): 0.486}
    assert gpu["speedup_graphs_fp16_vs_eager_fp32"] == {"size": 512, "ratio": 3.33, "target": 3.0, "met": True}
    # The best exported form at 512: matmul-dense, 12.0 / 10.0 ms (1.2x, met) but a 40% share (> 35%): not met.
    assert gpu["targets"] == [{"size": 512, "form": "matmul-dense", "policy": "fourier-fp32", "ms": 12.0,
                               "cufft_ms": 10.0, "ratio": 1.2, "fourier_share": 0.4, "met": False}]
    assert gpu["batch_scaling"] == [{"mode": "graphs fp32", "images_per_s": {1: 30.3, 4: 6.5}, "grows_1_to_4": False},
                                    {"mode": "graphs fp16", "images_per_s": {1: 111.0, 4: 133.3}, "grows_1_to_4": True}]
    page = gpu_markdown(gpu, "lama-deploy bench --device cuda --gpu-quick")
    assert "NVIDIA H100 80GB HBM3" in page and "| 512 | fp16 (fourier-fp32) | matmul | 1 | 18.00 | 40.00 | 60% | 0.430" in page
    assert "| 512 | fp16 (fourier-fp32) | matmul-dense, unpadded | 1 | 14.00 |" in page
    assert "no Fourier units (floor)" in page and "cuFFT only supports" in page and "3.33x" in page
    assert "| 512 | matmul-dense (fourier-fp32) | 12.00 | 10.00 | 1.20x | 40% | no | 14.04 |" not in page  # other policy
    assert "| 512 | matmul-dense (fourier-fp32) | 12.00 | 10.00 | 1.20x | 40% | no |  |" in page
    assert "graphs fp32 images/s: batch 1: 30.3, batch 4: 6.5 (grows from batch 1 to 4: NO)" in page
    assert "| fp32 batch diagnosis | 4x512 | graphs fp32 cudnn.benchmark on |" in page
    assert page.startswith(BEGIN) and page.rstrip().endswith(END) and "Partial" not in page
    assert "Partial: the run stopped" in gpu_markdown({**gpu, "partial": True}, "c")


def test_gpu_section_replaces_itself_and_survives_cpu_rewrites():
    first = with_gpu_section("# Benchmarks\n\nCPU table\n", gpu_markdown({"skipped": "x"}, "c"))
    assert first.count(BEGIN) == 1 and NOTES_MARKER in first and first.index(NOTES_MARKER) < first.index(BEGIN)
    second = with_gpu_section(first + "\nhand notes\n", gpu_markdown(_fake_gpu_report(), "c"))
    assert second.count(BEGIN) == 1 and "NVIDIA H100" in second and "hand notes" in second and "Not measured" not in second


def test_plans_cover_the_issue_rows():
    """Quick grid: every form x precision (+ floor) and both variants at the first size, the compared forms
    later; backend: batch 1/2/4/8 in fp32 and fp16, the fp32 batch-4 diagnosis grid, the candidate, compile."""
    forms = G.form_plan([512, 1024, 2048], "quick")
    first = [c for c in forms if c.size == 512]
    assert len(first) == len(G.precisions()) * (len(FOURIER_MODES) + 1) + 2 * len(G.VARIANTS)
    assert [(c.form, c.policy) for c in forms if c.size == 2048] == [
        ("torch", "fourier-fp32"), ("matmul", "fourier-scaled"), ("matmul-dense", "fourier-scaled"), (G.FLOOR, "fourier-scaled")]
    cells = G.backend_plan([1, 2, 4, 8], 512, "quick")
    scaling = {(c.mode, c.batch) for c in cells if c.purpose == "batch scaling"}
    assert {(f"graphs {p}", b) for p in ("fp32", "fp16") for b in (1, 2, 4, 8)} <= scaling
    assert {("eager fp32", 1), ("eager fp32", 4), ("eager fp16", 1), ("eager fp16", 4)} <= scaling
    diagnosis = {(c.graphs, c.cudnn_benchmark, c.tf32) for c in cells if c.purpose == "fp32 batch diagnosis"}
    assert len(diagnosis) == 6 and all(c.batch == 4 for c in cells if c.purpose == "fp32 batch diagnosis")
    assert {c.batch for c in cells if c.purpose == "fix candidate"} == {1, 2, 8}
    assert [(c.mode, c.batch) for c in cells if c.purpose == "torch.compile"] == [("graphs fp16 compile default", 1),
                                                                                  ("eager fp16 compile default", 1)]
    assert {c.compile for c in G.backend_plan([1], 512, "full")} == {"off", "default", "max-autotune"}


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


def test_repeats_stop_at_the_cell_cap():
    calls = []
    times = G.wall_times_ms(lambda: calls.append(1) or __import__("time").sleep(0.02), repeats=50, cap_s=0.05)
    assert 0 < len(times) == len(calls) < 10


def test_bench_device_cuda_without_a_gpu_writes_why(tmp_path):
    from lama_deploy.scripts.bench.command import main

    assert main(["--device", "cuda", "--config", "tiny", "--sizes", "64", "--batch", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert data["skipped"].startswith("needs an NVIDIA GPU") and data["forms"] == [] and data["backend"] == []
    assert "Not measured: needs an NVIDIA GPU" in (tmp_path / "bench_gpu.md").read_text()


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
def test_gpu_bench_flow_runs_end_to_end_on_cpu_stand_ins(monkeypatch, tmp_path):
    """run_gpu_bench with CUDA replaced by CPU stand-ins (fp16 -> bf16, compile off): every planned cell, share,
    error, verdict and the rows-so-far checkpoint are filled."""
    from cuda_stubs import stub_executor

    from lama_deploy.runtime.backends.pytorch.backend import TorchBackend

    def make_backend(model, device, precision, policy, graphs, **options):
        options["compile"] = "off"  # inductor on CPU takes minutes; tests/runtime/test_torch_compile.py covers it
        backend = TorchBackend(model, device="cpu", weights="bench", precision="bf16" if precision == "fp16" else precision,
                               fp16_policy=policy, cuda_graphs=False, **options)
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
                       "max_memory_reserved": lambda *a: 4 * 2**20, "empty_cache": lambda: None,
                       "get_device_name": lambda *a: "CPU stand-in"}.items():
        monkeypatch.setattr(torch.cuda, name, stub)
    checkpoint = tmp_path / PARTIAL
    gpu = G.run_gpu_bench("tiny", sizes=[32, 48], batches=[1, 2], batch_at=32, repeats=2, seed=0, budget_s=600,
                          device="cpu", grid="quick", checkpoint=checkpoint)
    assert gpu["gpu"] == "CPU stand-in" and len(gpu["forms"]) == len(G.form_plan([32, 48], "quick"))
    assert json.loads(checkpoint.read_text())["partial"] is True
    offered = [r for r in gpu["forms"] if not (r["policy"] and fp16_policy_problem(r["policy"], r["form"]))]
    refused = [r for r in gpu["forms"] if r not in offered]
    assert [(r["form"], r["policy"]) for r in refused] == [("torch", "fourier-scaled")]
    assert all("error" not in r and r["graph_ms"] > 0 and r["eager_ms"] > 0 for r in offered), \
        [r for r in offered if "error" in r or not r.get("graph_ms")]
    aligns = {(r["form"], r["policy"], r.get("variant")): r["align"] for r in offered if r["size"] == 32}
    assert aligns[("matmul-dense", "fourier-scaled", None)] == 8 and aligns[("matmul", "fourier-scaled", None)] == 8
    assert aligns[("matmul-dense", "fourier-scaled", "unpadded")] == 1 and aligns[("matmul-dense", "fourier-fp32", None)] == 1
    assert aligns[("torch", None, None)] is None
    # Shares where the plan has a floor of the same precision (all of the first size; later sizes: fourier-scaled).
    assert all(0 <= r["fourier_share"] <= 1 for r in offered if r["form"] != G.FLOOR
               and (r["size"] == 32 or r["policy"] == "fourier-scaled"))
    hot = [r["hot_error"] for r in offered if r["precision"] == "fp16" and r.get("hot_error")]
    assert hot and all(h["non_finite"] == 0 and h["hole_mean_255"] < 5 for h in hot)
    plan = G.backend_plan([1, 2], 32, "quick")
    assert [(r["mode"], r["batch"]) for r in gpu["backend"]] == [(c.mode, c.batch) for c in plan]
    assert all(r["latency_ms"] > 0 and r["peak_gpu_mb"] == 3.0 and r["peak_reserved_mb"] == 4.0 for r in gpu["backend"]), \
        [r for r in gpu["backend"] if "error" in r]
    assert gpu["speedup_graphs_fp16_vs_eager_fp32"]["ratio"] > 0 and [t["size"] for t in gpu["targets"]] == [32, 48]
    assert "CPU stand-in" in gpu_markdown(gpu, "test")
