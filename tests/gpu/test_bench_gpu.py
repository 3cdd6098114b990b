"""The benchmark's GPU rows in a quick configuration (tiny model) on a real GPU (marker `gpu`)."""

from __future__ import annotations

import pytest

from lama_deploy.scripts.bench.gpu import FLOOR, VARIANTS, backend_plan, form_plan, run_gpu_bench
from lama_deploy.scripts.bench.gpu_report import gpu_markdown

pytestmark = pytest.mark.gpu


def test_quick_gpu_rows_measure_every_form_policy_variant_and_mode(tmp_path):
    gpu = run_gpu_bench("tiny", sizes=[64, 128], batches=[1, 2, 4], batch_at=64, repeats=3, seed=0, budget_s=240,
                        grid="quick", checkpoint=tmp_path / "partial.json", compile_modes=())
    assert "skipped" not in gpu and gpu["gpu"] and (tmp_path / "partial.json").is_file()
    forms = gpu["forms"]
    assert len(forms) == len(form_plan([64, 128], "quick"))
    # cuFFT cannot run the scaled fp16 units (it sums before normalising): that row is a one-line refusal.
    refused = [r for r in forms if r["form"] == "torch" and r["policy"] == "fourier-scaled"]
    assert refused and all("graph_ms" not in r and "not offered" in r.get("skipped", "") for r in refused), refused
    measured = [r for r in forms if r not in refused]
    assert all(r.get("graph_ms", 0) > 0 and r["eager_ms"] > 0 and r["peak_gpu_mb"] > 0 for r in measured), measured
    assert all("fourier_share" in r for r in measured if r["form"] != FLOOR)
    scaled = {(r["form"], r.get("variant")): r["align"] for r in measured if r["policy"] == "fourier-scaled"
              and r["size"] == 64 and r["form"] != FLOOR}
    assert scaled[("matmul-dense", None)] == 8 and scaled[("matmul-dense", "unpadded")] == 1
    assert {v for (_, v) in scaled} == {None, *VARIANTS}
    hot = [r["hot_error"] for r in measured if r["precision"] == "fp16" and r.get("hot_error")]
    assert hot and all(h["non_finite"] == 0 and h["hole_mean_255"] < 5 for h in hot)
    backend = gpu["backend"]
    assert [(r["mode"], r["batch"]) for r in backend] == [(c.mode, c.batch) for c in backend_plan([1, 2, 4], 64, "quick", ())]
    assert all(r["latency_ms"] > 0 and r["images_per_s"] > 0 and r["runs"] >= 1 for r in backend), backend
    assert gpu["speedup_graphs_fp16_vs_eager_fp32"]["ratio"] > 0
    assert [t["size"] for t in gpu["targets"]] == [64, 128]
    assert {s["mode"] for s in gpu["batch_scaling"]} == {"graphs fp32", "graphs fp16"}
    page = gpu_markdown(gpu, "test")
    assert gpu["gpu"] in page and "fp32 batch diagnosis" in page and "Exported form vs the cuFFT model" in page
