"""`lama-deploy check-engine` on fake TensorRT engines (no sidecar, as trtexec writes them) and the stand-in
libcudart; the reference files in Polygraphy's formats, checked against Polygraphy's own reader/writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lama_deploy import contract as C
from lama_deploy.polygraphy_json import read_feeds, read_run_results, write_feeds, write_run_results
from lama_deploy.scripts.cli import dispatch

import fake_tensorrt as fake


def make_reference(folder, shapes=((1, 16, 16), (2, 32, 48)), atol=1e-4, seed=0):
    """inputs.json / reference.json / report.json as `lama-deploy validate --out-dir` leaves them."""
    rng = np.random.default_rng(seed)
    feeds, outputs = [], []
    for n, h, w in shapes:
        image = rng.random((n, 3, h, w), dtype=np.float32)
        mask = (rng.random((n, 1, h, w)) > 0.5).astype(np.float32)
        feeds.append({C.IMAGE: image, C.MASK: mask})
        outputs.append({C.OUTPUT: image * (1 - mask) + 0.25 * mask})
    folder.mkdir(parents=True, exist_ok=True)
    write_feeds(feeds, folder / "inputs.json")
    write_run_results("pytorch-ref", outputs, folder / "reference.json")
    (folder / "report.json").write_text(json.dumps({"precision": "fp32", "atol": atol, "rtol": 1e-3,
                                                    "weights": "random weights (seed 0)"}))
    return feeds, outputs


@pytest.fixture
def device(monkeypatch, fake_cudart_path):
    monkeypatch.setenv("LAMA_CUDART", str(fake_cudart_path))

    def use(generation):
        monkeypatch.setattr("lama_deploy.runtime.trt_import.import_tensorrt",
                            lambda flavour=None: fake.make_trt(None, generation))
    return use


def test_polygraphy_reads_our_files_and_we_read_its_files(tmp_path):
    polygraphy_json = pytest.importorskip("polygraphy.json")
    from polygraphy.comparator import RunResults

    feeds, outputs = make_reference(tmp_path)
    theirs = polygraphy_json.load_json(str(tmp_path / "inputs.json"))
    assert np.array_equal(theirs[1][C.MASK], feeds[1][C.MASK])
    results = RunResults.load(str(tmp_path / "reference.json"))
    assert np.array_equal(results["pytorch-ref"][1][C.OUTPUT], outputs[1][C.OUTPUT])
    polygraphy_json.save_json(feeds, str(tmp_path / "theirs.json"))
    results.save(str(tmp_path / "theirs_results.json"))
    assert np.array_equal(read_feeds(tmp_path / "theirs.json")[0][C.IMAGE], feeds[0][C.IMAGE])
    ((runner, iterations),) = read_run_results(tmp_path / "theirs_results.json")
    assert runner == "pytorch-ref" and np.array_equal(iterations[1][C.OUTPUT], outputs[1][C.OUTPUT])


@pytest.mark.parametrize("generation", sorted(fake.GENERATIONS))
def test_passed_on_a_trtexec_engine_without_sidecar(device, tmp_path, capsys, generation):
    device(generation)
    make_reference(tmp_path / "ref")
    engine = tmp_path / "lama.plan"
    engine.write_bytes(fake.Spec(generation=generation).serialize())
    assert dispatch(["check-engine", str(engine), "--reference", str(tmp_path / "ref"),
                     "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "PASSED" and "device memory 3.0 MiB" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert [c["max_abs"] for c in report["comparisons"]] == [0.0, 0.0]


def test_failed_names_the_shapes(device, tmp_path, capsys):
    device("8.5")
    make_reference(tmp_path / "ref")
    engine = tmp_path / "wrong.engine"
    engine.write_bytes(fake.Spec(generation="8.5", output_offset=0.01).serialize())
    assert dispatch(["check-engine", str(engine), "--reference", str(tmp_path / "ref")]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "FAILED (2 of 2 comparisons: 1x16x16, 2x32x48)"
    # a looser tolerance given on the command line passes it
    assert dispatch(["check-engine", str(engine), "--reference", str(tmp_path / "ref"), "--atol", "0.02"]) == 0


def test_not_checked_outside_the_profile_and_without_a_device(device, tmp_path, capsys, monkeypatch):
    device("10")
    make_reference(tmp_path / "ref", shapes=((1, 128, 128),))
    engine = tmp_path / "lama.engine"
    engine.write_bytes(fake.Spec(generation="10").serialize())
    assert dispatch(["check-engine", str(engine), "--reference", str(tmp_path / "ref")]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        "NOT CHECKED: no reference shape could run (1x128x128: outside the engine's profile)")
    monkeypatch.setenv("LAMA_CUDART", str(tmp_path / "no" / "libcudart.so"))
    assert dispatch(["check-engine", str(engine), "--reference", str(tmp_path / "ref")]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("NOT CHECKED: the engine cannot run here:") and "libcudart" in last


def test_engine_of_another_tensorrt_is_not_checked(device, tmp_path, capsys):
    device("11")  # an 8.5 engine on a TensorRT 11 runtime: deserialization fails
    make_reference(tmp_path / "ref")
    engine = tmp_path / "lama.engine"
    engine.write_bytes(fake.Spec(generation="8.5").serialize())
    assert dispatch(["check-engine", str(engine), "--reference", str(tmp_path / "ref")]) == 1
    assert "NOT CHECKED: the engine cannot run here: cannot load TensorRT engine" in capsys.readouterr().out


def test_missing_reference_is_a_user_error(tmp_path, capsys):
    engine = tmp_path / "lama.engine"
    engine.write_bytes(b"x")
    assert dispatch(["check-engine", str(engine), "--reference", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lama-deploy validate" in err
