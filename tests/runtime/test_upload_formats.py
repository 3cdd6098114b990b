"""Uploads are decoded only in the formats the API names (issue 24): the header is checked before any Pillow
plugin runs, so EPS/PS/PDF never reach Ghostscript. Loopback only; the live test uses the tiny ONNX model
(random weights) on ONNX Runtime CPU.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama_deploy import contract as C
from lama_deploy.runtime.folders import list_images
from lama_deploy.runtime.images import (IMAGE_FORMATS, IMAGE_SUFFIXES, InpaintInputError, UnsupportedFormat,
                                        load_image, sniff_format)

httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")
pytest.importorskip("uvicorn", reason="the server needs uvicorn (pip install 'lama-deploy[server]')")

from server_support import _png, _sample, _start_server  # noqa: E402
from test_server import StubInpainter, _post_many  # noqa: E402

from lama_deploy.runtime.server import app as server, limits as server_limits  # noqa: E402

#: PostScript that never ends: Ghostscript would spin on it for good.
_FOREVER = b"%%BoundingBox: 0 0 64 64\n{ } loop\nshowpage\n"


def _pillow_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


HOSTILE = {
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n" + _FOREVER,
    "eps-binary": b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(_FOREVER), 0, 0, 0, 0) + b"\xff\xff"
                  + b"%!PS-Adobe-3.0 EPSF-3.0\n" + _FOREVER,
    "ps": b"%!PS\n" + _FOREVER,
    "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    "gif": _pillow_bytes("GIF"),
    "ico": _pillow_bytes("ICO"),
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _chunk_flood_png(chunks: int) -> bytes:
    """A valid 8x8 PNG with `chunks` empty ancillary chunks before its pixels (12 bytes each)."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(24) for _ in range(8)))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + _png_chunk(b"raNd", b"") * chunks + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b""))


def test_one_declared_list_for_every_reader() -> None:
    assert sorted(IMAGE_FORMATS) == ["BMP", "JPEG", "PNG", "TIFF", "WEBP"]
    assert IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
    for fmt in IMAGE_FORMATS:  # every accepted format is recognised from what Pillow writes
        assert sniff_format(_pillow_bytes(fmt)[:12]) == fmt
    for name, data in HOSTILE.items():
        assert sniff_format(data[:12]) is None, name


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_loader_refuses_other_formats_from_the_header(name: str, tmp_path: Path, monkeypatch) -> None:
    from PIL import ImageFile

    def no_plugin(self, *args, **kwargs):
        raise AssertionError("a Pillow plugin ran")

    monkeypatch.setattr(ImageFile.ImageFile, "__init__", no_plugin)
    path = tmp_path / f"photo.{name}"
    path.write_bytes(HOSTILE[name])
    for source in (path, HOSTILE[name], io.BytesIO(HOSTILE[name])):
        with pytest.raises(UnsupportedFormat) as refused:
            load_image(source)
        message = str(refused.value)
        assert "\n" not in message and "PNG, JPEG, WebP, BMP or TIFF" in message


def test_folder_mode_lists_only_accepted_suffixes(tmp_path: Path) -> None:
    for name in ("a.png", "b.JPG", "c.tiff", "d.gif", "e.eps", "f.pdf", "g.ico", "h.webp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.tiff", "h.webp"]


def test_png_chunk_flood_is_refused_quickly() -> None:
    flood = _chunk_flood_png(1_600_000)  # ~19 MB of empty chunks: 18 s of CPU when Pillow walked them
    start = time.process_time()
    with pytest.raises(server_limits.RequestRejected) as refused:
        server_limits.checked_size(flood, "image", 40_000_000)
    cpu = time.process_time() - start
    assert refused.value.status == 400 and "PNG chunks" in refused.value.message
    assert cpu < 0.5, f"{cpu:.2f} s CPU"
    # a handful of ancillary chunks is an ordinary file
    assert server_limits.checked_size(_chunk_flood_png(200), "image", 40_000_000) == (8, 8)
    assert load_image(_chunk_flood_png(200)).rgb.shape == (8, 8, 3)
    with pytest.raises(InpaintInputError):
        load_image(flood)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_server_answers_415_with_the_list(name: str) -> None:
    stub = StubInpainter()
    app = server.create_app(stub, server_limits.ServerLimits())
    sample = _sample(32, 32, seed=40)

    async def post() -> list:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=10) as client:
            bad = await client.post("/inpaint", files={C.IMAGE: (f"x.{name}", HOSTILE[name], "image/png"),
                                                       C.MASK: ("m.png", _png(sample.mask), "image/png")})
            good = await client.post("/inpaint", files=sample.files)
            return [bad, good]

    bad, good = asyncio.run(post())
    assert bad.status_code == 415
    message = bad.json()["error"]
    assert message == ("cannot read form file 'image': not a PNG, JPEG, WebP, BMP or TIFF file (from its header); "
                       "convert it to one of these formats")
    assert good.status_code == 200 and stub.calls == 1


def _ghostscript_or_skip() -> None:
    if shutil.which("gs"):
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Ghostscript (gs) is not installed on CI; .ci/run installs it (apt-get install -y ghostscript)")
    pytest.skip("Ghostscript (gs) is not installed: the EPS hang cannot be reproduced here (CI installs it)")


def test_live_server_with_ghostscript_answers_415_fast_and_keeps_serving(tiny_onnx: Path, tmp_path: Path) -> None:
    _ghostscript_or_skip()
    running = _start_server(tiny_onnx, tmp_path / "server.log", "--workers-per-model", "1")
    sample = _sample(48, 64, seed=41)
    try:
        for name in ("eps", "eps-binary", "ps", "pdf", "gif", "ico"):
            start = time.monotonic()
            bad = httpx.post(f"{running.url}/inpaint", timeout=10,
                             files={C.IMAGE: ("x", HOSTILE[name], "application/octet-stream"),
                                    C.MASK: ("m.png", _png(sample.mask), "image/png")})
            elapsed = time.monotonic() - start
            assert bad.status_code == 415 and elapsed < 1.0, (name, bad.status_code, elapsed)
            assert "Ghostscript" not in bad.text
            good = httpx.post(f"{running.url}/inpaint", files=sample.files, timeout=30)
            assert good.status_code == 200, (name, good.text)
            assert np.asarray(Image.open(io.BytesIO(good.content))).shape == sample.image.shape
    finally:
        running.stop()
