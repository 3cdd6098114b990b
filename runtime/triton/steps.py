"""The Inpainter's steps on raw request arrays, for Triton's python-backend models (numpy + Pillow only).

`plan_request` + `model_feed` are what `Inpainter` does before the model (load, threshold, choose the
strategy, crop/downscale, pad), `finish` what it does after (crop back, upscale, paste, composite), with
the same library functions, so the ensemble answers what `lama-deploy inpaint` writes. Options travel as
string parameters in config.pbtxt; both ensemble steps read the same ones and re-derive the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lama_deploy import contract as C

from ..backends.base import Profile
from ..images import DEFAULT_MAX_PIXELS, InpaintInputError, LoadedImage, load_hole, load_image, to_output_image
from ..strategy import downscale as _downscale, upscale as _upscale  # the Inpainter's own resamplers: identical bytes
from ..preprocess import make_feed, output_to_images
from ..strategy import DEFAULT_CONTEXT_MARGIN, Plan, plan_image

#: names of the float tensors between the ensemble's steps and the model step
STEP_TENSORS = {C.IMAGE: "model_image", C.MASK: "model_mask", C.OUTPUT: "model_output"}
PROFILE_KEYS = ("min_height", "min_width", "max_height", "max_width")


@dataclass(frozen=True)
class RuntimeOptions:
    threshold: float = 0
    margin: int = DEFAULT_CONTEXT_MARGIN
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int | None = None

    def as_parameters(self) -> dict[str, str]:
        values = {"threshold": self.threshold, "margin": self.margin, "max_pixels": self.max_pixels,
                  "max_side": self.max_side}
        return {key: "" if value is None else str(value) for key, value in values.items()}


def _number(params: dict[str, str], key: str, kind: type, default: object) -> object:
    text = params.get(key, "")
    if text == "":
        return default
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"config parameter {key}={text!r} is not a {kind.__name__}; fix config.pbtxt") from None


def runtime_options(params: dict[str, str]) -> RuntimeOptions:
    return RuntimeOptions(threshold=_number(params, "threshold", float, 0.0),
                          margin=_number(params, "margin", int, DEFAULT_CONTEXT_MARGIN),
                          max_pixels=_number(params, "max_pixels", int, DEFAULT_MAX_PIXELS),
                          max_side=_number(params, "max_side", int, None))


def profile_parameters(profile: Profile) -> dict[str, str]:
    return {key: "" if getattr(profile, key) is None else str(getattr(profile, key)) for key in PROFILE_KEYS}


def profile_from_parameters(params: dict[str, str]) -> Profile:
    """The model step's H/W range as the pre step must respect it (as `Inpainter._effective_profile`)."""
    base = Profile()
    values = {key: _number(params, key, int, getattr(base, key)) for key in PROFILE_KEYS}
    profile = Profile.ranges(**values).narrowed(max_side=runtime_options(params).max_side)
    if profile.is_empty():
        raise ValueError(f"the size range {profile.as_dict()} holds no valid size; widen it in config.pbtxt")
    return profile.usable()


def check_request(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The raw interface: image uint8 H x W x 3 (RGB), mask uint8 H x W of the same size."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InpaintInputError(f"image is {image.dtype} {list(image.shape)}; send uint8 H x W x 3 (RGB)")
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise InpaintInputError(f"mask is {mask.dtype} {list(mask.shape)}; send uint8 H x W (> threshold = hole)")
    return image, mask


@dataclass
class StepJob:
    loaded: LoadedImage
    hole: np.ndarray
    plan: Plan
    rgb: np.ndarray | None = None
    region_hole: np.ndarray | None = None


def plan_request(image: np.ndarray, mask: np.ndarray, profile: Profile, options: RuntimeOptions) -> StepJob:
    """Load, threshold and plan one request exactly as `Inpainter._prepare` does."""
    image, mask = check_request(image, mask)
    loaded = load_image(image, options.max_pixels)
    hole = load_hole(mask, (loaded.width, loaded.height), options.threshold, options.max_pixels)
    job = StepJob(loaded, hole, plan_image(hole, profile, options.margin))
    if job.plan.strategy != "empty-mask":
        rows, cols = job.plan.region.slices
        job.rgb, job.region_hole = loaded.rgb[rows, cols], hole[rows, cols]
        if job.plan.strategy == "resize":
            job.rgb, job.region_hole = _downscale(job.rgb, job.region_hole, job.plan.model_size)
    return job


def model_feed(job: StepJob, profile: Profile) -> dict[str, np.ndarray]:
    """Batch-of-one float NCHW feed; an empty mask still feeds the smallest size (the ensemble always runs
    the model step), and `finish` ignores that output."""
    if job.plan.strategy == "empty-mask":
        blank = np.zeros((profile.min_height, profile.min_width), dtype=bool)
        return make_feed([np.zeros((*blank.shape, 3), np.uint8)], [blank], *blank.shape)
    return make_feed([job.rgb], [job.region_hole], *job.plan.tensor_size)


def finish(job: StepJob, output: np.ndarray) -> np.ndarray:
    """The model's output -> the inpainted uint8 H x W x 3, exactly as `Inpainter._finish`."""
    generated = job.loaded.rgb
    if job.plan.strategy != "empty-mask":
        expected = (1, 3, *job.plan.tensor_size)
        if tuple(output.shape) != expected:
            raise ValueError(f"model output is {list(output.shape)}, expected {list(expected)}")
        result = output_to_images(output, [job.rgb.shape[:2]])[0]
        if job.plan.strategy == "resize":
            result = _upscale(result, (job.plan.region.height, job.plan.region.width))
        generated = job.loaded.rgb.copy()
        rows, cols = job.plan.region.slices
        generated[rows, cols] = result
    return np.asarray(to_output_image(job.loaded, generated, job.hole))
