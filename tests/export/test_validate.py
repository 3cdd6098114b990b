"""`lama-deploy validate`: Polygraphy comparisons of ONNX Runtime (and TensorRT where present) vs PyTorch."""

from __future__ import annotations

import re

import json
import shlex
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx
from lama_deploy.export.validate import GPU_SKIP_REASON, TOLERANCES, cuda_device_count, validate_onnx
from lama_deploy.scripts.commands.validate import main
from lama_deploy import contract as C
from lama_deploy.errors import UserError
from lama_model import random_model

#: min side, odd 1/8 features (25x41), batch 2.
FAST_SHAPES = [(1, 16, 16), (1, 200, 328), (2, 256, 256)]


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line]


@pytest.fixture(scope="module")
def tiny_report(tiny_onnx: Path, tiny_model, tmp_path_factory):
    return validate_onnx(tiny_onnx, model=tiny_model, shapes=FAST_SHAPES, out_dir=tmp_path_factory.mktemp("val"))


@pytest.fixture(scope="module")
def seeded_tiny_onnx(tmp_path_factory) -> Path:
    """Exported from `--config tiny` random weights, so the metadata names the seed (no in-memory model)."""
    path = tmp_path_factory.mktemp("seeded") / "tiny.onnx"
    export_inpainting_onnx(path, config="tiny", seed=0)
    return path


def test_tiny_onnxruntime_matches_pytorch(tiny_report) -> None:
    assert tiny_report.passed and tiny_report.shapes == ["1x16x16", "1x200x328", "2x256x256"]
    cpu = [r for r in tiny_report.results if r.runner == "onnxrt-cpu"]
    assert [r.shape for r in cpu] == tiny_report.shapes
    # fp32 DFT-as-matmul vs torch.fft: ~2e-6 measured, far inside the 1e-4 tolerance.
    assert all(r.max_abs < 1e-5 and r.mean_abs < 1e-6 and r.hole_psnr_db > 100 for r in cpu)
    assert (tiny_report.atol, tiny_report.rtol) == TOLERANCES["fp32"]
    if cuda_device_count() == 0:
        assert GPU_SKIP_REASON in tiny_report.skipped["tensorrt"]


def test_polygraphy_files_and_json_report(tiny_report) -> None:
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    feeds = load_json(tiny_report.files["inputs"])
    assert [f[C.IMAGE].shape for f in feeds] == [(1, 3, 16, 16), (1, 3, 200, 328), (2, 3, 256, 256)]
    assert [f[C.MASK].shape for f in feeds] == [(1, 1, 16, 16), (1, 1, 200, 328), (2, 1, 256, 256)]
    reference = RunResults.load(tiny_report.files["reference"])
    assert reference[0][0] == "pytorch-ref" and len(reference[0][1]) == 3
    assert reference[0][1][2][C.OUTPUT].shape == (2, 3, 256, 256)
    outputs = RunResults.load(tiny_report.files["onnxrt-cpu"])
    assert np.abs(outputs[0][1][1][C.OUTPUT] - reference[0][1][1][C.OUTPUT]).max() < 1e-5
    saved = json.loads(Path(tiny_report.files["report"]).read_text())
    assert saved["passed"] is True and len(saved["results"]) == 3 and saved["onnx_sha256"] == tiny_report.onnx_sha256


def test_printed_polygraphy_command_passes_by_hand(tiny_report) -> None:
    command = tiny_report.replay_command
    assert "--onnxrt" in command and "--check-error-stat max" in command and "--load-outputs" in command
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PASSED" in done.stdout + done.stderr and "Passed: 3/3 iterations" in done.stdout + done.stderr


def test_cli_rebuilds_the_reference_from_metadata(seeded_tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    rc = main([str(seeded_tiny_onnx), "--out-dir", str(tmp_path), "--shapes", "1x64x64,1x264x200", "--quick"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASSED" in out and "random weights" in out
    assert "polygraphy run" in out and "1x264x200" in out and out.count(" pass") == 2
    assert (tmp_path / "report.json").is_file() and (tmp_path / "outputs_onnxrt-cpu.json").is_file()


def test_wrong_weights_fail_with_exit_status_1(seeded_tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    model = onnx.load(str(seeded_tiny_onnx))
    for prop in model.metadata_props:
        if prop.key == C.META_RANDOM_SEED:
            assert prop.value == "0"
            prop.value = "1"
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    assert main([str(tampered), "--out-dir", str(tmp_path / "out"), "--shapes", "1x64x64"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED (1 of 1 comparisons)" in out


def test_random_weights_recipe_reads_metadata_and_old_labels() -> None:
    from lama_deploy.export.validate import random_weights_recipe

    assert random_weights_recipe({C.META_RANDOM_SEED: "7", C.META_TRAINED_LIKE: "true"}) == (7, True)
    old_label = {C.META_WEIGHTS: "random weights (seed 3, activations scaled like the trained model; ...)"}
    assert random_weights_recipe(old_label) == (3, True)
    with pytest.raises(UserError, match="pass --checkpoint"):
        random_weights_recipe({C.META_WEIGHTS: "checkpoint best.ckpt"})


def test_nan_output_fails_and_report_stays_valid_json(tiny_onnx: Path, tiny_model, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    final = next(n for n in model.graph.node if C.OUTPUT in n.output)
    final.output[0] = "before_nan"
    zero = helper.make_node("Sub", [C.MASK, C.MASK], ["zero"], name="zero")
    nan = helper.make_node("Div", ["zero", "zero"], ["nan"], name="nan")
    model.graph.node.extend([zero, nan, helper.make_node("Add", ["before_nan", "nan"], [C.OUTPUT], name="poison")])
    broken = tmp_path / "nan.onnx"
    onnx.save(model, str(broken))
    report = validate_onnx(broken, model=tiny_model, shapes=[(1, 64, 64)], out_dir=tmp_path / "out",
                           use_tensorrt=False)
    assert not report.passed and np.isnan(report.results[0].max_abs)
    saved = json.loads(Path(report.files["report"]).read_text())
    assert saved["results"][0]["max_abs"] == "nan" and saved["passed"] is False


def test_fp16_export_uses_fp16_tolerances(tmp_path: Path) -> None:
    path = tmp_path / "tiny-fp16.onnx"
    export_inpainting_onnx(path, config="tiny", options=ExportOptions(precision="fp16"))
    report = validate_onnx(path, shapes=[(1, 64, 64), (1, 256, 384)], out_dir=tmp_path / "out", use_tensorrt=False)
    assert report.precision == "fp16" and (report.atol, report.rtol) == TOLERANCES["fp16"]
    assert report.passed
    # Really fp16: errors far above fp32's ~1e-6, below the fp16 tolerance.
    assert all(1e-4 < r.max_abs < TOLERANCES["fp16"][0] for r in report.results)


def test_user_images_are_padded_to_multiples_of_8(seeded_tiny_onnx: Path, tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a": (37, 50), "b": (64, 24)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{name}.png")
        hole = np.zeros((h, w), np.uint8)
        hole[h // 4: h // 2, w // 4: w // 2] = 255
        Image.fromarray(hole).save(masks / f"{name}.png")
    report = validate_onnx(seeded_tiny_onnx, out_dir=tmp_path / "out", image_dir=str(images), mask_dir=str(masks),
                           use_tensorrt=False)
    assert report.shapes == ["1x40x56", "1x64x24"] and report.passed


@pytest.mark.parametrize("args,message", [
    (["--shapes", "1x250x256"], "multiples of 8"),
    (["--masks", "somewhere"], "--masks needs --images"),
    (["--images", "somewhere"], "--images folder somewhere not found"),
    (["--providers", "NoSuchExecutionProvider"], "is not an ONNX Runtime provider"),
    (["--engine", "missing.engine"], "engine missing.engine not found"),
])
def test_bad_arguments_give_one_line(seeded_tiny_onnx: Path, tmp_path: Path, capsys, args, message) -> None:
    assert main([str(seeded_tiny_onnx), "--out-dir", str(tmp_path), "--quick", *args]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("lama-deploy validate: error: ") and message in lines[0]


@pytest.mark.parametrize("kind,message", [("corrupt", "is not a readable ONNX file"),
                                          ("in-memory", "pass --checkpoint"), ("missing", "not found")])
def test_unusable_onnx_gives_one_line(tiny_onnx: Path, tmp_path: Path, capsys, kind, message) -> None:
    path = tmp_path / "m.onnx"
    if kind == "corrupt":
        path.write_bytes(b"\x08\x07 garbage" * 50)
    elif kind == "in-memory":  # a model object whose weights the exporter cannot name: nothing to rebuild
        model = random_model("tiny", seed=0)
        del model.random_weights_recipe
        export_inpainting_onnx(path, model=model, config="tiny")
    assert main([str(path), "--out-dir", str(tmp_path / "out"), "--quick"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.slow
def test_big_lama_fp32_and_fp16(big_lama_onnx: Path, big_lama_model, big_lama_fp16_onnx: Path,
                                 big_lama_trained_like_model, tmp_path: Path) -> None:
    fp32 = validate_onnx(big_lama_onnx, model=big_lama_model, shapes=[(1, 200, 328), (2, 256, 256)],
                         out_dir=tmp_path / "fp32", use_tensorrt=False)
    assert fp32.passed and all(r.max_abs < 2e-5 for r in fp32.results)
    fp16 = validate_onnx(big_lama_fp16_onnx, model=big_lama_trained_like_model, shapes=[(1, 64, 64), (1, 200, 328)],
                         out_dir=tmp_path / "fp16", use_tensorrt=False)
    assert fp16.precision == "fp16" and fp16.passed


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(cuda_device_count() == 0, reason=GPU_SKIP_REASON)
def test_tensorrt_runner_on_gpu(tiny_onnx: Path, tiny_model, tmp_path: Path) -> None:
    report = validate_onnx(tiny_onnx, model=tiny_model, shapes=[(1, 256, 256)], out_dir=tmp_path)
    assert "tensorrt" not in report.skipped and any(r.runner == "tensorrt" and r.passed for r in report.results)


# --- a check the user asked for never passes when it did not run ---------------------------------------------

def _verdict(capsys) -> tuple[str, str]:
    out = capsys.readouterr().out.strip().splitlines()
    return out[-1], "\n".join(out)


def _fake_engine(engine: Path, onnx_path: Path) -> None:
    """Garbage bytes with a sidecar that matches them and the ONNX: only running it can tell."""
    from lama_deploy.engine_sidecar import file_sha256

    engine.write_bytes(b"not a TensorRT engine" * 10)
    sidecar = {"engine_sha256": file_sha256(engine), "engine_bytes": engine.stat().st_size,
               "onnx_sha256": file_sha256(onnx_path), "profiles": [{"min": [1, 16, 16], "max": [1, 64, 64]}]}
    engine.with_name(engine.name + ".json").write_text(json.dumps(sidecar))


@pytest.mark.parametrize("sidecar", [False, True])
def test_named_engine_that_cannot_run_is_not_checked(seeded_tiny_onnx: Path, tmp_path: Path, capsys,
                                                     sidecar: bool) -> None:
    from lama_deploy.engine_sidecar import sidecar_path

    engine = tmp_path / "garbage.engine"
    if sidecar:
        _fake_engine(engine, seeded_tiny_onnx)
        assert sidecar_path(engine).is_file()
    else:
        engine.write_bytes(b"\x00garbage" * 100)
    code = main([str(seeded_tiny_onnx), "--out-dir", str(tmp_path / "out"), "--shapes", "1x16x16",
                 "--engine", str(engine)])
    verdict, out = _verdict(capsys)
    assert code == 1 and "PASSED" not in out
    assert re.match(r"NOT CHECKED after [0-9.]+ s: tensorrt: ", verdict) or verdict.startswith("FAILED")
    reason = "needs an NVIDIA GPU" if cuda_device_count() == 0 else "failed to run"
    assert (reason if sidecar else "not found next to the engine") in verdict
    assert json.loads((tmp_path / "out" / "report.json").read_text())["passed"] is False


def test_named_provider_that_is_not_available_is_not_checked(seeded_tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDAExecutionProvider is available here; the check needs a provider that is not")
    code = main([str(seeded_tiny_onnx), "--out-dir", str(tmp_path), "--shapes", "1x16x16", "--no-tensorrt",
                 "--providers", "CPUExecutionProvider,CUDAExecutionProvider"])
    verdict, out = _verdict(capsys)
    assert code == 1 and re.match(r"NOT CHECKED after [0-9.]+ s: onnxrt-cuda: ONNX Runtime provider CUDAExecutionProvider",
                                  verdict)
    assert "onnxrt-cpu" in out and "pass" in out  # the runner that could run still ran


def test_runners_not_asked_for_are_skipped_and_named(seeded_tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    assert main([str(seeded_tiny_onnx), "--out-dir", str(tmp_path), "--shapes", "1x16x16"]) == 0
    verdict, out = _verdict(capsys)
    if cuda_device_count() == 0:
        assert "skipped tensorrt (not asked for): needs an NVIDIA GPU" in out
        assert verdict.startswith("PASSED (skipped: tensorrt) in ")
    else:
        assert verdict.startswith("PASSED in ")


def test_images_take_the_inpaint_layouts_and_skip_bad_files(seeded_tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    """`<stem>_mask` beside the images, a missing mask and an unreadable file: two checked, two named lines."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"cat": (40, 48), "dog": (24, 32), "owl": (16, 16)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}.png")
        hole = np.zeros((h, w), np.uint8)
        hole[4:12, 4:12] = 255
        if name != "owl":
            Image.fromarray(hole).save(folder / f"{name}_mask.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "broken_mask.png")
    assert main([str(seeded_tiny_onnx), "--out-dir", str(tmp_path / "out"), "--images", str(folder),
                 "--no-tensorrt"]) == 0
    verdict, out = _verdict(capsys)
    assert verdict.startswith("PASSED")
    table = [line for line in out.splitlines() if "onnxrt-cpu" in line and line.endswith("pass")]
    assert [line.split()[0] for line in table] == ["cat.png", "dog.png"]
    assert [line.split()[1] for line in table] == ["1x40x48", "1x24x32"]
    assert "note: skipped input owl.png: no mask" in out and "note: skipped input broken.jpg: cannot read" in out
