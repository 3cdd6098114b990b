"""Triton's python model and ensemble answer what `lama-deploy inpaint` writes (random weights, tiny ONNX).

The bundled tritonserver has no ONNX Runtime backend, so the ensemble is driven in process as its
config.pbtxt files wire it: the generated `model.py` classes (pre and post steps, the python model) run under a
stand-in of `triton_python_backend_utils` (the python backend's small public API), and the model step is the
repository's own `model.onnx` on ONNX Runtime, fed the pre step's batch as Triton's ensemble would.
Photos of 300 to 4000 px, one to three holes, PNG and JPEG masks, with ICC profile and camera EXIF.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama_deploy import contract as C
from lama_deploy.runtime.backends import create_backend
from lama_deploy.runtime.images import mask_threshold
from lama_deploy.runtime.options import InpaintOptions
from lama_deploy.runtime.triton import image_repos, steps
from lama_deploy.scripts.commands import inpaint as inpaint_command

sys.path.insert(0, str(Path(__file__).parent))
from triton_python_stub import Request, answer, install_pb_utils, load_model, remove_pb_utils  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def pb_utils():
    yield install_pb_utils()
    remove_pb_utils()


# -- inputs ------------------------------------------------------------------------------------------------
def _photo(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=2)
    noise = rng.integers(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _mask(height: int, width: int, holes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for index in range(holes):  # far apart: one per band across the image
        side = max(8, min(height, width) // 10)
        top = int(rng.integers(0, height - side))
        left = int(index * width / holes + rng.integers(0, max(1, width // holes - side)))
        mask[top:top + side, left:min(width, left + side)] = 255
    return mask


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


CASES = [(300, 400, 1, "PNG"), (960, 1280, 2, "JPEG"), (960, 1280, 3, "PNG"), (3000, 4000, 3, "JPEG"),
         (2000, 300, 1, "JPEG")]


@pytest.fixture(scope="module")
def repositories(tiny_onnx: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-parity")
    image_repos.write_python_repo(tiny_onnx, root / "python", options=InpaintOptions())
    image_repos.write_ensemble_repo(tiny_onnx, root / "ensemble", kind="cpu", max_batch=4, options=InpaintOptions())
    model_step = create_backend(root / "ensemble" / "lama_model" / "1" / "model.onnx")
    model_step.activate()
    yield {"python": load_model(root / "python" / "lama"), "pre": load_model(root / "ensemble" / "lama_pre"),
            "post": load_model(root / "ensemble" / "lama_post"),
            "model": model_step}
    model_step.deactivate()


@pytest.mark.parametrize("height, width, holes, mask_format", CASES)
def test_python_model_and_ensemble_answer_what_inpaint_writes(height, width, holes, mask_format, tiny_onnx,
                                                              repositories, tmp_path):
    photo = _photo(height, width, seed=height + holes)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Camera Maker", "Model 7"  # Make, Model
    photo_file = _encoded(photo, "JPEG", quality=92, exif=exif.tobytes())
    mask_array = _mask(height, width, holes, seed=width + holes)
    mask_file = _encoded(Image.fromarray(mask_array), mask_format, **({"quality": 80} if mask_format == "JPEG" else {}))
    (tmp_path / "photo.jpg").write_bytes(photo_file)
    (tmp_path / f"mask.{mask_format.lower()}").write_bytes(mask_file)
    out = tmp_path / "cli.png"
    assert inpaint_command.main([str(tmp_path / "photo.jpg"), str(tmp_path / f"mask.{mask_format.lower()}"), "-o",
                                 str(out), "--model", str(tiny_onnx)]) == 0
    cli = np.asarray(Image.open(out))

    # the python model, with the encoded files (the format decides the JPEG mask's threshold) ...
    as_files = {"image_file": np.array([photo_file], dtype=object), "mask_file": np.array([mask_file], dtype=object)}
    replied = answer(repositories["python"], as_files)
    assert replied[C.OUTPUT].shape == cli.shape
    assert np.abs(replied[C.OUTPUT].astype(int) - cli).max() <= 1
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(replied[steps.FILE_OUTPUT][0]))), replied[C.OUTPUT])

    # ... and the ensemble, with decoded arrays as a client sends them (a decoded JPEG mask has lost its
    # format, so the client sends the threshold that `mask_threshold` gives the file, as triton_client does)
    decoded_image = np.asarray(Image.open(io.BytesIO(photo_file)).convert("RGB"))
    decoded_mask = np.asarray(Image.open(io.BytesIO(mask_file)).convert("L"))
    raw = {C.IMAGE: decoded_image, C.MASK: decoded_mask}
    parameters = {"threshold": str(mask_threshold("auto", mask_format))}
    feed = answer(repositories["pre"], raw, parameters)
    batch = feed[steps.STEP_TENSORS[C.IMAGE]].shape[0]
    assert batch in range(1, 5)  # the image's crops travel as one batch (of at most --max-batch 4)
    output = repositories["model"].infer({name: feed[steps.STEP_TENSORS[name]] for name in C.INPUT_NAMES})[C.OUTPUT]
    result = answer(repositories["post"], {**raw, steps.STEP_TENSORS[C.OUTPUT]: output}, parameters)[C.OUTPUT]
    assert result.shape == cli.shape and result.dtype == np.uint8
    assert np.abs(result.astype(int) - cli).max() <= 1


def test_the_ensemble_refuses_what_it_cannot_batch_in_one_line(repositories):
    image, mask = np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64), np.uint8)
    response = repositories["pre"].execute([Request({C.IMAGE: image, C.MASK: mask})])[0]
    assert "mask is 64x32 but the image is 64x64" in response.error and "\n" not in response.error
    response = repositories["pre"].execute([Request({C.IMAGE: image, C.MASK: mask[:, :32]},
                                                     {"max_side": "64"})])[0]
    assert "unknown request parameter 'max_side'" in response.error
