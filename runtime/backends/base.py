"""The one interface every inference backend implements, in the spirit of Polygraphy's runners.

A backend wraps one model file. `activate()` acquires what inference needs (session, engine context,
CUDA stream, device buffers), `infer(feed)` maps contract input names to float32 arrays and returns the
contract outputs as float32 arrays, and `deactivate()` releases it all. `profile` says which input
shapes the backend accepts, so callers (the Inpainter, the validator, the benchmark) can plan sizes
without knowing which backend they hold.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import UserError


class BackendError(UserError):
    """A model file that cannot be loaded or run by a backend; one line that says what to do."""


@dataclass(frozen=True)
class Profile:
    """Input shapes a backend accepts: N, H, W ranges of the model tensors (None = unbounded).

    H and W here are tensor sizes, i.e. after padding to the size multiple; `usable()` rounds them so
    that every size inside the range is itself a valid model size.
    """

    min_batch: int = 1
    max_batch: int | None = None
    min_height: int = C.MIN_SIDE
    min_width: int = C.MIN_SIDE
    max_height: int | None = None
    max_width: int | None = None
    opt_height: int | None = None
    opt_width: int | None = None
    size_multiple: int = C.SIZE_MULTIPLE

    def usable(self) -> "Profile":
        """The same range with H/W bounds moved inward to multiples of the size rule and >= MIN_SIDE."""
        m = self.size_multiple
        min_h = C.round_up(max(self.min_height, C.MIN_SIDE), m)
        min_w = C.round_up(max(self.min_width, C.MIN_SIDE), m)
        max_h = None if self.max_height is None else self.max_height // m * m
        max_w = None if self.max_width is None else self.max_width // m * m
        return replace(self, min_height=min_h, min_width=min_w, max_height=max_h, max_width=max_w)

    def narrowed(self, max_side: int | None = None, min_side: int | None = None) -> "Profile":
        """Intersect with a user limit: H and W at most `max_side` (and at least `min_side`)."""
        result = self
        if max_side is not None:
            result = replace(result, max_height=_min_opt(result.max_height, max_side),
                             max_width=_min_opt(result.max_width, max_side))
        if min_side is not None:
            result = replace(result, min_height=max(result.min_height, min_side),
                             min_width=max(result.min_width, min_side))
        return result

    def is_empty(self) -> bool:
        p = self.usable()
        too_tall = p.max_height is not None and p.max_height < p.min_height
        too_wide = p.max_width is not None and p.max_width < p.min_width
        return too_tall or too_wide or (self.max_batch is not None and self.max_batch < self.min_batch)

    def as_dict(self) -> dict[str, Any]:
        return {
            "min": {C.DIM_BATCH: self.min_batch, C.DIM_HEIGHT: self.min_height, C.DIM_WIDTH: self.min_width},
            "max": {C.DIM_BATCH: self.max_batch, C.DIM_HEIGHT: self.max_height, C.DIM_WIDTH: self.max_width},
            "opt": {C.DIM_HEIGHT: self.opt_height, C.DIM_WIDTH: self.opt_width},
            "size_multiple": self.size_multiple,
        }

    @staticmethod
    def from_shapes(min_shape: tuple[int, ...], max_shape: tuple[int, ...], opt_shape: tuple[int, ...] | None = None,
                    size_multiple: int = C.SIZE_MULTIPLE) -> "Profile":
        """From NCHW min/opt/max shapes such as a TensorRT optimisation profile gives."""
        opt = opt_shape or (None, None, None, None)
        return Profile(min_batch=int(min_shape[0]), max_batch=int(max_shape[0]),
                       min_height=int(min_shape[2]), min_width=int(min_shape[3]),
                       max_height=int(max_shape[2]), max_width=int(max_shape[3]),
                       opt_height=opt[2], opt_width=opt[3], size_multiple=size_multiple)


def _min_opt(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def profile_from_override(base: Profile, override: Any) -> Profile:
    """Apply a user `profile=`: a Profile (replaces), or a mapping {"min": (H, W), "max": (H, W), "max_batch": N}."""
    if override is None:
        return base
    if isinstance(override, Profile):
        return override
    if not isinstance(override, dict):
        raise ValueError(f"profile must be a Profile or a dict with 'min'/'max' (H, W) pairs, not {type(override).__name__}")
    result = base
    if override.get("min") is not None:
        h, w = override["min"]
        result = replace(result, min_height=max(result.min_height, int(h)), min_width=max(result.min_width, int(w)))
    if override.get("max") is not None:
        h, w = override["max"]
        result = replace(result, max_height=_min_opt(result.max_height, int(h)),
                         max_width=_min_opt(result.max_width, int(w)))
    if override.get("max_batch") is not None:
        result = replace(result, max_batch=_min_opt(result.max_batch, int(override["max_batch"])))
    return result


class Backend(abc.ABC):
    """Runs the inpainting model: {image [N,3,H,W], mask [N,1,H,W]} float32 -> {inpainted [N,3,H,W]} float32."""

    #: short name: "onnxruntime", "tensorrt" or "torch"
    name: str = "backend"

    def __init__(self) -> None:
        self.is_active = False

    @abc.abstractmethod
    def activate_impl(self) -> None:
        """Acquire session / engine / device resources."""

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; inputs are C-contiguous float32 and already validated."""

    def deactivate_impl(self) -> None:
        """Release what `activate_impl` acquired (default: nothing)."""

    @property
    @abc.abstractmethod
    def profile(self) -> Profile:
        """Input shapes this backend accepts."""

    @property
    def weights(self) -> str | None:
        """Where the weights came from (ONNX metadata, engine sidecar, checkpoint name), if known."""
        return None

    def describe(self) -> dict[str, Any]:
        """Backend-specific facts for `Inpainter.info()` (providers, device, versions)."""
        return {}

    # -- the Polygraphy-style lifecycle ------------------------------------------------------------------
    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def input_range(self) -> Profile:
        return self.profile

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name} backend is not active; call activate() first or use it as a context manager")
        checked = {name: _checked_input(name, feed) for name in C.INPUT_NAMES}
        return self.infer_impl(checked)

    def __enter__(self) -> "Backend":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()


def _checked_input(name: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    if name not in feed:
        raise ValueError(f"missing input {name!r}; the model takes {', '.join(C.INPUT_NAMES)}")
    array = np.ascontiguousarray(feed[name], dtype=np.float32)
    if array.ndim != 4 or array.shape[1] != C.CHANNELS[name]:
        raise ValueError(f"input {name!r} has shape {array.shape}, expected [N,{C.CHANNELS[name]},H,W]")
    return array


def io_problem(inputs: list[str], outputs: list[str]) -> str | None:
    """Why a model's I/O names break the contract, or None when they match it."""
    want_in, want_out = set(C.INPUT_NAMES), set(C.OUTPUT_NAMES)
    if set(inputs) == want_in and want_out <= set(outputs):
        return None
    return (f"its inputs are {sorted(inputs)} and outputs {sorted(outputs)}, but a lama-deploy model takes "
            f"{list(C.INPUT_NAMES)} and returns {list(C.OUTPUT_NAMES)}: it is not an exported LaMa model "
            f"(export one with `lama-deploy export`)")


def is_random_weights(label: str | None) -> bool:
    return bool(label) and "random weights" in str(label).lower()
