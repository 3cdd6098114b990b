"""Connected hole regions (8-connected) and IOPaint's crop boxes around them."""

from __future__ import annotations

import numpy as np
import pytest

from lama_deploy.runtime.regions import MAX_REGIONS, component_boxes, crop_regions, iopaint_crop_box


def _flood_fill_boxes(hole: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Reference: plain 8-neighbour flood fill, one pixel at a time."""
    height, width = hole.shape
    seen = np.zeros_like(hole)
    boxes = []
    for y, x in zip(*np.nonzero(hole)):
        if seen[y, x]:
            continue
        stack, seen[y, x], box = [(y, x)], True, [y, x, y + 1, x + 1]
        while stack:
            cy, cx = stack.pop()
            box = [min(box[0], cy), min(box[1], cx), max(box[2], cy + 1), max(box[3], cx + 1)]
            for ny in range(max(cy - 1, 0), min(cy + 2, height)):
                for nx in range(max(cx - 1, 0), min(cx + 2, width)):
                    if hole[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        boxes.append(tuple(int(v) for v in box))
    return sorted(boxes)


def test_shapes_corners_and_image_borders():
    hole = np.zeros((12, 16), bool)
    hole[0:3, 0:2] = True  # touches the top-left corner of the image
    hole[3, 2] = True  # touches the block above only at a corner: same region (8-connectivity)
    hole[6:11, 5] = True
    hole[10, 5:9] = True  # an L
    hole[7, 15] = hole[11, 15] = True  # single pixels on the right border, not connected
    hole[1, 8:14] = hole[5, 8:14] = hole[2:5, 8] = hole[2:5, 13] = True  # a ring ...
    hole[3, 10] = True  # ... with a pixel inside, not touching it: its own region
    assert component_boxes(hole) == [(0, 0, 4, 3), (1, 8, 6, 14), (3, 10, 4, 11), (6, 5, 11, 9), (7, 15, 8, 16),
                                      (11, 15, 12, 16)]
    assert component_boxes(np.zeros((5, 5), bool)) == []
    assert component_boxes(np.ones((3, 4), bool)) == [(0, 0, 3, 4)]


def test_diagonal_chain_and_snake_are_one_region():
    assert component_boxes(np.eye(50, dtype=bool)[:, ::-1]) == [(0, 0, 50, 50)]
    snake = np.zeros((41, 30), bool)
    snake[::2] = True
    snake[1::4, -1] = snake[3::4, 0] = True
    assert component_boxes(snake) == [(0, 0, 41, 30)]


@pytest.mark.parametrize("seed", range(6))
def test_labelling_matches_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    hole = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.uniform(0.1, 0.6)
    assert component_boxes(hole) == _flood_fill_boxes(hole)


def test_iopaint_crop_box_geometry():
    # (t, l, b, r) hole 100..200 x 300..340 in 1000x800: grown by 50, centred
    assert iopaint_crop_box((100, 300, 200, 340), 50, 1000, 800) == (50, 250, 250, 390)
    # near the left/top edge the box is shifted inward to keep its size, then clipped
    assert iopaint_crop_box((0, 10, 20, 30), 50, 1000, 800) == (0, 0, 120, 120)
    # larger than the image: the whole image
    assert iopaint_crop_box((10, 10, 20, 20), 500, 100, 80) == (0, 0, 100, 80)


def test_overlapping_crops_merge_and_distant_ones_do_not():
    hole = np.zeros((600, 900), bool)
    hole[100:110, 100:110] = hole[100:110, 300:310] = True  # crop boxes (margin 128) overlap: one region
    hole[500:520, 800:820] = True  # far away
    regions = crop_regions(hole, 128)
    assert [holes for _, holes in regions] == [(100, 100, 110, 310), (500, 800, 520, 820)]
    crops = [crop for crop, _ in regions]
    assert crops[0] == iopaint_crop_box((100, 100, 110, 310), 128, 600, 900)
    a, b = crops
    assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert len(crop_regions(hole, 40)) == 3


def test_speckled_masks_fall_back_to_one_box():
    hole = np.zeros((400, 400), bool)
    hole[::8, ::8] = True  # 2500 separate pixels
    assert len(component_boxes(hole)) == 2500 > MAX_REGIONS
    assert crop_regions(hole, 0) == [((0, 0, 393, 393), (0, 0, 393, 393))]
