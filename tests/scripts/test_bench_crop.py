"""`bench_crop` on the tiny model and a small photo: it runs both strategies and prints a sound table."""

from __future__ import annotations

import numpy as np
import pytest

from lama_deploy.scripts.bench.crop import main, scene


def test_scene_has_two_small_holes():
    rgb, mask = scene(300, 400)
    assert rgb.shape == (300, 400, 3) and rgb.dtype == np.uint8 and rgb.std() > 10
    hole = mask > 0
    assert 0 < hole.mean() < 0.01 and hole.any(axis=1).sum() == 12 + 6  # two separate boxes


@pytest.mark.slow  # two spawned processes, each importing the runtime
def test_bench_crop_prints_a_row_per_strategy(tiny_onnx, capsys):
    assert main(["--model", str(tiny_onnx), "--size", "848x240", "--timeout", "240"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| crop") or line.startswith("| whole")]
    assert len(rows) == 2, table
    crop, whole = (row.split("|")[1:-1] for row in rows)
    assert crop[1].strip() == "crop" and len(crop[2].split(",")) == 2  # two regions, two model inputs
    assert whole[1].strip() == "direct" and whole[2].strip() == "848x240"
    assert crop[6].strip() == whole[6].strip() == "yes"
    assert float(crop[5].split()[0]) > 0.05  # a peak RSS in GB was read
