"""The crop strategy end to end (tiny model) and the choice between crop, window, resize and whole."""

from __future__ import annotations

import numpy as np
import pytest

from lama_deploy import contract as C
from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.backends.base import Profile
from lama_deploy.runtime.backends.pytorch.backend import TorchBackend
from lama_deploy.runtime.strategy import Box, StrategyOptions, batch_limit, plan_image
from lama_model.synthetic import synthetic_image

HEIGHT, WIDTH = 200, 960  # long side above IOPaint's 800 trigger
RGB = (synthetic_image(HEIGHT, WIDTH, np.random.default_rng(5)) * 255).astype(np.uint8)


def _mask(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    for top, left, bottom, right in boxes:
        mask[top:bottom, left:right] = 255
    return mask


def _inpainter(tiny_model, **kwargs) -> Inpainter:
    return Inpainter(TorchBackend(tiny_model, device="cpu", weights="tiny_model fixture"), **kwargs)


@pytest.fixture(scope="module")
def whole(tiny_model):
    with _inpainter(tiny_model, strategy="whole") as inpainter:
        yield inpainter


def test_crops_covering_the_image_are_byte_identical_to_whole_image_inference(tiny_model, whole):
    mask = _mask((50, 100, 70, 120), (120, 800, 140, 830))  # margin 400: the two crops overlap, merge, cover all
    with _inpainter(tiny_model, strategy="crop", context_margin=400) as crop:
        got = crop.inpaint(RGB, mask)
    want = whole.inpaint(RGB, mask)
    assert (got.strategy, want.strategy) == ("crop", "direct")
    assert any("1 region" in note for note in got.notes)
    np.testing.assert_array_equal(got.array, want.array)
    assert np.abs(got.array.astype(int) - RGB)[mask > 0].mean() > 1  # something was inpainted


def test_crops_run_as_one_batch_and_paste_only_inside_the_holes(tiny_model, whole, monkeypatch):
    mask = _mask((40, 100, 56, 116), (120, 700, 136, 716))  # same size, far apart: two 80x80 crops
    with _inpainter(tiny_model, context_margin=32) as crop:  # auto = crop
        calls = []
        infer = crop.backend.infer
        monkeypatch.setattr(crop.backend, "infer", lambda feed: calls.append(feed[C.IMAGE].shape) or infer(feed))
        result = crop.inpaint(RGB, mask)
    assert result.strategy == "crop" and calls == [(2, 3, 80, 80)]
    out, hole = result.array, mask > 0
    np.testing.assert_array_equal(out[~hole], RGB[~hole])  # outside the holes: the input, byte for byte
    for top, left in ((8, 68), (88, 668)):  # each crop: the hole box grown by 32 px
        window = (slice(top, top + 80), slice(left, left + 80))
        alone = whole.inpaint(RGB[window], mask[window]).array.astype(int)
        # run alone (N=1) vs in the batch (N=2): float sums may round differently, so a rare pixel can be
        # truncated one level apart; anything more would be a pasting or geometry error
        difference = np.abs(out[window].astype(int) - alone)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.001, (difference.max(), (difference > 0).sum())


def test_small_images_run_whole_and_strategy_names(tiny_model):
    small = RGB[:, :800]  # long side 800: not above the trigger
    with _inpainter(tiny_model) as auto:
        assert auto.inpaint(small, _mask((50, 100, 70, 120))[:, :800]).strategy == "direct"
        assert auto.info()["options"]["strategy"] == "auto" and auto.info()["options"]["crop_trigger"] == "800"
    with pytest.raises(ValueError, match="unknown strategy"):
        _inpainter(tiny_model, strategy="tiles")


# -- planning only -----------------------------------------------------------------------------------------
def _hole(height: int, width: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    hole = np.zeros((height, width), bool)
    for top, left, bottom, right in boxes:
        hole[top:bottom, left:right] = True
    return hole


def test_plans_for_each_strategy_on_a_photo_sized_mask():
    hole = _hole(3000, 4000, (1000, 500, 1100, 620), (2000, 3000, 2050, 3100))
    profile = Profile().usable()
    crop = plan_image(hole, profile)
    # IOPaint's crop boxes are what is pasted back; both are fed at one tensor size (the smaller crop takes
    # more of the surrounding image as context) so they share one model call
    assert crop.strategy == "crop" and [r.pasted for r in crop.runs] == [Box(872, 372, 1228, 748), Box(1872, 2872, 2178, 3228)]
    assert [r.tensor_size for r in crop.runs] == [(360, 376), (360, 376)]
    assert crop.runs[0].region == Box(870, 372, 1230, 748) and crop.runs[1].region == Box(1845, 2862, 2205, 3238)
    window = plan_image(hole, profile, StrategyOptions("window"))
    assert window.strategy == "window" and window.region == Box(872, 372, 2178, 3228)
    resize = plan_image(hole, profile, StrategyOptions("resize"))  # IOPaint: long side to 1280
    assert resize.strategy == "resize" and resize.model_size == (960, 1280) and resize.region == Box(0, 0, 3000, 4000)
    assert plan_image(hole, profile, StrategyOptions("original")).strategy == "direct"


def test_a_narrowed_size_range_narrows_every_strategy():
    """The one limit mechanism (`--max-side`, and the memory budget through it): the profile's range."""
    hole = _hole(3000, 4000, (1000, 500, 1100, 620), (2000, 3000, 2050, 3100))
    small = Profile().narrowed(max_side=512).usable()
    plan = plan_image(hole, small, StrategyOptions("whole"))  # the whole image is over the range: crops
    assert plan.strategy == "crop" and [r.kind for r in plan.runs] == ["direct", "direct"]
    one_hole = plan_image(hole[:1500], small, StrategyOptions("whole"))  # a single region: a window within it
    assert one_hole.strategy == "window" and one_hole.tensor_size == (360, 376)  # hole + 2 x 128, size rule
    tighter = Profile().narrowed(max_side=360).usable()
    crop = plan_image(hole, tighter, StrategyOptions())
    assert [r.kind for r in crop.runs] == ["window", "direct"]  # the 360x376 crop is cut down, 312x360 fits
    assert all(max(r.tensor_size) <= 360 for r in crop.runs)
    assert batch_limit(Profile.ranges(max_batch=8)) == 8
    assert batch_limit(Profile()) is None
