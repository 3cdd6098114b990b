"""scripts/bench_memory.py on the tiny model: one fresh process per case, a markdown row with real numbers."""

from __future__ import annotations

import re
from pathlib import Path

from lama_deploy.scripts.bench import memory as bench_memory


def test_table_has_a_measured_row_per_case(tiny_onnx: Path) -> None:
    text = bench_memory.table(str(tiny_onnx), [64], 0, "4GB", ["before", "after"])
    rows = [line for line in text.splitlines() if line.startswith("| ORT CPU")]
    assert len(rows) == 2 and "random weights" in text
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        peak, loaded = float(cells[2]), float(cells[3])
        assert 0.01 < loaded <= peak < 2.0 and cells[-1] == "ok"  # tiny model: well under 2 GB
        assert re.fullmatch(r"\d+\.\d", cells[4])


def test_missing_model_is_one_line(capsys) -> None:
    assert bench_memory.main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1
