"""`lama-deploy bench` on the tiny model, the report maths, and the export speedups it relies on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lama_deploy.scripts.bench import report as R
from lama_deploy.scripts.bench.command import estimate_seconds, main, plan_cells

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[int, Path, str]:
    """One quick benchmark (tiny model, 64x64 and batch 2, two backends) shared by the output checks."""
    out = tmp_path_factory.mktemp("bench")
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--quick", "--out", str(out), "--backends", "torch-fft,ort-cpu", "--sizes", "64",
                     "--share-runs", "1", "--docs", str(out / "page.md")])
    return code, out, stdout.getvalue()


def test_quick_run_writes_json_with_positive_numbers(quick_run) -> None:
    code, out, _ = quick_run
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["config"] == "tiny" and "random weights" in report["weights"]
    assert {"machine", "rows", "targets", "load_average", "method", "command"} <= set(report)
    rows = report["rows"]
    assert {(r["backend"], r["batch"], r["size"]) for r in rows} == {
        ("torch-fft", 1, 64), ("ort-cpu", 1, 64), ("torch-fft", 2, 64), ("ort-cpu", 2, 64)}
    for row in rows:
        assert "error" not in row and "skipped" not in row, row
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] >= row["min_ms"] > 0
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1e3 / row["median_ms"])
        assert row["peak_rss_mb"] > 10 and row["gflop"] > 0 and row["gflop_per_s"] > 0
        assert 0 < row["fourier_share"] < 1
    ort_row = next(r for r in rows if r["backend"] == "ort-cpu" and r["batch"] == 1)
    assert ort_row["dft_gflop"] > 0 and sum(ort_row["top_ops"].values()) <= 1.0 + 1e-6
    # Batch 2 does twice the work of batch 1.
    flops = {r["batch"]: r["gflop"] for r in rows if r["backend"] == "ort-cpu"}
    assert flops[2] == pytest.approx(2 * flops[1])


def test_quick_run_writes_png_markdown_and_prints_table(quick_run) -> None:
    _, out, stdout = quick_run
    png = (out / "bench.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000
    for page in (out / "benchmarks.md", out / "page.md"):
        text = page.read_text()
        assert "random weights" in text and "| backend |" in text and "Load average" in text
    assert (out / "page.png").read_bytes()[:8] == PNG_MAGIC and "](page.png)" in (out / "page.md").read_text()
    header = next(line for line in stdout.splitlines() if line.startswith("backend"))
    assert "median ms" in header and "p90 ms" in header and "FU share" in header
    assert "torch-fft" in stdout and "ort-cpu" in stdout and "speedup_vs_eager_512" in stdout


def test_rerender_keeps_hand_written_notes(quick_run, tmp_path: Path) -> None:
    from lama_deploy.scripts.bench.report import NOTES_MARKER

    _, out, _ = quick_run
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# stale table\n\n{NOTES_MARKER}\n## Notes\nmeasured by hand: 37 s\n")
    assert main(["--from-json", str(out / "bench.json"), "--out", str(tmp_path / "again"), "--docs", str(page)]) == 0
    text = page.read_text()
    assert "stale table" not in text and "| backend |" in text
    assert text.index("| backend |") < text.index(NOTES_MARKER) and text.endswith("measured by hand: 37 s\n")


def test_resume_keeps_timed_cells_without_rerunning(quick_run, tmp_path: Path) -> None:
    _, out, _ = quick_run
    first = json.loads((out / "bench.json").read_text())["rows"]
    code = main(["--quick", "--out", str(tmp_path), "--backends", "torch-fft,ort-cpu", "--sizes", "64",
                 "--resume", str(out / "bench.json")])
    assert code == 0
    again = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["times_s"] for r in again] == [r["times_s"] for r in first]
    assert all(r["resumed_from"] == str(out / "bench.json") for r in again)
    assert json.loads((tmp_path / "bench.partial.json").read_text())["rows"]


def test_cells_over_budget_are_skipped_and_say_so(tmp_path: Path, capsys) -> None:
    code = main(["--quick", "--out", str(tmp_path), "--backends", "ort-cpu", "--sizes", "64,128", "--batch", "1",
                 "--budget-s", "0.000001", "--share-runs", "0"])
    assert code == 0
    rows = {r["size"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    assert rows[64]["repeats"] == 1                     # first cell runs once, then stops at the budget
    assert rows[128]["skipped"].startswith("skipped: est.") and "budget" in rows[128]["skipped"]
    assert "skipped: est." in capsys.readouterr().out


def test_unknown_backend_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--backends", "ort-cpu,warp-drive"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warp-drive" in err[0] and err[0].startswith("lama-deploy bench: error:")


def test_invalid_size_is_rejected(tmp_path: Path, capsys) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--sizes", "100"]) == 2
    assert "multiples of 8" in capsys.readouterr().err


def test_plan_and_estimates() -> None:
    assert plan_cells([512, 256], [1, 2], 512) == [(1, 256), (1, 512), (2, 512)]
    assert estimate_seconds({}, 1, 512) is None
    history = {(1, 256): 0.5, (1, 512): 2.0}
    assert estimate_seconds(history, 1, 1024) == pytest.approx(2.0 * 4 ** 1.15)
    assert estimate_seconds(history, 1, 256) == pytest.approx(0.5)


# --- report maths -----------------------------------------------------------------------------------------

def _row(backend: str, size: int, median_ms: float, share: float | None = None, batch: int = 1) -> dict:
    return {"backend": backend, "batch": batch, "size": size, "median_ms": median_ms, "fourier_share": share}


def test_targets_from_known_latencies() -> None:
    rows = [_row("torch-fft", 512, 3000.0)]
    rows += [_row("ort-cpu", s, 2000.0 * (s / 512) ** (2 * 1.1), share) for s, share in
             [(512, 0.08), (1024, 0.12), (2048, 0.3)]]
    targets = R.evaluate_targets(rows, "torch-fft")
    assert targets["speedup_vs_eager_512"]["value"] == pytest.approx(1.5) and targets["speedup_vs_eager_512"]["passed"]
    assert targets["fourier_share_512"]["passed"] is True and targets["fourier_share_2048"]["passed"] is False
    assert targets["latency_exponent"]["value"] == pytest.approx(1.1, abs=1e-4)
    assert targets["latency_exponent"]["passed"] is True
    missing = R.evaluate_targets([_row("ort-cpu", 512, 10.0)], "torch-fft")
    assert missing["speedup_vs_eager_512"]["passed"] is None and missing["latency_exponent"]["value"] is None


def test_latency_stats() -> None:
    stats = R.latency_stats([0.1, 0.2, 0.3, 0.4, 1.0], batch=2, gflop=50.0)
    assert stats["median_ms"] == pytest.approx(300.0) and stats["min_ms"] == pytest.approx(100.0)
    assert stats["p90_ms"] == pytest.approx(760.0)
    assert stats["images_per_s"] == pytest.approx(2 / 0.3) and stats["gflop_per_s"] == pytest.approx(50 / 0.3)


def test_big_lama_flop_count_matches_reference() -> None:
    """440 GFLOP at 512x512 (2 FLOP per MAC, FFTs excluded), linear in pixels and batch."""
    assert R.model_gflop("big-lama", 1, 512) == pytest.approx(440, rel=0.01)
    assert R.model_gflop("big-lama", 2, 1024) == pytest.approx(8 * R.model_gflop("big-lama", 1, 512), rel=1e-2)
    # Factorised H pass: at 2048 (256x256 features, 16x16 split) the DFT is a fraction of the convolutions.
    assert 0 < R.dft_gflop("big-lama", 1, 2048) < 0.2 * R.model_gflop("big-lama", 1, 2048)


# --- export/speedups.py -------------------------------------------------------------------------------------

def _inputs(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g), (torch.rand(batch, 1, height, width, generator=g) > 0.6).float()


@pytest.mark.parametrize("batch,height,width", [(2, 48, 80), (1, 136, 200)])
def test_speedups_match_the_reference_model(tiny_model, batch: int, height: int, width: int) -> None:
    from lama_deploy.export.speedups import apply_speedups

    fast = apply_speedups(tiny_model)
    image, mask = _inputs(batch, height, width)
    with torch.no_grad():
        error = (fast(image, mask) - tiny_model(image, mask)).abs().max().item()
        raw = torch.cat([image * (1 - mask), mask], 1)
        generator_error = (fast.generator(raw) - tiny_model.generator(raw)).abs().max().item()
    assert error <= 1e-5 and generator_error <= 1e-5, (error, generator_error)


def test_speedups_leave_the_callers_model_alone(tiny_model) -> None:
    from lama_deploy.export.speedups import SpaceToDepthHead, apply_speedups

    before = sum(isinstance(m, torch.nn.BatchNorm2d) for m in tiny_model.modules())
    fast = apply_speedups(tiny_model)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in tiny_model.modules()) == before > 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules()) == 0
    assert any(isinstance(m, SpaceToDepthHead) for m in fast.modules())
    assert not any(isinstance(m, SpaceToDepthHead) for m in tiny_model.modules())


def test_speedup_export_passes_tensorrt_rules_and_matches(tiny_model, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from lama_deploy.export.onnx_export import export_inpainting_onnx
    from lama_deploy.export.onnx_rules import tensorrt_violations
    from lama_deploy.export.speedups import apply_speedups

    path = tmp_path / "fast.onnx"
    export_inpainting_onnx(path, model=apply_speedups(tiny_model), config="tiny")
    graph = onnx.load(str(path))
    assert tensorrt_violations(graph) == []
    ops = {node.op_type for node in graph.graph.node}
    assert "SpaceToDepth" in ops and "DepthToSpace" in ops and "BatchNormalization" not in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, height, width in [(1, 64, 96), (2, 136, 72)]:
        image, mask = _inputs(batch, height, width, seed=height)
        with torch.no_grad():
            reference = tiny_model(image, mask).numpy()
        (output,) = session.run(None, {"image": image.numpy(), "mask": mask.numpy()})
        assert np.abs(output - reference).max() <= 1e-4


@pytest.mark.parametrize("kernel,stride,padding,output_padding", [(3, 2, 1, 1), (4, 2, 1, 0), (2, 2, 0, 0), (5, 3, 1, 0),
                                                                   (6, 4, 1, 0)])
def test_subpixel_upsample_equals_the_conv_transpose(kernel: int, stride: int, padding: int, output_padding: int) -> None:
    from lama_deploy.export.speedups import SubPixelUpsample

    torch.manual_seed(kernel * 10 + stride)
    deconv = torch.nn.ConvTranspose2d(5, 7, kernel, stride, padding, output_padding)
    x = torch.randn(2, 5, 6, 9)
    with torch.no_grad():
        expected, got = deconv(x), SubPixelUpsample(deconv)(x)
    assert got.shape == expected.shape == (2, 7, 6 * stride, 9 * stride)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("layer", [torch.nn.ConvTranspose2d(4, 4, 3, 2, 0, 1), torch.nn.ConvTranspose2d(4, 4, 3, 1, 1),
                                   torch.nn.ConvTranspose2d(4, 4, 3, 2, 1, 1, groups=2),
                                   torch.nn.ConvTranspose2d(4, 4, 3, 2, 1, 1, dilation=2), torch.nn.Conv2d(4, 4, 3)])
def test_subpixel_upsample_refuses_what_it_cannot_compute_exactly(layer: torch.nn.Module) -> None:
    from lama_deploy.export.speedups import SubPixelUpsample, can_subpixel

    assert not can_subpixel(layer)
    with pytest.raises(ValueError, match="not a sub-pixel upsampling"):
        SubPixelUpsample(layer)


def test_only_the_full_resolution_upsampling_is_rewritten(tiny_model) -> None:
    from lama_deploy.export.speedups import SubPixelUpsample, apply_speedups

    fast = apply_speedups(tiny_model)
    layers = list(fast.generator.model.children())
    before = [m for m in tiny_model.generator.model.children() if isinstance(m, torch.nn.ConvTranspose2d)]
    kept = [m for m in layers if isinstance(m, torch.nn.ConvTranspose2d)]
    rewritten = [i for i, m in enumerate(layers) if isinstance(m, SubPixelUpsample)]
    assert len(before) >= 2 and len(kept) == len(before) - 1 and len(rewritten) == 1
    assert all(not isinstance(m, torch.nn.ConvTranspose2d) for m in layers[rewritten[0]:])


@pytest.mark.slow
def test_big_lama_speedups_match(big_lama_model) -> None:
    from lama_deploy.export.speedups import apply_speedups

    fast = apply_speedups(big_lama_model)
    image, mask = _inputs(1, 64, 96)
    with torch.no_grad():
        error = (fast(image, mask) - big_lama_model(image, mask)).abs().max().item()
    assert error <= 1e-4, error


# --- the factorised DFT inside an exported graph ------------------------------------------------------------

def test_factorised_dft_stays_dynamic_in_onnx(tmp_path: Path) -> None:
    """One exported Fourier unit, run at sides that pick different splits (8x8, 8x16, 4x25, dense 135, 16x16)."""
    import onnxruntime as ort

    from lama_deploy.export.onnx_rules import tensorrt_violations
    from lama_model.ffc import FourierUnit
    from lama_model.fourier import MatmulDFT, TorchFFT, split_length

    assert [split_length(n) for n in (64, 128, 100, 135, 256, 32)] == [(8, 8), (8, 16), (4, 25), (1, 135),
                                                                        (16, 16), (1, 32)]
    unit = FourierUnit(4, fourier="matmul").eval()
    path = tmp_path / "fu.onnx"
    import contextlib
    import io
    import warnings

    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(unit, torch.randn(1, 4, 24, 40), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})
    import onnx

    assert tensorrt_violations(onnx.load(str(path))) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, height, width in [(1, 64, 64), (2, 128, 33), (1, 100, 70), (1, 135, 64), (1, 256, 9)]:
        x = torch.randn(batch, 4, height, width, generator=torch.Generator().manual_seed(height))
        (onnx_out,) = session.run(None, {"x": x.numpy()})
        unit.transform = TorchFFT()
        with torch.no_grad():
            reference = unit(x).numpy()
        unit.transform = MatmulDFT()
        assert np.abs(onnx_out - reference).max() <= 1e-4 * max(1.0, float(np.abs(reference).max()))
    assert math.isfinite(float(np.abs(onnx_out).max()))


def test_fp16_dft_error_is_fp16_sized_and_finite_on_trained_like_input() -> None:
    from lama_deploy.scripts.bench.fp16 import fp16_dft_error

    result = fp16_dft_error("tiny", 128, seed=0)
    assert result["fourier_input_absmax"] > 100  # trained-like activations, not unit-scale random ones
    assert result["fp16_non_finite"] == 0
    # fp16 rounding (2^-11 relative) shows; fp32 stays orders of magnitude closer to the float64 reference.
    assert 1e-5 < result["fp16_relative_error"] < 5e-3
    assert result["fp32_max_abs_error"] < result["fp16_max_abs_error"] / 100
