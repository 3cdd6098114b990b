"""The Inpainter's pipeline on Triton requests, for the python-backend models (numpy + Pillow only).

Every raw-image model (the python model, the ensemble's pre and post steps) reads the same request: the image
and mask as UINT8 arrays (`image` H x W x 3 RGB, `mask` H x W) or as their encoded files (`image_file`,
`mask_file`, one BYTES element each: the format decides the mask threshold `auto`, and the ICC profile, EXIF
and DPI come back in `inpainted_file`). Options are the `InpaintOptions` under their own names: config
parameters (written by `lama-deploy triton-repo` from the same flags as `inpaint`) and, per request, the
request's parameters (the per-request options, as the HTTP form fields).

The ensemble's pre step runs `Pipeline.prepare` + `Pipeline.batches` and sends the one batch of a request
(the crops of one image share one tensor size, see `strategy.one_tensor_size`) to the model step; the post
step re-derives the same plan from the same request and finishes it with the model's output: the very
steps of `Inpainter.inpaint`, so the ensemble answers what `lama-deploy inpaint` writes.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

import numpy as np

from lama_deploy import contract as C

from ..backends.base import Profile
from ..images import InpaintInputError
from ..memory import MemoryCost
from ..options import REQUEST_OPTIONS, SPECS, InpaintOptions
from ..output import encode_image
from ..pipeline import Batch, Job, Pipeline
from ..preprocess import make_feed

#: names of the float tensors between the ensemble's steps and the model step
STEP_TENSORS = {C.IMAGE: "model_image", C.MASK: "model_mask", C.OUTPUT: "model_output"}
#: the encoded-file inputs and output (BYTES, one element) beside the UINT8 arrays
FILE_INPUTS = {C.IMAGE: "image_file", C.MASK: "mask_file"}
FILE_OUTPUT = "inpainted_file"
PROFILE_KEYS = ("min_height", "min_width", "max_height", "max_width")
#: step facts in config parameters beside the options
COST_KEYS = ("memory_cost_backend", "memory_bytes_per_pixel", "memory_fixed_bytes")
MAX_BATCH_KEY = "model_max_batch"
WEIGHTS_KEY = "weights"


def _number(params: Dict[str, str], key: str, kind: type, default: Any) -> Any:
    text = params.get(key, "")
    if text == "":
        return default
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"config parameter {key}={text!r} is not a {kind.__name__}; fix config.pbtxt") from None


def options_from_parameters(params: Dict[str, str]) -> InpaintOptions:
    """The InpaintOptions of a config's parameters (same names and text as the CLI flags)."""
    given = {key: value for key, value in params.items() if key in SPECS and value != ""}
    return InpaintOptions().with_text(given, tuple(SPECS), where="config parameter")


def step_parameters(options: InpaintOptions, profile: Profile, cost: Optional[MemoryCost], max_batch: int,
                    weights: str = "") -> Dict[str, str]:
    """What the pre and post steps need to plan like `Inpainter`: the options, the model step's size range,
    its host memory cost (None for GPU instances) and batch limit, and the weights label."""
    params = dict(options.as_text())
    params.update({key: "" if getattr(profile, key) is None else str(getattr(profile, key)) for key in PROFILE_KEYS})
    if cost is not None:
        params.update(zip(COST_KEYS, (cost.backend, str(cost.bytes_per_pixel), str(cost.fixed_bytes))))
    params[MAX_BATCH_KEY] = str(max_batch)
    params[WEIGHTS_KEY] = weights
    return params


def profile_from_parameters(params: Dict[str, str], options: InpaintOptions) -> Profile:
    """The model step's H/W range as the pre step must respect it (as `Inpainter._effective_profile`)."""
    base = Profile()
    values = {key: _number(params, key, int, getattr(base, key)) for key in PROFILE_KEYS}
    profile = Profile.ranges(**values).narrowed(max_side=options.max_side)
    if profile.is_empty():
        raise ValueError(f"the size range {profile.as_dict()} holds no valid size; widen it in config.pbtxt")
    return profile.usable()


def pipeline_from_parameters(params: Dict[str, str]) -> Tuple[Pipeline, int]:
    """(the Pipeline the steps run, the model step's max batch) from a step's config parameters."""
    options = options_from_parameters(params)
    cost = None
    if params.get(COST_KEYS[0]):
        cost = MemoryCost(params[COST_KEYS[0]], _number(params, COST_KEYS[1], float, 0.0),
                          _number(params, COST_KEYS[2], int, 0))
    weights = params.get(WEIGHTS_KEY, "")
    pipeline = Pipeline(profile_from_parameters(params, options), options, cost, "triton-ensemble",
                        C.is_random_weights(weights))
    return pipeline, _number(params, MAX_BATCH_KEY, int, 1)


def request_options(base: InpaintOptions, parameters: Any) -> InpaintOptions:
    """The options of one request: `base` with the request's parameters (a JSON object of per-request
    options, as the HTTP form fields); other parameter names are refused in one line."""
    if not parameters:
        return base
    given = json.loads(parameters) if isinstance(parameters, str) else dict(parameters)
    return base.with_text({key: str(value) for key, value in given.items()}, REQUEST_OPTIONS,
                          where="request parameter") if given else base


def request_sources(arrays: Dict[str, np.ndarray]) -> Tuple[Any, Any, bool]:
    """(image, mask, as files) of a request: the UINT8 arrays, or the bytes of the encoded files."""
    files = [name for name in FILE_INPUTS.values() if name in arrays]
    raw = [name for name in (C.IMAGE, C.MASK) if name in arrays]
    if len(files) == 2 and not raw:
        return _file_bytes(arrays[FILE_INPUTS[C.IMAGE]]), _file_bytes(arrays[FILE_INPUTS[C.MASK]]), True
    if len(raw) == 2 and not files:
        image, mask = arrays[C.IMAGE], arrays[C.MASK]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InpaintInputError(f"image is {image.dtype} {list(image.shape)}; send uint8 H x W x 3 (RGB)")
        if mask.dtype != np.uint8 or mask.ndim != 2:
            raise InpaintInputError(f"mask is {mask.dtype} {list(mask.shape)}; send uint8 H x W (> threshold = hole)")
        return image, mask, False
    raise InpaintInputError("send either `image` and `mask` (UINT8 arrays) or `image_file` and `mask_file` "
                            "(encoded files), not a mix")


def _file_bytes(tensor: np.ndarray) -> bytes:
    items = np.asarray(tensor, dtype=object).reshape(-1)
    if items.size != 1:
        raise InpaintInputError(f"a file input holds one element (the file's bytes), got {items.size}")
    value = items[0]
    return value if isinstance(value, bytes) else bytes(value)


def result_outputs(image: Any, as_files: bool, weights: str) -> Dict[str, np.ndarray]:
    """`inpainted` (UINT8) and, for file requests, `inpainted_file` (PNG with the input's metadata)."""
    outputs = {C.OUTPUT: np.asarray(image)}
    if as_files:
        text = {C.META_WEIGHTS: weights} if weights else None
        outputs[FILE_OUTPUT] = np.array([encode_image(image, "PNG", text=text)], dtype=object)
    return outputs


def one_batch(pipeline: Pipeline, job: Job, max_batch: int) -> Optional[Batch]:
    """The request's single model call (None for an empty mask); the ensemble runs the model once per request."""
    batches = pipeline.batches([job], max_batch)
    if len(batches) > 1:
        raise InpaintInputError(f"this image needs {len(batches)} model calls (its {len(job.plan.runs)} crops do not "
                                f"fit one batch of at most {max_batch}); write the repository with a larger "
                                f"--max-batch or use --repo-kind python")
    return batches[0] if batches else None


def pre_step(pipeline: Pipeline, image: Any, mask: Any, options: InpaintOptions,
             max_batch: int) -> Dict[str, np.ndarray]:
    """Ensemble step 1: the request -> the model's float NCHW feed (all crops of the image as one batch; an
    empty mask still feeds the smallest size, as the ensemble always runs the model step, and `post_step`
    ignores that output)."""
    job = pipeline.prepare(image, mask, options)
    batch = one_batch(pipeline, job, max_batch)
    if batch is None:
        profile = pipeline.profile
        blank = np.zeros((profile.min_height, profile.min_width), dtype=bool)
        return make_feed([np.zeros((*blank.shape, 3), np.uint8)], [blank], *blank.shape)
    return batch.feed


def post_step(pipeline: Pipeline, image: Any, mask: Any, output: np.ndarray, options: InpaintOptions,
              max_batch: int) -> Any:
    """Ensemble step 3: the same request planned again + the model's output -> the result image."""
    job = pipeline.prepare(image, mask, options)
    batch = one_batch(pipeline, job, max_batch)
    if batch is not None:
        batch.scatter(output)
    return pipeline.finish(job).image
