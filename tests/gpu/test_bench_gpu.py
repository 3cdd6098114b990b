"""The benchmark's GPU rows in a quick configuration (tiny model) on a real GPU (marker `gpu`)."""

from __future__ import annotations

import pytest

from lama_deploy.scripts.bench.gpu import FLOOR, precisions, run_gpu_bench
from lama_deploy.scripts.bench.gpu_report import gpu_markdown
from lama_model import FOURIER_MODES

pytestmark = pytest.mark.gpu


def test_quick_gpu_rows_measure_every_form_policy_and_mode():
    gpu = run_gpu_bench("tiny", sizes=[64], batches=[1, 2], batch_at=64, repeats=3, seed=0, budget_s=240)
    assert "skipped" not in gpu and gpu["gpu"]
    forms = gpu["forms"]
    assert len(forms) == len(precisions()) * (len(FOURIER_MODES) + 1)
    # cuFFT cannot run the scaled fp16 units (it sums before normalising): that row is a one-line refusal.
    refused = [r for r in forms if r["form"] == "torch" and r["policy"] == "fourier-scaled"]
    assert all("graph_ms" not in r and "fourier-scaled" in r.get("error", "") for r in refused), refused
    torch_rows = [r for r in forms if r["form"] == "torch" and r not in refused]
    assert all(r["graph_ms"] > 0 and r["eager_ms"] > 0 and r["peak_gpu_mb"] > 0 for r in torch_rows), torch_rows
    assert all("fourier_share" in r for r in torch_rows)
    assert all(r["graph_ms"] > 0 for r in forms if r["form"] == FLOOR)
    hot = [r["hot_error"] for r in torch_rows if r["precision"] == "fp16"]
    assert hot and all(h["non_finite"] == 0 for h in hot)
    backend = gpu["backend"]
    assert {(r["mode"], r["batch"]) for r in backend} == {(m, b) for m in ("eager fp32", "eager fp16", "graphs fp32",
                                                                           "graphs fp16") for b in (1, 2)}
    assert all(r["latency_ms"] > 0 and r["images_per_s"] > 0 for r in backend), backend
    assert gpu["speedup_graphs_fp16_vs_eager_fp32"]["ratio"] > 0
    page = gpu_markdown(gpu, "test")
    assert gpu["gpu"] in page and "graphs fp16" in page
