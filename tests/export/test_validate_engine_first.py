"""`validate --engine` on a machine that cannot run the engine says NOT CHECKED at once (issue 24), before the
minute-long ONNX Runtime comparison; its last line keeps the duration apart from the advice."""

from __future__ import annotations

import time
from pathlib import Path

from lama_deploy.scripts.commands.validate import main


def test_engine_that_cannot_run_is_not_checked_within_5_s(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")  # no sidecar, and no GPU on most CI machines: cannot run either way
    start = time.monotonic()
    code = main([str(tiny_onnx), "--engine", str(engine), "--out-dir", str(tmp_path / "out")])
    elapsed = time.monotonic() - start
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1 and elapsed < 5.0, (code, elapsed)
    assert lines[-1].startswith("NOT CHECKED after ") and lines[-1].split(": ", 1)[0].endswith(" s")
    assert not lines[-1].rstrip().endswith(" s")  # the advice ends the line, no duration glued to it
    assert not (tmp_path / "out" / "reference.json").exists()  # the comparison never ran
