"""Input handling: every accepted form, and one clear InpaintInputError line for every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama_deploy.errors import UserError
from lama_deploy.runtime.images import InpaintInputError, load_hole, load_image, to_output_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def _png16_rgb(path: Path, height: int = 4, width: int = 5) -> Path:
    """A 16-bit RGB PNG, which Pillow would otherwise silently open as 8-bit RGB."""
    rows = b"".join(b"\x00" + RNG.integers(0, 65535, width * 3).astype(">u2").tobytes() for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and isinstance(excinfo.value, UserError)
    return message


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "filelike", "pil", "array"])
def test_every_source_form_gives_the_same_pixels(tmp_path, kind):
    path = tmp_path / "image.png"
    Image.fromarray(RGB).save(path)
    source = {"path": path, "str": str(path), "bytes": path.read_bytes(), "filelike": io.BytesIO(path.read_bytes()),
              "pil": Image.open(path), "array": RGB}[kind]
    loaded = load_image(source)
    assert loaded.mode == "RGB" and loaded.alpha is None
    np.testing.assert_array_equal(loaded.rgb, RGB)


def test_rgba_keeps_alpha_and_grayscale_stays_grayscale():
    rgba = np.dstack([RGB, RNG.integers(0, 256, RGB.shape[:2], dtype=np.uint8)])
    loaded = load_image(rgba)
    assert loaded.mode == "RGBA"
    np.testing.assert_array_equal(loaded.alpha, rgba[:, :, 3])
    gray = RGB[:, :, 0]
    loaded = load_image(gray)
    assert loaded.mode == "L" and loaded.rgb.shape == (12, 10, 3)
    np.testing.assert_array_equal(loaded.rgb[:, :, 2], gray)
    assert load_image(gray[:, :, None]).mode == "L"
    assert load_image(Image.fromarray(np.dstack([gray, gray]))).mode == "LA"


def test_output_restores_mode_and_keeps_outside_pixels():
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])
    hole = np.zeros(RGB.shape[:2], bool)
    hole[2:5, 3:6] = True
    generated = np.full_like(RGB, 200)
    out = np.asarray(to_output_image(load_image(rgba), generated, hole))
    assert out.shape == rgba.shape
    np.testing.assert_array_equal(out[~hole], rgba[~hole])
    assert (out[hole][:, :3] == 200).all() and (out[:, :, 3] == 7).all()
    gray_out = to_output_image(load_image(RGB[:, :, 1]), generated, hole)
    assert gray_out.mode == "L"
    assert (np.asarray(gray_out)[hole] == 200).all()
    np.testing.assert_array_equal(np.asarray(gray_out)[~hole], RGB[:, :, 1][~hole])


def test_palette_images_are_converted_with_a_note(tmp_path):
    path = tmp_path / "palette.png"
    Image.fromarray(RGB).convert("P").save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and any("palette" in note for note in loaded.notes)
    np.testing.assert_array_equal(loaded.rgb, np.asarray(Image.open(path).convert("RGB")))


def test_masks_threshold_luminance_bool_and_bilevel():
    values = np.arange(120, dtype=np.uint8).reshape(12, 10) * 2
    assert load_hole(values, (10, 12)).sum() == 119  # > 0
    assert load_hole(values, (10, 12), threshold=128).sum() == int((values > 128).sum())
    rgb_mask = np.zeros((12, 10, 3), np.uint8)
    rgb_mask[0, 0] = (255, 0, 0)  # luminance 76: a hole, as LaMa's convert("L") sees it
    rgb_mask[0, 1] = (1, 0, 0)  # luminance 0: not a hole
    hole = load_hole(rgb_mask, (10, 12))
    assert hole[0, 0] and not hole[0, 1] and hole.sum() == 1
    assert load_hole(values > 100, (10, 12)).sum() == int((values > 100).sum())
    assert load_hole(Image.fromarray(values > 100).convert("1"), (10, 12)).sum() == int((values > 100).sum())


@pytest.mark.parametrize("threshold", [-1, 255, 300])
def test_threshold_out_of_range(threshold):
    with pytest.raises(ValueError, match="threshold"):
        load_hole(np.zeros((2, 2), np.uint8), (2, 2), threshold=threshold)


def test_mask_size_mismatch(tmp_path):
    with pytest.raises(InpaintInputError) as excinfo:
        load_hole(np.zeros((12, 11), np.uint8), (10, 12))
    message = _error(excinfo)
    assert "11x12" in message and "10x12" in message and "must have the image's size" in message


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a PNG")
    with pytest.raises(InpaintInputError) as excinfo:
        load_image(bad)
    assert "cannot read image 'bad.png'" in _error(excinfo)
    with pytest.raises(InpaintInputError) as excinfo:
        load_image(tmp_path / "missing.png")
    assert "does not exist" in _error(excinfo)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InpaintInputError) as excinfo:
        load_image(path)
    assert "truncated or corrupt" in _error(excinfo)


def test_16_bit_images(tmp_path):
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(RNG.integers(0, 65535, (4, 5)).astype(np.uint16)).save(gray16)
    for source in (gray16, _png16_rgb(tmp_path / "rgb16.png")):
        with pytest.raises(InpaintInputError) as excinfo:
            load_image(source)
        assert "16-bit" in _error(excinfo) and "convert it to 8-bit" in _error(excinfo)
    with pytest.raises(InpaintInputError, match="16/32-bit"):
        load_image(np.zeros((4, 4, 3), np.uint16))


def test_zero_size_images():
    with pytest.raises(InpaintInputError, match="empty"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(InpaintInputError, match="empty"):
        load_image(Image.new("RGB", (0, 0)))


def test_too_many_pixels(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    with pytest.raises(InpaintInputError) as excinfo:
        load_image(path, max_pixels=500)  # 600 pixels: over the limit, under PIL's 2x bomb limit
    assert "30x20" in _error(excinfo) and "--max-pixels" in _error(excinfo)
    with pytest.raises(InpaintInputError) as excinfo:
        load_image(path, max_pixels=100)  # over twice the limit: PIL refuses before decoding
    assert "--max-pixels" in _error(excinfo)
    with pytest.raises(InpaintInputError, match="--max-pixels"):
        load_image(np.zeros((20, 30, 3), np.uint8), max_pixels=500)
    assert Image.MAX_IMAGE_PIXELS not in (100, 500)  # the global guard is restored


@pytest.mark.parametrize("array, match", [
    (np.zeros((4, 4, 3), np.float32), "float32 array"),
    (np.zeros((4, 4, 5), np.uint8), "shape"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
])
def test_bad_arrays(array, match):
    with pytest.raises(InpaintInputError, match=match):
        load_image(array)


def test_unsupported_source_type():
    with pytest.raises(InpaintInputError, match="file path, bytes, a PIL image or a numpy array"):
        load_image(12345)


def _feathered_mask(size: int = 64) -> np.ndarray:
    """A round brush stroke with a soft 12 px edge, as IOPaint's and most editors' brushes paint it."""
    yy, xx = np.mgrid[0:size, 0:size]
    distance = np.hypot(yy - size / 2, xx - size / 2)
    return (np.clip((24 - distance) / 12, 0, 1) * 255).astype(np.uint8)


def test_soft_mask_warns_at_threshold_0_only():
    from lama_deploy.runtime.images import load_mask

    soft = _feathered_mask()
    between = int(((soft > 0) & (soft < 255)).sum())
    loaded = load_mask(soft, (64, 64))
    warnings = [n for n in loaded.notes if n.startswith("warning:")]
    assert len(warnings) == 1 and f"{between} pixels strictly between 0 and 255" in warnings[0]
    assert "threshold iopaint" in warnings[0]
    assert loaded.hole.sum() == (soft > 0).sum()
    iopaint = load_mask(soft, (64, 64), "iopaint")
    assert iopaint.notes == [] and iopaint.hole.sum() == (soft > 127).sum() < loaded.hole.sum()
    assert load_mask(soft, (64, 64), 10).notes == []
    assert load_mask((soft > 0).astype(np.uint8) * 255, (64, 64)).notes == []  # a hard mask: no warning


def test_threshold_presets_and_bad_values():
    from lama_deploy.runtime.images import resolve_threshold

    assert (resolve_threshold("iopaint"), resolve_threshold("LaMa"), resolve_threshold("12.5"), resolve_threshold(3)) \
        == (127, 0, 12.5, 3)
    for bad in ("soft", "255", -1, "nan"):
        with pytest.raises(ValueError):
            resolve_threshold(bad)
