"""The output keeps what the input carried: ICC profile, EXIF (orientation normalised), DPI — from `inpaint`,
`serve` and Triton's python model alike, with pixels outside the hole unchanged (PNG output; random weights).

Two distinct ICC profiles: Pillow's built-in sRGB, and a second profile standing in for Display P3 (the sRGB
profile with another device manufacturer and model in its header: a different profile to the byte, which is what the
output must keep; the colour maths is the viewer's)."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from lama_deploy import contract as C
from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.triton import image_repos, steps
from lama_deploy.scripts.commands import inpaint as inpaint_command

sys.path.insert(0, str(Path(__file__).parent))
from triton_python_stub import answer, install_pb_utils, load_model, remove_pb_utils  # noqa: E402

ORIENTATION, MAKE, MODEL, DATETIME = 0x0112, 0x010F, 0x0110, 0x0132


def _srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _p3_stand_in() -> bytes:
    data = bytearray(_srgb())
    data[48:56] = b"APPLDP3 "  # header: device manufacturer and model (ICC.1 7.2.12-13): another profile
    assert bytes(data) != _srgb()
    return bytes(data)


PROFILES = {"srgb": _srgb, "display-p3": _p3_stand_in}


def _photo_jpeg(icc: bytes) -> tuple[bytes, np.ndarray]:
    """A camera-like JPEG: ICC profile, EXIF make/model/date and orientation 6 (stored turned), 300 dpi."""
    rng = np.random.default_rng(7)
    upright = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    stored = np.rot90(upright, 1)  # orientation 6 = the viewer turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[DATETIME], exif[ORIENTATION] = "Camera Maker", "Model 7", "2026:12:03 08:00:00", 6
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buffer, "JPEG", quality=95, icc_profile=icc, exif=exif.tobytes(),
                                                       dpi=(300, 300))
    data = buffer.getvalue()
    decoded_upright = np.asarray(Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270))
    return data, decoded_upright


def _mask_png() -> tuple[bytes, np.ndarray]:
    mask = np.zeros((96, 128), np.uint8)
    mask[30:60, 40:90] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, "PNG")
    return buffer.getvalue(), mask > 0


def _check(png: bytes, icc: bytes, upright: np.ndarray, hole: np.ndarray) -> None:
    out = Image.open(io.BytesIO(png))
    assert out.format == "PNG" and out.size == (128, 96) and out.mode == "RGB"
    assert out.info.get("icc_profile") == icc
    tags = out.getexif()
    assert (tags.get(MAKE), tags.get(MODEL), tags.get(DATETIME)) == ("Camera Maker", "Model 7", "2026:12:03 08:00:00")
    assert tags.get(ORIENTATION) is None  # applied to the pixels, so no longer in the file
    assert tuple(round(v) for v in out.info.get("dpi", (0, 0))) == (300, 300)
    pixels = np.asarray(out)
    assert np.array_equal(pixels[~hole], upright[~hole])  # outside the hole: the input's own pixels
    assert np.abs(pixels[hole].astype(int) - upright[hole]).mean() > 5  # the model did write the hole


@pytest.fixture(scope="module")
def inputs() -> dict:
    mask, hole = _mask_png()
    return {name: (*_photo_jpeg(make()), make(), mask, hole) for name, make in PROFILES.items()}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_inpaint_keeps_icc_exif_dpi(profile, inputs, tiny_onnx, tmp_path):
    photo, upright, icc, mask, hole = inputs[profile]
    (tmp_path / "photo.jpg").write_bytes(photo)
    (tmp_path / "mask.png").write_bytes(mask)
    out = tmp_path / "out.png"
    assert inpaint_command.main([str(tmp_path / "photo.jpg"), str(tmp_path / "mask.png"), "-o", str(out),
                                 "--model", str(tiny_onnx)]) == 0
    _check(out.read_bytes(), icc, upright, hole)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_serve_keeps_icc_exif_dpi(profile, inputs, tiny_onnx):
    httpx = pytest.importorskip("httpx", reason="the test talks to the server with httpx")
    pytest.importorskip("fastapi", reason="the server needs fastapi (pip install 'lama-deploy[server]')")
    from lama_deploy.runtime.server import create_app

    photo, upright, icc, mask, hole = inputs[profile]
    app = create_app(Inpainter.from_path(tiny_onnx))

    async def post() -> object:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            return await client.post("/inpaint", files={"image": ("p.jpg", photo), "mask": ("m.png", mask)})

    response = asyncio.run(post())
    assert response.status_code == 200, response.text
    _check(response.content, icc, upright, hole)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_triton_python_model_keeps_icc_exif_dpi(profile, inputs, tiny_onnx, tmp_path):
    photo, upright, icc, mask, hole = inputs[profile]
    install_pb_utils()
    try:
        image_repos.write_python_repo(tiny_onnx, tmp_path / "repo")
        model = load_model(tmp_path / "repo" / "lama")
        files = {"image_file": np.array([photo], dtype=object), "mask_file": np.array([mask], dtype=object)}
        replied = answer(model, files)
        model.finalize()
    finally:
        remove_pb_utils()
    _check(bytes(replied[steps.FILE_OUTPUT][0]), icc, upright, hole)
    assert np.array_equal(replied[C.OUTPUT], np.asarray(Image.open(io.BytesIO(replied[steps.FILE_OUTPUT][0]))))
