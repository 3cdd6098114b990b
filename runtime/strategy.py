"""How an image of any size is fitted to a model's size range: direct, pad, crop, resize, empty-mask.

- direct: the image, padded to the size multiple (what the official predictor does);
- pad: smaller than the profile's minimum: padded (symmetric, bottom/right) up to it;
- crop: larger than the maximum: a window around the hole's bounding box plus a context margin is
  inpainted and pasted back;
- resize: even that window does not fit: it is downscaled to fit, inpainted, upscaled, and only the
  hole's pixels are pasted back at full resolution;
- empty-mask: nothing to inpaint; the input is returned and the model is not run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lama_deploy import contract as C

from .backends.base import Profile

STRATEGIES = ("direct", "pad", "crop", "resize", "empty-mask")
DEFAULT_CONTEXT_MARGIN = 128


@dataclass(frozen=True)
class Box:
    """Rows [top, bottom) and columns [left, right) of an image."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


@dataclass
class Plan:
    """What to run for one image: the region to inpaint, the size it is fed at, and the tensor size."""

    strategy: str
    region: Box
    model_size: tuple[int, int] = (0, 0)  # (h, w) of the region as fed (differs from region only for resize)
    tensor_size: tuple[int, int] = (0, 0)  # (H, W) after padding
    notes: list[str] = field(default_factory=list)


def hole_bbox(hole: np.ndarray) -> Box | None:
    rows = np.flatnonzero(hole.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(hole.any(axis=0))
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def tensor_size(height: int, width: int, profile: Profile) -> tuple[int, int]:
    """Padded model size: the next size multiple, at least the profile's minimum."""
    m = profile.size_multiple
    return max(C.round_up(height, m), profile.min_height), max(C.round_up(width, m), profile.min_width)


def fits(size: tuple[int, int], profile: Profile) -> bool:
    h, w = size
    return (profile.max_height is None or h <= profile.max_height) and (profile.max_width is None or w <= profile.max_width)


def axis_window(lo: int, hi: int, length: int, limit: int | None, margin: int, multiple: int) -> tuple[int, int] | None:
    """The [start, end) window along one axis: whole axis if it fits, else hole extent + margin within `limit`.

    Windows are multiples of the size rule so they need no padding; None when the hole alone is too long.
    """
    if limit is None or C.round_up(length, multiple) <= limit:
        return 0, length
    extent = hi - lo
    if C.round_up(extent, multiple) > limit:
        return None
    size = min(limit, C.round_up(extent + 2 * margin, multiple))  # limit < length here, so the window fits
    start = min(max(lo - (size - extent) // 2, 0), length - size)
    return start, start + size


def downscaled(height: int, width: int, profile: Profile) -> tuple[int, int]:
    """(h, w) scaled with the aspect ratio kept so that the padded size fits the profile's maximum."""
    scale = 1.0
    if profile.max_height is not None:
        scale = min(scale, profile.max_height / height)
    if profile.max_width is not None:
        scale = min(scale, profile.max_width / width)
    return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


def plan_image(hole: np.ndarray, profile: Profile, margin: int = DEFAULT_CONTEXT_MARGIN) -> Plan:
    """Choose the strategy for one image. `profile` must be `usable()` (bounds on the size rule)."""
    height, width = hole.shape
    whole = Box(0, 0, height, width)
    bbox = hole_bbox(hole)
    if bbox is None:
        return Plan("empty-mask", whole, notes=["mask is empty: nothing to inpaint, the model was not run"])
    m = profile.size_multiple
    size = tensor_size(height, width, profile)
    if fits(size, profile):
        if size == (C.round_up(height, m), C.round_up(width, m)):
            return Plan("direct", whole, (height, width), size)
        return Plan("pad", whole, (height, width), size,
                    [f"{width}x{height} is below the model's minimum; padded to {size[1]}x{size[0]}"])
    margin = C.round_up(max(margin, 0), m)
    rows = axis_window(bbox.top, bbox.bottom, height, profile.max_height, margin, m)
    cols = axis_window(bbox.left, bbox.right, width, profile.max_width, margin, m)
    if rows is not None and cols is not None:
        region = Box(rows[0], cols[0], rows[1], cols[1])
        return Plan("crop", region, (region.height, region.width), tensor_size(region.height, region.width, profile),
                    [f"{width}x{height} is above the model's maximum; inpainted a {region.width}x{region.height} "
                     f"crop around the mask at ({region.left}, {region.top})"])
    region = Box(max(bbox.top - margin, 0), max(bbox.left - margin, 0),
                 min(bbox.bottom + margin, height), min(bbox.right + margin, width))
    small = downscaled(region.height, region.width, profile)
    return Plan("resize", region, small, tensor_size(*small, profile),
                [f"the mask's area ({region.width}x{region.height} with context) is above the model's maximum; "
                 f"inpainted at {small[1]}x{small[0]} and upscaled, only masked pixels pasted back"])
