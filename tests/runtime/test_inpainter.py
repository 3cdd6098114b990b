"""The Inpainter end to end on the tiny model: fidelity to the official predictor, strategies, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_deploy import contract as C
from lama_deploy.runtime import Inpainter, InpaintResult
from lama_deploy.runtime.backends.pytorch.backend import TorchBackend

RNG = np.random.default_rng(0)


def _image(h: int, w: int, channels: int = 3) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, channels)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = 255
    return mask


def official_predictor(model: torch.nn.Module, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """advimman/lama `bin/predict.py`, restated: /255, pad_img_to_modulo(8, symmetric), model, crop, clip*255 -> uint8."""
    h, w = mask.shape
    ph, pw = -(-h // 8) * 8, -(-w // 8) * 8
    image = np.pad(rgb.transpose(2, 0, 1).astype("float32") / 255, ((0, 0), (0, ph - h), (0, pw - w)), mode="symmetric")
    hole = np.pad((mask > 0).astype("float32")[None], ((0, 0), (0, ph - h), (0, pw - w)), mode="symmetric")
    with torch.no_grad():
        out = model(torch.from_numpy(image)[None], torch.from_numpy(hole)[None])[0]
    return np.clip(out.permute(1, 2, 0).numpy()[:h, :w] * 255, 0, 255).astype("uint8")


@pytest.fixture(scope="module")
def ort_inpainter(tiny_onnx):
    with Inpainter.from_path(tiny_onnx) as inpainter:
        yield inpainter


@pytest.fixture(scope="module")
def torch_inpainter(tiny_model):
    with Inpainter(TorchBackend(tiny_model, device="cpu", weights="tiny_model fixture")) as inpainter:
        yield inpainter


def test_ort_backend_matches_the_torch_reference_in_float(ort_inpainter, tiny_model):
    image = RNG.random((2, 3, 40, 56), dtype=np.float32)
    mask = (RNG.random((2, 1, 40, 56)) > 0.7).astype(np.float32)
    got = ort_inpainter.backend.infer({C.IMAGE: image, C.MASK: mask})[C.OUTPUT]
    with torch.no_grad():
        want = tiny_model(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
    assert got.shape == (2, 3, 40, 56) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("size", [(61, 83), (64, 64), (17, 130)])
def test_inpaint_matches_the_official_predictor(ort_inpainter, torch_inpainter, tiny_model, size):
    h, w = size
    rgb, mask = _image(h, w), _mask(h, w, (h // 4, w // 5, h // 2 + 3, w // 2 + 5))
    reference = official_predictor(tiny_model, rgb, mask)
    hole = mask > 0
    for inpainter in (ort_inpainter, torch_inpainter):
        result = inpainter.inpaint(rgb, mask)
        out = np.asarray(result.image)
        assert isinstance(result, InpaintResult) and result.strategy == "direct" and result.image.size == (w, h)
        assert np.abs(out[hole].astype(int) - reference[hole].astype(int)).max() <= 1
        np.testing.assert_array_equal(out[~hole], rgb[~hole])  # bit-identical outside the mask
        assert (out[hole] != rgb[hole]).mean() > 0.9  # the hole was really inpainted
    exact = np.asarray(torch_inpainter.inpaint(rgb, mask).image)
    np.testing.assert_array_equal(exact[hole], reference[hole])  # same framework: identical to the predictor


def test_rgba_and_grayscale_round_trip_modes(ort_inpainter):
    rgba = np.dstack([_image(40, 48), _image(40, 48, 1)])
    mask = _mask(40, 48, (5, 5, 20, 30))
    hole = mask > 0
    out = np.asarray(ort_inpainter.inpaint(rgba, mask).image)
    assert out.shape == (40, 48, 4)
    np.testing.assert_array_equal(out[:, :, 3], rgba[:, :, 3])  # alpha kept as given, inside the hole too
    np.testing.assert_array_equal(out[~hole], rgba[~hole])
    gray = _image(40, 48, 1)
    result = ort_inpainter.inpaint(gray, mask)
    assert result.image.mode == "L"
    out = np.asarray(result.image)
    np.testing.assert_array_equal(out[~hole], gray[~hole])
    assert (out[hole] != gray[hole]).mean() > 0.9


def test_threshold_selects_the_hole(ort_inpainter):
    rgb = _image(32, 32)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 100
    mask[20:28, 20:28] = 200
    out = np.asarray(ort_inpainter.inpaint(rgb, mask, threshold=150).image)
    np.testing.assert_array_equal(out[4:12, 4:12], rgb[4:12, 4:12])  # 100 <= 150: kept
    assert (out[20:28, 20:28] != rgb[20:28, 20:28]).mean() > 0.9


def test_empty_mask_returns_the_input_without_running_the_model(ort_inpainter, monkeypatch):
    rgb = _image(30, 20)
    monkeypatch.setattr(ort_inpainter.backend, "infer", lambda feed: pytest.fail("the model must not run"))
    result = ort_inpainter.inpaint(rgb, np.zeros((30, 20), np.uint8))
    assert result.strategy == "empty-mask"
    np.testing.assert_array_equal(np.asarray(result.image), rgb)


def test_tiny_images_are_padded_to_the_minimum(ort_inpainter, tiny_model):
    rgb, mask = _image(5, 7), _mask(5, 7, (1, 1, 4, 5))
    result = ort_inpainter.inpaint(rgb, mask)
    assert result.strategy == "pad" and result.image.size == (7, 5)
    image = np.pad(rgb.transpose(2, 0, 1).astype("float32") / 255, ((0, 0), (0, 11), (0, 9)), mode="symmetric")
    hole = np.pad((mask > 0).astype("float32")[None], ((0, 0), (0, 11), (0, 9)), mode="symmetric")
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(image)[None], torch.from_numpy(hole)[None])[0].permute(1, 2, 0).numpy()
    ref = np.clip(ref[:5, :7] * 255, 0, 255).astype("uint8")
    assert np.abs(np.asarray(result.image).astype(int) - ref.astype(int))[mask > 0].max() <= 1


def test_profile_minimum_pads(tiny_onnx):
    with Inpainter.from_path(tiny_onnx, profile={"min": (48, 48)}) as inpainter:
        result = inpainter.inpaint(_image(24, 40), _mask(24, 40, (2, 2, 10, 10)))
    assert result.strategy == "pad" and result.image.size == (40, 24)
    assert inpainter.info()["profile"]["min"] == {"N": 1, "H": 48, "W": 48}


def test_large_image_window_equals_inpainting_the_window(tiny_onnx, ort_inpainter):
    rgb, mask = _image(96, 120), _mask(96, 120, (60, 90, 70, 100))
    with Inpainter.from_path(tiny_onnx, max_side=48, context_margin=8) as small:
        result = small.inpaint(rgb, mask)
    assert result.strategy == "window" and result.image.size == (120, 96)
    out, hole = np.asarray(result.image), mask > 0
    np.testing.assert_array_equal(out[~hole], rgb[~hole])
    # the window: hole 10 px + 2*8 margin -> 32 px, centred on the hole
    window = (slice(49, 81), slice(79, 111))
    crop_result = np.asarray(ort_inpainter.inpaint(rgb[window], mask[window]).image)
    np.testing.assert_array_equal(out[window], crop_result)


def test_mask_too_large_for_the_profile_is_resized(tiny_onnx):
    rgb, mask = _image(80, 100), _mask(80, 100, (10, 5, 70, 95))
    with Inpainter.from_path(tiny_onnx, max_side=32) as small:
        result = small.inpaint(rgb, mask)
    assert result.strategy == "resize" and result.image.size == (100, 80) and result.notes
    out, hole = np.asarray(result.image), mask > 0
    np.testing.assert_array_equal(out[~hole], rgb[~hole])
    assert (out[hole] != rgb[hole]).mean() > 0.9


def test_batch_groups_same_sizes_into_one_call(ort_inpainter, monkeypatch):
    calls = []
    infer = ort_inpainter.backend.infer
    monkeypatch.setattr(ort_inpainter.backend, "infer", lambda feed: calls.append(feed[C.IMAGE].shape) or infer(feed))
    images = [_image(40, 40), _image(40, 40), _image(24, 56), _image(36, 40)]
    masks = [_mask(*im.shape[:2], (3, 3, 15, 15)) for im in images]
    results = ort_inpainter.inpaint_batch(images, masks)
    assert sorted(calls) == sorted([(3, 3, 40, 40), (1, 3, 24, 56)])  # 36x40 pads to 40x40: same call
    singles = [np.asarray(ort_inpainter.inpaint(im, m).image) for im, m in zip(images, masks)]
    for result, single in zip(results, singles):
        assert np.abs(np.asarray(result.image).astype(int) - single.astype(int)).max() <= 1


def test_batches_are_split_at_the_profile_maximum(tiny_onnx, monkeypatch):
    with Inpainter.from_path(tiny_onnx, profile={"max_batch": 2}) as inpainter:
        calls = []
        infer = inpainter.backend.infer
        monkeypatch.setattr(inpainter.backend, "infer", lambda feed: calls.append(feed[C.IMAGE].shape[0]) or infer(feed))
        inpainter.inpaint_batch([_image(16, 16)] * 5, [_mask(16, 16, (2, 2, 8, 8))] * 5)
    assert calls == [2, 2, 1]


def test_info_reports_backend_profile_and_weights(ort_inpainter, tiny_onnx):
    info = ort_inpainter.info()
    assert info["backend"] == "onnxruntime" and info["model"] == str(tiny_onnx)
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["profile"]["max"] == {"N": None, "H": None, "W": None}
    assert info["size_multiple"] == C.SIZE_MULTIPLE and info["weights"].startswith("random weights (seed 0")
    assert info["random_weights"] is True  # exported from a random_model object: still labelled


def test_random_weights_are_labelled():
    with Inpainter.from_random_weights("tiny", seed=0, device="cpu") as inpainter:
        result = inpainter.inpaint(_image(16, 16), _mask(16, 16, (2, 2, 9, 9)))
        assert inpainter.random_weights and "random weights" in inpainter.info()["weights"]
    assert result.backend == "torch" and any("random weights" in note for note in result.notes)


def test_mismatched_lists_are_refused(ort_inpainter):
    with pytest.raises(ValueError, match="one mask per image"):
        ort_inpainter.inpaint_batch([_image(16, 16)], [])
