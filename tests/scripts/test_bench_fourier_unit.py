"""`python3 -m lama_deploy.scripts.bench.fourier_unit` on a small unit: both forms, both alignments, real ratios."""

from __future__ import annotations

from lama_deploy.scripts.bench import fourier_unit


def test_rows_pair_every_form_with_its_unpadded_twin(capsys):
    assert fourier_unit.main(["--channels", "4", "--sizes", "16,24", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| matmul")]
    assert len(rows) == 2 * 2 * 2  # forms x sizes x aligns
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[3]) > 0 and float(cells[4]) > 0
        if cells[2] == "1":
            assert cells[5] == cells[6] == "1.000"  # each unpadded row is its own baseline
        else:
            assert cells[2] == "8" and float(cells[5]) > 0


def test_bad_sizes_are_one_line(capsys):
    assert fourier_unit.main(["--sizes", "a,b"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
