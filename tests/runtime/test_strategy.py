"""Strategy planning: direct, pad, crop and resize choices and their geometry."""

from __future__ import annotations

import numpy as np
import pytest

from lama_deploy.runtime.backends.base import Profile, profile_from_override
from lama_deploy.runtime.strategy import Box, StrategyOptions, axis_window, downscaled, hole_bbox, plan_image


def _hole(h: int, w: int, box: tuple[int, int, int, int] | None) -> np.ndarray:
    hole = np.zeros((h, w), bool)
    if box:
        top, left, bottom, right = box
        hole[top:bottom, left:right] = True
    return hole


def test_hole_bbox():
    assert hole_bbox(_hole(10, 12, None)) is None
    assert hole_bbox(_hole(10, 12, (2, 3, 5, 9))) == Box(2, 3, 5, 9)


def test_empty_mask_plans_no_model_run():
    assert plan_image(_hole(40, 40, None), Profile().usable()).strategy == "empty-mask"


def test_direct_pads_only_to_the_size_multiple():
    plan = plan_image(_hole(61, 83, (1, 1, 5, 5)), Profile().usable())
    assert (plan.strategy, plan.tensor_size, plan.region) == ("direct", (64, 88), Box(0, 0, 61, 83))


def test_small_images_are_padded_up_to_the_minimum():
    plan = plan_image(_hole(5, 30, (0, 0, 2, 2)), Profile().usable())
    assert (plan.strategy, plan.tensor_size) == ("pad", (16, 32))
    plan = plan_image(_hole(20, 20, (0, 0, 2, 2)), Profile.ranges(min_height=64, min_width=40).usable())
    assert (plan.strategy, plan.tensor_size) == ("pad", (64, 40))


def test_images_above_the_profile_get_a_size_rule_window_around_the_mask():
    plan = plan_image(_hole(300, 200, (140, 50, 160, 70)), Profile.ranges(max_height=128, max_width=128).usable(), margin=20)
    assert plan.strategy == "window"
    region = plan.region
    # hole 20 px + 2 * margin (20 rounded up to 24) = 68 -> next multiple of 8 = 72, centred on the hole
    assert region == Box(114, 24, 186, 96)
    assert plan.tensor_size == plan.model_size == (72, 72)


def test_window_is_capped_by_the_maximum_and_keeps_axes_that_fit():
    plan = plan_image(_hole(100, 1000, (10, 500, 90, 520)), Profile.ranges(max_height=256, max_width=256).usable(),
                      StrategyOptions("whole"), margin=128)
    assert plan.strategy == "window"
    assert (plan.region.top, plan.region.bottom) == (0, 100)  # the height fits: whole axis
    assert plan.region.width == 256 and plan.region.left <= 500 and plan.region.right >= 520
    assert plan.tensor_size == (104, 256)


def test_mask_wider_than_the_maximum_is_resized():
    plan = plan_image(_hole(200, 400, (50, 10, 150, 390)), Profile.ranges(max_height=64, max_width=64).usable(), margin=8)
    assert plan.strategy == "resize"
    assert plan.region == Box(42, 2, 158, 398)
    assert plan.model_size == (116 * 64 // 396, 64)  # scaled by 64/396 with the aspect ratio kept
    assert plan.tensor_size == (24, 64)


def test_axis_window_geometry():
    assert axis_window(10, 20, 100, None, 16, 8) == (0, 100)
    assert axis_window(10, 20, 100, 104, 16, 8) == (0, 100)  # round_up(100) = 104 fits
    assert axis_window(0, 10, 100, 32, 16, 8) == (0, 32)  # clamped at the start
    assert axis_window(95, 100, 100, 32, 16, 8) == (68, 100)  # clamped at the end
    assert axis_window(0, 40, 100, 32, 16, 8) is None  # the hole alone is longer than the limit


def test_downscaled_keeps_the_aspect_ratio():
    assert downscaled(1000, 500, Profile.ranges(max_height=100, max_width=100)) == (100, 50)
    assert downscaled(10, 5000, Profile.ranges(max_width=64)) == (1, 64)


def test_profile_usable_rounds_bounds_inward():
    usable = Profile.ranges(min_height=10, min_width=17, max_height=100, max_width=63).usable()
    assert (usable.min_height, usable.min_width, usable.max_height, usable.max_width) == (16, 24, 96, 56)
    assert Profile.ranges(max_height=8).is_empty() and not Profile.ranges(max_height=16).is_empty()


def test_profile_override_only_narrows():
    base = Profile.ranges(min_height=16, min_width=16, max_height=512, max_width=512, max_batch=4)
    narrowed = profile_from_override(base, {"min": (32, 48), "max": (1024, 256), "max_batch": 8})
    assert (narrowed.min_height, narrowed.min_width, narrowed.max_height, narrowed.max_width) == (32, 48, 512, 256)
    assert narrowed.max_batch == 4
    assert base.narrowed(max_side=128).max_height == 128
    with pytest.raises(ValueError):
        profile_from_override(base, [1, 2])
