"""`lama-deploy inpaint` on real PNG/JPEG files: single and folder mode, failures, exit codes, summaries."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from PIL import Image

from lama_deploy import contract as C
from lama_deploy.scripts.cli import main as lama_deploy
from lama_deploy.runtime.folders import pair_files
from lama_deploy.scripts.commands.inpaint import main

RNG = np.random.default_rng(0)


def _write_pair(folder, stem, size=(40, 56), image_ext="png", mask_name=None):
    h, w = size
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[5:20, 10:30] = 255
    Image.fromarray(rgb).save(folder / f"{stem}.{image_ext}")
    Image.fromarray(mask).save(folder / (mask_name or f"{stem}_mask.png"))
    return rgb, mask


@pytest.fixture(scope="module")
def random_weights_onnx(tiny_onnx, tmp_path_factory):
    """The tiny export relabelled as the exporter labels seeded random weights."""
    model = onnx.load(str(tiny_onnx))
    for prop in model.metadata_props:
        if prop.key == C.META_WEIGHTS:
            prop.value = "random weights (seed 0; BatchNorm calibrated on generated images) - NOT trained LaMa"
    path = tmp_path_factory.mktemp("rw") / "random.onnx"
    onnx.save(model, str(path))
    return path


def test_single_png_and_jpeg(tmp_path, tiny_onnx, capsys):
    rgb, mask = _write_pair(tmp_path, "photo")
    out = tmp_path / "out.png"
    code = main(["--model", str(tiny_onnx), str(tmp_path / "photo.png"), str(tmp_path / "photo_mask.png"), "-o", str(out)])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    written = np.asarray(Image.open(out))
    assert written.shape == rgb.shape
    np.testing.assert_array_equal(written[mask == 0], rgb[mask == 0])
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=90)
    jpeg_out = tmp_path / "out.jpg"
    code = lama_deploy(["inpaint", str(tmp_path / "photo.jpg"), str(tmp_path / "photo_mask.png"), "-o", str(jpeg_out),
                        "--model", str(tiny_onnx), "--backend", "onnxruntime", "--threshold", "10"])
    assert code == 0 and Image.open(jpeg_out).format == "JPEG" and Image.open(jpeg_out).size == (56, 40)


def test_single_mode_bad_input_is_one_line_and_exit_2(tmp_path, tiny_onnx, capsys):
    _write_pair(tmp_path, "photo")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_mask.png")
    code = main([str(tmp_path / "photo.png"), str(tmp_path / "small_mask.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(tiny_onnx)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "random weights" not in line]
    assert code == 2 and err == ["lama-deploy inpaint: error: mask 'small_mask.png' is 10x10 but the image is 56x40; "
                                 "the mask must have the image's size"]
    assert not (tmp_path / "o.png").exists()


def test_missing_model_and_bad_arguments(tmp_path, capsys):
    _write_pair(tmp_path, "photo")
    assert main([str(tmp_path / "photo.png"), str(tmp_path / "photo_mask.png"), "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "pass --model PATH" in err and "lama-deploy demo" in err
    assert main([str(tmp_path / "photo.png"), "-o", str(tmp_path / "o.png")]) == 2  # one line, no usage block
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main([str(tmp_path / "photo.png"), str(tmp_path / "photo_mask.png"), "-o", str(tmp_path / "o.xyz"),
                 "--model", "m.onnx"]) == 2
    assert "cannot tell an image format" in capsys.readouterr().err


def test_corrupt_engine_is_one_line_exit_2(tmp_path, capsys):
    _write_pair(tmp_path, "photo")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 256)
    code = main([str(tmp_path / "photo.png"), str(tmp_path / "photo_mask.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(engine)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("lama-deploy inpaint: error: ")
    assert "TensorRT" in err[0]


def test_folder_mode_skips_a_corrupt_file_and_finishes_the_rest(tmp_path, tiny_onnx, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    expected = {}
    for stem, size in (("a", (40, 56)), ("b", (33, 47)), ("c", (24, 24))):
        h, w = size
        rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[3:12, 4:15] = 255
        Image.fromarray(rgb).save(images / (f"{stem}.jpg" if stem == "b" else f"{stem}.png"))
        Image.fromarray(mask).save(masks / (f"{stem}_mask001.png" if stem == "c" else f"{stem}.png"))
        expected[stem] = (rgb if stem != "b" else np.asarray(Image.open(images / "b.jpg")), mask)
    (images / "broken.png").write_bytes(b"definitely not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "broken.png")
    code = main(["--images", str(images), "--masks", str(masks), "-o", str(out), "--model", str(tiny_onnx)])
    captured = capsys.readouterr()
    assert code == 1
    assert "failed: broken.png: cannot read image 'broken.png'" in captured.err
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith("lama-deploy inpaint: 3 done, 1 failed in ") and "onnxruntime" in summary
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    for stem, (rgb, mask) in expected.items():
        written = np.asarray(Image.open(out / f"{stem}.png"))
        np.testing.assert_array_equal(written[mask == 0], rgb[mask == 0])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_folder_mode_all_good_exits_0_and_warns_about_random_weights(tmp_path, random_weights_onnx, capsys):
    folder = tmp_path / "lama_layout"
    folder.mkdir()
    _write_pair(folder, "x", mask_name="x_mask000.png")
    _write_pair(folder, "x2", mask_name="x2_mask.png")
    code = main(["--images", str(folder), "-o", str(tmp_path / "out"), "--model", str(random_weights_onnx)])
    captured = capsys.readouterr()
    assert code == 0 and "random weights" in captured.err
    assert "2 done, 0 failed" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png", "x2.png"]


def test_folder_mode_refuses_to_overwrite_inputs(tmp_path, tiny_onnx, capsys):
    _write_pair(tmp_path, "a", mask_name="a_mask.png")
    assert main(["--images", str(tmp_path), "-o", str(tmp_path), "--model", str(tiny_onnx)]) == 2
    assert "choose another output folder" in capsys.readouterr().err


def test_pairing_rules(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    images.mkdir(), masks.mkdir()
    for name in ("p.png", "q.jpg", "r.png", "s.png", "notes.txt"):
        (images / name).write_bytes(b"")
    for name in ("p.png", "q_mask.png", "r_mask000.png", "r_mask001.png"):
        (masks / name).write_bytes(b"")
    pairs = {(p.image.name, p.mask.name if p.mask else None, p.output_stem) for p in pair_files(images, masks)}
    assert pairs == {("p.png", "p.png", "p"), ("q.jpg", "q_mask.png", "q"), ("r.png", "r_mask000.png", "r_mask000"),
                     ("r.png", "r_mask001.png", "r_mask001"), ("s.png", None, "s")}


def test_soft_mask_warning_threshold_preset_and_exif_options(tmp_path, tiny_onnx, capsys):
    rgb, _ = _write_pair(tmp_path, "photo")
    yy, xx = np.mgrid[0:40, 0:56]
    soft = (np.clip((14 - np.hypot(yy - 20, xx - 28)) / 8, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(soft).save(tmp_path / "soft.png")
    args = [str(tmp_path / "photo.png"), str(tmp_path / "soft.png"), "--model", str(tiny_onnx), "-o"]
    assert main(args + [str(tmp_path / "a.png")]) == 0
    assert "note: warning: the mask has" in capsys.readouterr().out
    assert main(args + [str(tmp_path / "b.png"), "--threshold", "iopaint", "--exif", "keep", "--strategy", "crop"]) == 0
    out = capsys.readouterr().out
    assert "note: warning" not in out and "(direct," in out
    written = np.asarray(Image.open(tmp_path / "b.png"))
    np.testing.assert_array_equal(written[soft <= 127], rgb[soft <= 127])
    assert main(args + [str(tmp_path / "c.png"), "--threshold", "soft"]) == 2
    assert "neither a number nor a preset" in capsys.readouterr().err
