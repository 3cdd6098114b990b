"""`lama-deploy inpaint` first contact: mistakes fail before the model loads, JPEG quality and masks, progress."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama_deploy.runtime import progress
from lama_deploy.scripts.commands import inpaint as cli
from lama_deploy.runtime.inpainter import Inpainter

RNG = np.random.default_rng(1)
HOLE = (slice(13, 35), slice(19, 43))  # not on JPEG's 8x8 blocks, so a JPEG mask rings around it


def _pair(folder: Path, size=(64, 64), mask_ext="png") -> tuple[Path, Path]:
    h, w = size
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "photo.png")
    mask = np.zeros((h, w), np.uint8)
    mask[HOLE] = 255
    mask_path = folder / f"photo_mask.{mask_ext}"
    Image.fromarray(mask).save(mask_path, **({"quality": 75} if mask_ext == "jpg" else {}))
    return folder / "photo.png", mask_path


@pytest.fixture
def model_must_not_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(Inpainter, "from_path", refuse)


@pytest.mark.parametrize("case,message", [
    ("missing-folder", "output folder"), ("output-is-folder", "is a folder"), ("bad-format", "cannot tell an image format"),
    ("missing-image", "image"), ("missing-mask", "mask"), ("quality", "--jpeg-quality 0 is out of range"),
])
def test_mistakes_fail_in_one_line_before_the_model_loads(tmp_path, capsys, model_must_not_load, case, message):
    image, mask = _pair(tmp_path)
    output, extra = tmp_path / "out.png", []
    if case == "missing-folder":
        output = tmp_path / "nodir" / "x.png"
    elif case == "output-is-folder":
        output = tmp_path
    elif case == "bad-format":
        output = tmp_path / "out.xyz"
    elif case == "missing-image":
        image = tmp_path / "nope.png"
    elif case == "missing-mask":
        mask = tmp_path / "nope_mask.png"
    elif case == "quality":
        extra = ["--jpeg-quality", "0"]
    code = cli.main([str(image), str(mask), "-o", str(output), "--model", "any.onnx", *extra])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("lama-deploy inpaint: error: ") and message in err[0]


def test_bad_threshold_is_an_argparse_error_before_the_model_loads(tmp_path, capsys, model_must_not_load):
    image, mask = _pair(tmp_path)
    # --threshold is parsed by the shared option groups (presets too); the error is one line, not a usage block
    code = cli.main([str(image), str(mask), "-o", str(tmp_path / "out.png"), "--model", "any.onnx", "--threshold", "300"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "threshold 300.0 is out of range" in err[0]


def test_jpeg_quality_is_an_option(tmp_path, tiny_onnx):
    image, mask = _pair(tmp_path)
    sizes = {}
    for quality in (20, 95):
        out = tmp_path / f"q{quality}.jpg"
        assert cli.main([str(image), str(mask), "-o", str(out), "--model", str(tiny_onnx),
                         "--jpeg-quality", str(quality)]) == 0
        sizes[quality] = out.stat().st_size
    assert sizes[20] < 0.6 * sizes[95]


def test_jpeg_masks_ignore_their_compression_noise(tmp_path, tiny_onnx):
    image, mask = _pair(tmp_path, mask_ext="jpg")
    noisy = np.asarray(Image.open(mask).convert("L"))
    square = np.zeros(noisy.shape, bool)
    square[HOLE] = True
    assert (noisy[~square] > 0).sum() > 0  # the JPEG really is noisy outside the white square
    original = np.asarray(Image.open(image))
    changed = {}
    for name, extra in {"default": [], "zero": ["--threshold", "0"]}.items():
        out = tmp_path / f"{name}.png"
        assert cli.main([str(image), str(mask), "-o", str(out), "--model", str(tiny_onnx), *extra]) == 0
        changed[name] = int((np.asarray(Image.open(out)) != original).any(axis=2)[~square].sum())
    assert changed["default"] == 0 and changed["zero"] > 0


def test_progress_on_a_terminal(tmp_path, tiny_onnx, monkeypatch, capsys):
    image, mask = _pair(tmp_path)
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    assert cli.main([str(image), str(mask), "-o", str(tmp_path / "o.png"), "--model", str(tiny_onnx)]) == 0
    err = capsys.readouterr().err
    assert f"lama-deploy inpaint: loading {tiny_onnx} ..." in err
    assert "lama-deploy inpaint: inpainting photo.png with onnxruntime ..." in err
    assert err.count("... done in ") == 2


def test_no_progress_when_piped(monkeypatch, capsys):
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    with progress.stage("p", "quiet"):
        pass
    assert progress.sys.stderr.getvalue() == ""
