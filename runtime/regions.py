"""Connected hole regions and IOPaint-style crop boxes around them (for the `crop` strategy).

Components are 8-connected (pixels touching at a corner belong to one region), as OpenCV's
`findContours` sees a binary mask in IOPaint's `boxes_from_mask`. Labelling is exact and vectorised:
the mask is cut into horizontal runs, runs on neighbouring rows that touch (corners included) are
joined, and the join graph is solved by min-label propagation with pointer jumping, so a 4000x3000
mask takes a fraction of a second without SciPy or OpenCV.

Each region's crop box is IOPaint's `_crop_box`: the hole's box grown by `margin` on every side,
shifted inward at the image edges to keep the context size, then clipped. Crop boxes that overlap are
merged (the union of their holes gets one box) until none overlap, so every hole pixel belongs to
exactly one crop and pasting never lets one crop overwrite another.
"""

from __future__ import annotations

import numpy as np

#: Above this many separate regions (a noisy or speckled mask) one box around all holes is used instead.
MAX_REGIONS = 512


def row_runs(hole: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True: (row, start, end) arrays, end exclusive, ordered by row then start."""
    height, width = hole.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = hole
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends


def _touching_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of runs i on row r - 1 and j on row r that touch, corners included (8-connectivity).

    Runs [s_i, e_i) and [s_j, e_j) touch when s_i <= e_j and s_j <= e_i. Keys row * stride + column are
    sorted (rows ascending, runs in a row ascending and disjoint), so both bounds are one searchsorted.
    """
    stride = np.int64(width + 2)
    base = rows.astype(np.int64) * stride
    previous_row = base - stride
    lo = np.searchsorted(base + ends, previous_row + starts, side="left")  # first i with e_i >= s_j
    hi = np.searchsorted(base + starts, previous_row + ends, side="right")  # past the last i with s_i <= e_j
    counts = np.maximum(hi - lo, 0)
    j = np.repeat(np.arange(len(rows)), counts)
    i = np.repeat(lo, counts) + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return i, j


def _join(count: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label (the smallest member index) of each of `count` nodes joined by edges (i, j)."""
    labels = np.arange(count)
    while True:
        low = np.minimum(labels[i], labels[j])
        before = labels.copy()
        np.minimum.at(labels, labels[i], low)  # hook each root onto the smaller root it touches
        np.minimum.at(labels, labels[j], low)
        while True:  # pointer jumping: every node points straight at its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def component_boxes(hole: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding box (top, left, bottom, right; exclusive) of each 8-connected component, ordered by top, left."""
    rows, starts, ends = row_runs(hole)
    if rows.size == 0:
        return []
    labels = _join(len(rows), *_touching_runs(rows, starts, ends, hole.shape[1]))
    roots, index = np.unique(labels, return_inverse=True)
    tops = np.full(len(roots), np.iinfo(np.int64).max)
    lefts = tops.copy()
    bottoms = np.zeros(len(roots), np.int64)
    rights = bottoms.copy()
    np.minimum.at(tops, index, rows)
    np.minimum.at(lefts, index, starts)
    np.maximum.at(bottoms, index, rows + 1)
    np.maximum.at(rights, index, ends)
    return sorted(zip(tops.tolist(), lefts.tolist(), bottoms.tolist(), rights.tolist()))


def iopaint_crop_box(box: tuple[int, int, int, int], margin: int, height: int, width: int) -> tuple[int, int, int, int]:
    """IOPaint's `_crop_box` for a hole box (top, left, bottom, right): grown by `margin`, kept inside the image.

    Restated from iopaint/model/base.py: centre the grown box on the hole, shift it back inside when it
    sticks out of one edge (to keep the context size), then clip; widened to the hole's box where
    IOPaint's integer halving would cut its last row or column (only possible with margin 0).
    """
    top, left, bottom, right = box
    cx, cy = (left + right) // 2, (top + bottom) // 2
    w, h = right - left + 2 * margin, bottom - top + 2 * margin
    _l, _r, _t, _b = cx - w // 2, cx + w // 2, cy - h // 2, cy + h // 2
    l, r, t, b = max(_l, 0), min(_r, width), max(_t, 0), min(_b, height)
    if _l < 0:
        r += -_l
    if _r > width:
        l -= _r - width
    if _t < 0:
        b += -_t
    if _b > height:
        t -= _b - height
    # IOPaint's halving ends the box at right + margin - 1 for an odd hole width: never cut the hole itself
    return min(max(t, 0), top), min(max(l, 0), left), max(min(b, height), bottom), max(min(r, width), right)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def crop_regions(hole: np.ndarray, margin: int) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """(crop box, hole box) per merged region: overlapping crop boxes are merged until none overlap."""
    height, width = hole.shape
    holes = component_boxes(hole)
    if len(holes) > MAX_REGIONS:
        holes = [(min(b[0] for b in holes), min(b[1] for b in holes), max(b[2] for b in holes), max(b[3] for b in holes))]
    regions = [(iopaint_crop_box(b, margin, height, width), b) for b in holes]
    merged = True
    while merged:
        merged = False
        for a in range(len(regions)):
            for b in range(a + 1, len(regions)):
                if _overlap(regions[a][0], regions[b][0]):
                    union = _union(regions[a][1], regions[b][1])
                    regions[a] = (iopaint_crop_box(union, margin, height, width), union)
                    del regions[b]
                    merged = True
                    break
            if merged:
                break
    return sorted(regions)
