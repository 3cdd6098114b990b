"""Pre/post-processing is the official predictor's: symmetric bottom/right padding, /255, truncation."""

from __future__ import annotations

import numpy as np
import pytest

from lama_deploy import contract as C
from lama_deploy.runtime.preprocess import (hole_to_mask, image_to_chw, make_feed, output_to_images, pad_bottom_right,
                                padded_size, to_uint8)


def test_padding_is_numpy_symmetric_at_bottom_right():
    array = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    padded = pad_bottom_right(array, 8, 16)
    assert padded.shape == (2, 8, 16)
    np.testing.assert_array_equal(padded, np.pad(array, ((0, 0), (0, 3), (0, 9)), mode="symmetric"))
    np.testing.assert_array_equal(padded[:, :5, :7], array)  # top/left untouched: crop-back is a plain slice
    np.testing.assert_array_equal(padded[:, 5, :7], array[:, 4])  # symmetric repeats the edge row
    np.testing.assert_array_equal(padded[:, 6, :7], array[:, 3])


def test_padding_longer_than_the_image_keeps_mirroring():
    row = np.arange(3, dtype=np.float32)[None]
    assert pad_bottom_right(row, 1, 16).ravel().tolist() == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2]


def test_padding_is_a_no_op_on_valid_sizes_and_refuses_to_shrink():
    array = np.zeros((3, 16, 24), np.float32)
    assert pad_bottom_right(array, 16, 24) is array
    with pytest.raises(ValueError):
        pad_bottom_right(array, 8, 24)


@pytest.mark.parametrize("size, expected", [((1, 1), (8, 8)), ((8, 9), (8, 16)), ((61, 83), (64, 88))])
def test_padded_size_is_the_next_multiple_of_8(size, expected):
    assert padded_size(*size) == expected


def test_image_to_chw_scales_to_unit_range_in_float32():
    rgb = np.array([[[0, 128, 255]]], dtype=np.uint8)
    chw = image_to_chw(rgb)
    assert chw.dtype == np.float32 and chw.shape == (3, 1, 1)
    np.testing.assert_array_equal(chw.ravel(), np.array([0, 128, 255], np.float32) / 255)


def test_make_feed_stacks_padded_nchw_batches():
    rng = np.random.default_rng(0)
    rgbs = [rng.integers(0, 256, (13, 21, 3), dtype=np.uint8) for _ in range(2)]
    holes = [rng.random((13, 21)) > 0.5 for _ in range(2)]
    feed = make_feed(rgbs, holes, 16, 24)
    assert feed[C.IMAGE].shape == (2, 3, 16, 24) and feed[C.MASK].shape == (2, 1, 16, 24)
    assert feed[C.IMAGE].dtype == np.float32 and feed[C.MASK].dtype == np.float32
    assert set(np.unique(feed[C.MASK]).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(feed[C.MASK][1, 0], np.pad(holes[1].astype(np.float32), ((0, 3), (0, 3)), "symmetric"))
    np.testing.assert_array_equal(feed[C.IMAGE][0, :, :13, :21], image_to_chw(rgbs[0]))


def test_to_uint8_truncates_like_the_predictor():
    values = np.array([-0.5, 0.0, 0.999 / 255, 1.999 / 255, 0.5, 1.0, 1.7], np.float32)
    assert to_uint8(values).tolist() == [0, 0, 0, 1, 127, 255, 255]  # 127.5 -> 127: truncation, not rounding


def test_output_is_cropped_back_per_item():
    output = np.random.default_rng(1).random((2, 3, 16, 24)).astype(np.float32)
    images = output_to_images(output, [(13, 21), (16, 17)])
    assert [im.shape for im in images] == [(13, 21, 3), (16, 17, 3)]
    np.testing.assert_array_equal(images[1], to_uint8(output[1, :, :16, :17].transpose(1, 2, 0)))


def test_fp16_round_trip_loses_levels():
    """An fp16 model's pass-through pixels truncate below x for some x: why the runtime re-composites in uint8
    (`images.to_output_image`, tested in test_images)."""
    levels = np.arange(256, dtype=np.uint8)
    assert (to_uint8(levels.astype(np.float32) / 255) == levels).all()  # the fp32 path alone is exact...
    round_trip = to_uint8((levels.astype(np.float32) / 255).astype(np.float16).astype(np.float32))
    assert (round_trip != levels).sum() > 10  # ...an fp16 engine's is not


def test_hole_to_mask_is_binary_float():
    mask = hole_to_mask(np.array([[True, False]]))
    assert mask.shape == (1, 1, 2) and mask.dtype == np.float32 and mask.ravel().tolist() == [1.0, 0.0]
