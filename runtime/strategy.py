"""How an image of any size is fed to a model: which regions run, at what size (IOPaint's HD strategies and more).

Strategies a user picks (`StrategyOptions.strategy`, `--strategy`):

- `auto` (default) = `crop`;
- `crop`: when the long side exceeds `crop_trigger` (800, as IOPaint), one crop per connected hole
  region (its box plus `margin`, 128 px, IOPaint's geometry; overlapping crops merged, see
  `lama_deploy.runtime.regions`); smaller images run whole;
- `window`: above the trigger, one crop around all holes plus the margin;
- `resize`: when the long side exceeds `resize_limit` (1280, as IOPaint), the whole image downscaled to
  it, inpainted, upscaled, and only hole pixels pasted back;
- `whole` (alias `original`, IOPaint's name): the whole image at full size, as the official predictor.

What ran is reported per image (`Plan.strategy`): `direct` (whole image, padded to the size multiple),
`pad` (padded up to the model's minimum), `crop`, `window`, `resize`, `empty-mask` (nothing to do;
the model is not run). Whatever was asked, an image that does not fit the model's size range (narrowed by
`--max-side` and by the memory budget, `lama_deploy.runtime.pipeline`) is cut into crops
when its holes form several regions, and any run that still does not fit falls back to a window
around its holes sized to the limits, else to a downscaled copy of that area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from lama_deploy import contract as C

from .backends.base import Profile
from .regions import crop_regions, iopaint_crop_box

STRATEGIES = ("auto", "crop", "window", "resize", "whole")
ALIASES = {"original": "whole"}  # IOPaint's HDStrategy names are crop, resize and original
DEFAULT_STRATEGY = "auto"
DEFAULT_CONTEXT_MARGIN = 128  # IOPaint's hd_strategy_crop_margin
DEFAULT_CROP_TRIGGER = 800  # IOPaint's hd_strategy_crop_trigger_size
DEFAULT_RESIZE_LIMIT = 1280  # IOPaint's hd_strategy_resize_limit


def strategy_name(name: str) -> str:
    """The canonical strategy name for `name` (case-insensitive; IOPaint's `original` is `whole`)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)} (or original = whole)")
    return key


@dataclass(frozen=True)
class StrategyOptions:
    """How large images are handled; the defaults reproduce IOPaint's default (Crop, trigger 800, margin 128)."""

    strategy: str = DEFAULT_STRATEGY
    margin: int = DEFAULT_CONTEXT_MARGIN
    crop_trigger: int = DEFAULT_CROP_TRIGGER
    resize_limit: int = DEFAULT_RESIZE_LIMIT

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", strategy_name(self.strategy))
        for name in ("margin", "crop_trigger", "resize_limit"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.resize_limit < C.MIN_SIDE:
            raise ValueError(f"resize_limit must be >= {C.MIN_SIDE}, got {self.resize_limit}")


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

    def shifted(self, top: int, left: int) -> "Box":
        return Box(self.top + top, self.left + left, self.bottom + top, self.right + left)


@dataclass(frozen=True)
class Run:
    """One model input cut from the image: the region, the size it is fed at, the padded tensor size."""

    kind: str  # direct, pad, window or resize
    region: Box  # the area fed to the model
    model_size: tuple[int, int]  # (h, w) as fed; differs from the region's only when resized
    tensor_size: tuple[int, int]  # (H, W) after padding
    paste: Box | None = None  # the area pasted back, inside `region` (None: all of it)

    @property
    def resized(self) -> bool:
        return self.model_size != (self.region.height, self.region.width)

    @property
    def pasted(self) -> Box:
        return self.paste or self.region


@dataclass
class Plan:
    """What to run for one image: the strategy that ran and its model inputs (none for an empty mask)."""

    strategy: str
    runs: list[Run]
    notes: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)  # (h, w)

    @property
    def region(self) -> Box:
        return self.runs[0].region if self.runs else Box(0, 0, *self.image_size)

    @property
    def model_size(self) -> tuple[int, int]:
        return self.runs[0].model_size if self.runs else (0, 0)

    @property
    def tensor_size(self) -> tuple[int, int]:
        return self.runs[0].tensor_size if self.runs else (0, 0)


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
    in_range = (profile.max_height is None or h <= profile.max_height) and (profile.max_width is None or w <= profile.max_width)
    return in_range


def batch_limit(profile: Profile) -> int | None:
    """Most inputs of one tensor size per model call that the model takes (the memory budget's share is the
    pipeline's to apply)."""
    return profile.max_batch


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


def _full_size_run(region: Box, profile: Profile) -> Run | None:
    """The region fed as it is (padded to the size rule or the minimum), if that fits."""
    size = tensor_size(region.height, region.width, profile)
    if not fits(size, profile):
        return None
    m = profile.size_multiple
    kind = "direct" if size == (C.round_up(region.height, m), C.round_up(region.width, m)) else "pad"
    return Run(kind, region, (region.height, region.width), size)


def _limited_run(hole: np.ndarray, area: Box, profile: Profile, options: StrategyOptions) -> Run:
    """For an area too large to run: a window around its holes within the limits, else the area downscaled."""
    limits = profile
    m = limits.size_multiple
    margin = C.round_up(max(options.margin, 0), m)
    bbox = hole_bbox(hole[area.slices])
    rows = axis_window(bbox.top, bbox.bottom, area.height, limits.max_height, margin, m)
    cols = axis_window(bbox.left, bbox.right, area.width, limits.max_width, margin, m)
    if rows is not None and cols is not None:
        region = Box(rows[0], cols[0], rows[1], cols[1]).shifted(area.top, area.left)
        return Run("window", region, (region.height, region.width), tensor_size(region.height, region.width, limits))
    region = Box(max(bbox.top - margin, 0), max(bbox.left - margin, 0),
                 min(bbox.bottom + margin, area.height), min(bbox.right + margin, area.width)).shifted(area.top, area.left)
    small = downscaled(region.height, region.width, limits)
    return Run("resize", region, small, tensor_size(*small, limits))


def _area_run(hole: np.ndarray, area: Box, profile: Profile, options: StrategyOptions) -> Run:
    return _full_size_run(area, profile) or _limited_run(hole, area, profile, options)


def _describe(run: Run, whole: Box) -> str | None:
    if run.kind == "pad" and run.region == whole:
        return f"{whole.width}x{whole.height} is below the model's minimum; padded to {run.tensor_size[1]}x{run.tensor_size[0]}"
    if run.kind == "window":
        return (f"inpainted a {run.region.width}x{run.region.height} window around the mask at "
                f"({run.region.left}, {run.region.top}) to stay within the model's size range")
    if run.kind == "resize":
        return (f"inpainted a {run.region.width}x{run.region.height} area at {run.model_size[1]}x{run.model_size[0]} "
                f"and upscaled it; only masked pixels pasted back")
    return None


def _plan(strategy: str, runs: list[Run], whole: Box, notes: list[str] | None = None) -> Plan:
    notes = list(notes or []) + [n for n in (_describe(r, whole) for r in runs) if n]
    if strategy == "whole":  # the whole image was asked for: the single run says what ran
        strategy = runs[0].kind
    return Plan(strategy, runs, notes, (whole.height, whole.width))


def _grown(box: Box, height: int, width: int, whole: Box) -> Box:
    """`box` grown to height x width (centred, shifted to stay inside `whole`; never beyond it)."""
    height, width = min(height, whole.height), min(width, whole.width)
    top = min(max(box.top - (height - box.height) // 2, 0), whole.height - height)
    left = min(max(box.left - (width - box.width) // 2, 0), whole.width - width)
    return Box(top, left, top + height, left + width)


def one_tensor_size(runs: list[Run], profile: Profile, options: StrategyOptions, whole: Box) -> list[Run]:
    """Crops of one image fed at one tensor size, so they travel as one batch (to `Inpainter`'s backend and
    through the Triton ensemble alike): each smaller crop takes more of the surrounding image as context
    (real pixels, never padding) and pastes back only its own area. Unchanged when the crops were resized or
    windowed, or when the common size would not fit the model's range."""
    if len(runs) < 2 or any(run.kind not in ("direct", "pad") for run in runs):
        return runs
    height, width = max(run.tensor_size[0] for run in runs), max(run.tensor_size[1] for run in runs)
    if not fits((height, width), profile):
        return runs
    grown = []
    for run in runs:
        region = _grown(run.region, height, width, whole)
        size = tensor_size(region.height, region.width, profile)
        grown.append(Run(run.kind, region, (region.height, region.width), size, run.region))
    return grown if len({run.tensor_size for run in grown}) == 1 else runs


def _plan_crop(hole: np.ndarray, profile: Profile, options: StrategyOptions, whole: Box, why: str,
               regions: list | None = None) -> Plan:
    regions = crop_regions(hole, options.margin) if regions is None else regions
    runs = one_tensor_size([_area_run(hole, Box(*crop), profile, options) for crop, _ in regions], profile, options,
                           whole)
    return _plan("crop", runs, whole, [f"crop strategy: {len(runs)} region(s) around the holes "
                                       f"(margin {options.margin} px), {why}"])


def _plan_whole(hole: np.ndarray, profile: Profile, options: StrategyOptions, whole: Box) -> Plan:
    """The whole image if it fits; else one crop per region when there are several, else a window."""
    run = _full_size_run(whole, profile)
    if run is None:
        regions = crop_regions(hole, options.margin)
        if len(regions) > 1:  # separate holes: crops around each are smaller than one window around all
            return _plan_crop(hole, profile, options, whole, "the whole image is above the model's size range",
                              regions)
        run = _limited_run(hole, whole, profile, options)
    return _plan("whole", [run], whole)


def _plan_window(hole: np.ndarray, profile: Profile, options: StrategyOptions, whole: Box) -> Plan:
    bbox = hole_bbox(hole)
    region = Box(*iopaint_crop_box((bbox.top, bbox.left, bbox.bottom, bbox.right), options.margin, whole.height, whole.width))
    run = _area_run(hole, region, profile, options)
    return _plan("window", [run], whole, [] if run.kind == "window" else
                 [f"window strategy: one {region.width}x{region.height} crop around all holes"])


def _plan_resize(profile: Profile, options: StrategyOptions, whole: Box) -> Plan:
    """IOPaint's Resize: the long side scaled to `resize_limit` (int(x * ratio + 0.5), as IOPaint), within the limits."""
    ratio = options.resize_limit / max(whole.height, whole.width)
    small = max(1, int(whole.height * ratio + 0.5)), max(1, int(whole.width * ratio + 0.5))
    limits = profile
    if not fits(tensor_size(*small, limits), limits):
        small = downscaled(*small, limits)
    return _plan("resize", [Run("resize", whole, small, tensor_size(*small, limits))], whole)


def plan_image(hole: np.ndarray, profile: Profile, options: StrategyOptions | None = None, *,
               margin: int | None = None) -> Plan:
    """Choose what to run for one image. `profile` must be `usable()` (bounds on the size rule)."""
    options = options or StrategyOptions()
    if margin is not None:
        options = replace(options, margin=int(margin))
    height, width = hole.shape
    whole = Box(0, 0, height, width)
    if hole_bbox(hole) is None:
        return Plan("empty-mask", [], ["mask is empty: nothing to inpaint, the model was not run"], (height, width))
    long_side = max(height, width)
    name = options.strategy
    if name in ("auto", "crop") and long_side > options.crop_trigger:
        return _plan_crop(hole, profile, options, whole, f"long side {long_side} > trigger {options.crop_trigger}")
    if name == "window" and long_side > options.crop_trigger:
        return _plan_window(hole, profile, options, whole)
    if name == "resize" and long_side > options.resize_limit:
        return _plan_resize(profile, options, whole)
    return _plan_whole(hole, profile, options, whole)


# -- cutting the inputs and pasting the results ----------------------------------------------------------
def cut_inputs(rgb: np.ndarray, hole: np.ndarray, plan: Plan) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, hole) of each run, as fed to the model (downscaled for resize runs)."""
    inputs = []
    for run in plan.runs:
        rows, cols = run.region.slices
        part_rgb, part_hole = rgb[rows, cols], hole[rows, cols]
        inputs.append(downscale(part_rgb, part_hole, run.model_size) if run.resized else (part_rgb, part_hole))
    return inputs


def paste_outputs(rgb: np.ndarray, plan: Plan, outputs: list[np.ndarray]) -> np.ndarray:
    """The image with each run's output over its region (upscaled for resize runs).

    Pasted areas never overlap (crop boxes are merged; grown context is not pasted), and the caller keeps only
    hole pixels of this.
    """
    generated = rgb.copy()
    for run, output in zip(plan.runs, outputs):
        if run.resized:
            output = upscale(output, (run.region.height, run.region.width))
        paste = run.pasted
        inner = Box(paste.top - run.region.top, paste.left - run.region.left, paste.bottom - run.region.top,
                    paste.right - run.region.left)
        generated[paste.slices] = output[inner.slices]
    return generated


def downscale(rgb: np.ndarray, hole: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image with LANCZOS; hole with a box filter and > 0 so every partly-masked pixel stays a hole."""
    h, w = size
    small_rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.Resampling.LANCZOS))
    small_hole = np.asarray(Image.fromarray(hole.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX)) > 0
    return small_rgb, small_hole


def upscale(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))
