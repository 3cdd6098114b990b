"""Per-unit graph counts of the exported Fourier forms (docs/benchmarks.md, "Fourier forms")."""

from __future__ import annotations

from pathlib import Path

import onnx

from lama_deploy.export.fourier_report import fourier_graph_counts, fourier_unit_gflop
from lama_deploy.scripts.commands.fourier_report import main


def test_tiny_matmul_graph_counts(tiny_onnx: Path) -> None:
    counts = fourier_graph_counts(onnx.load(str(tiny_onnx)))
    assert counts["units"] == 4
    # rfft along W (1: real and imaginary halves in one broadcast product), stage 1 and 2 along H, inverse
    # stage 1 and 2, irfft along W.
    assert counts["matmuls"] == 6
    assert counts["layout_ops"] == 2 and counts["size_arithmetic"] > counts["data_ops"]  # no Concat of the halves
    assert counts["nodes"] == counts["size_arithmetic"] + counts["data_ops"] and counts["shared_once"] > 0


def test_flops_per_unit_count_the_products() -> None:
    conv = 2 * 32 * 32 * 8 * 5  # the spectral 1x1 conv: 2C -> 2C channels on (H, W//2+1)
    assert abs(fourier_unit_gflop("torch", channels=16, height=8, width=8) * 1e9 - conv) < 1
    dense = fourier_unit_gflop("matmul-dense", channels=16, height=8, width=8) * 1e9 - conv
    # forward: x@cos, x@sin (2*C*H*W*Wf each) + (2H,2H) block (2*C*2H*2H*Wf); inverse the same.
    assert abs(dense - 2 * (2 * 2 * 16 * 8 * 8 * 5 + 2 * 16 * 16 * 16 * 5)) < 1


def test_cli_prints_a_table(tiny_onnx: Path, capsys) -> None:
    assert main([str(tiny_onnx), "--side", "8"]) == 0
    out = capsys.readouterr().out
    assert f"| {tiny_onnx.name} | 4 |" in out and "GFLOP per unit at 8x8" in out
