"""EXIF orientation: tagged photos (orientations 1-8) are turned upright on load, image and mask alike.

The tagged JPEG of each case holds the upright picture stored the other way round. JPEG is lossy, so the
reference is not the original upright array but the same file's stored pixels, decoded without the tag
and turned upright by this file's own table of the EXIF orientations (the TIFF/EXIF definitions, written
with numpy, independent of Pillow). Result with the tag == result on that reference, bit for bit.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.backends.pytorch.backend import TorchBackend
from lama_deploy.runtime.images import InpaintInputError, load_image, upright_size

ORIENTATION = 0x0112
# stored pixels -> as viewers show them (EXIF 2.3, tag 0x0112)
TO_UPRIGHT = {
    1: lambda x: x,
    2: lambda x: x[:, ::-1],  # mirrored left-right
    3: lambda x: x[::-1, ::-1],  # rotated 180
    4: lambda x: x[::-1],  # mirrored top-bottom
    5: lambda x: x.swapaxes(0, 1),  # transposed
    6: lambda x: np.rot90(x, -1),  # shown rotated 90 degrees clockwise
    7: lambda x: x[::-1, ::-1].swapaxes(0, 1),  # transversed
    8: lambda x: np.rot90(x, 1),  # shown rotated 90 degrees counter-clockwise
}
TO_STORED = {**{o: TO_UPRIGHT[o] for o in (1, 2, 3, 4, 5, 7)}, 6: TO_UPRIGHT[8], 8: TO_UPRIGHT[6]}

def _upright_picture(height: int = 40, width: int = 56) -> np.ndarray:
    """Smooth and asymmetric (so JPEG keeps it close and every flip or turn changes it); not square, so 5-8 swap sides."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([40 + 4 * xx, 30 + 5 * yy, 200 - 2 * xx - yy], -1)
    rgb[4:14, 6:20] = (230, 60, 40)
    return rgb.clip(0, 255).astype(np.uint8)


UPRIGHT = _upright_picture()
MASK = np.zeros((40, 56), np.uint8)
MASK[6:18, 30:44] = 255  # drawn on the upright picture, away from its centre and diagonals


def _encoded(array: np.ndarray, fmt: str, orientation: int | None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, fmt, exif=exif.tobytes(), **({"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inpainter(tiny_model):
    with Inpainter(TorchBackend(tiny_model, device="cpu", weights="tiny_model fixture")) as instance:
        yield instance


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tagged_jpeg_gives_the_upright_result(inpainter, orientation):
    jpeg = _encoded(TO_STORED[orientation](UPRIGHT), "JPEG", orientation)
    stored = np.asarray(Image.open(io.BytesIO(jpeg)))  # the file's own pixels, tag not applied
    reference = TO_UPRIGHT[orientation](stored)
    assert reference.shape == UPRIGHT.shape
    assert np.abs(reference.astype(int) - UPRIGHT).mean() < 2  # the table undoes TO_STORED (JPEG noise only)
    if orientation != 1:  # and the picture is one that any wrong turn would change
        assert np.abs(stored.astype(int) - TO_STORED[orientation](UPRIGHT)).mean() < 2
        assert stored.shape != UPRIGHT.shape or np.abs(stored.astype(int) - UPRIGHT).mean() > 20
    got = inpainter.inpaint(jpeg, MASK)
    want = inpainter.inpaint(_encoded(reference, "PNG", None), MASK)
    assert got.image.size == (56, 40) and got.strategy == want.strategy == "direct"
    np.testing.assert_array_equal(got.array, want.array)
    assert got.image.getexif().get(ORIENTATION) is None  # written upright, no stale tag
    assert any("EXIF orientation" in note for note in got.notes) == (orientation != 1)
    # a mask saved with the same tag (stored the other way round too) is turned upright as well
    tagged_mask = _encoded(TO_STORED[orientation](MASK), "PNG", orientation)
    np.testing.assert_array_equal(inpainter.inpaint(jpeg, tagged_mask).array, want.array)


def test_keep_uses_stored_pixels_and_names_the_tag(inpainter, tiny_model):
    jpeg = _encoded(TO_STORED[6](UPRIGHT), "JPEG", 6)
    stored = np.asarray(Image.open(io.BytesIO(jpeg)))
    loaded = load_image(jpeg, exif="keep")
    np.testing.assert_array_equal(loaded.rgb, stored)
    assert any("exif=keep" in note for note in loaded.notes)
    with Inpainter(TorchBackend(tiny_model, device="cpu", weights="tiny"), exif="keep") as keep:
        with pytest.raises(InpaintInputError, match="EXIF orientation") as excinfo:
            keep.inpaint(jpeg, MASK)  # the upright mask has the swapped size
        assert "\n" not in str(excinfo.value)
        stored_mask = TO_STORED[6](MASK)
        got = keep.inpaint(jpeg, stored_mask).array
    np.testing.assert_array_equal(got, inpainter.inpaint(stored, stored_mask).array)


def test_header_size_check_sees_the_upright_size():
    jpeg = _encoded(TO_STORED[8](UPRIGHT), "JPEG", 8)
    assert Image.open(io.BytesIO(jpeg)).size == (40, 56)
    assert upright_size(jpeg, (40, 56), "apply") == (56, 40)
    assert upright_size(jpeg, (40, 56), "keep") == (40, 56)
    assert upright_size(_encoded(UPRIGHT, "PNG", 3), (56, 40), "apply") == (56, 40)


def test_server_applies_the_orientation(inpainter, tiny_model):
    from starlette.testclient import TestClient

    from lama_deploy.runtime.server import create_app

    jpeg = _encoded(TO_STORED[6](UPRIGHT), "JPEG", 6)
    want = inpainter.inpaint(jpeg, MASK).array
    served_by = Inpainter(TorchBackend(tiny_model, device="cpu", weights="tiny"))  # the app closes it on shutdown
    with TestClient(create_app(served_by)) as client:
        response = client.post("/inpaint", files={"image": ("p.jpg", jpeg, "image/jpeg"),
                                                  "mask": ("m.png", _encoded(MASK, "PNG", None), "image/png")})
    assert response.status_code == 200, response.text
    served = Image.open(io.BytesIO(response.content))
    assert served.size == (56, 40) and served.getexif().get(ORIENTATION) is None
    np.testing.assert_array_equal(np.asarray(served), want)
