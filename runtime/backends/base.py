"""The one interface every inference backend implements, in the spirit of Polygraphy's runners.

A backend wraps one model file. `activate()` acquires what inference needs (session, engine context,
CUDA stream, device buffers), `infer(feed)` maps contract input names to float32 arrays and returns the
contract outputs as float32 arrays, and `deactivate()` releases it all. `profile` says which input
shapes the backend accepts, so callers (the Inpainter, the validator, the benchmark) can plan sizes
without knowing which backend they hold.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import replace
from typing import Any

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import UserError
from lama_deploy.profiles import Profile, tighter


class BackendError(UserError):
    """A model file that cannot be loaded or run by a backend; one line that says what to do."""


class InferenceCancelled(Exception):
    """An inference stopped by `Backend.cancel()` (Ctrl-C, a server shutting down); no output was made."""


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
        h, w = (int(side) for side in override["min"])
        result = replace(result, min=(result.min[0], max(result.min[1], h), max(result.min[2], w)))
    if override.get("max") is not None:
        h, w = (int(side) for side in override["max"])
        result = replace(result, max=(result.max[0], tighter(result.max[1], h), tighter(result.max[2], w)))
    if override.get("max_batch") is not None:
        result = result.narrowed(max_batch=int(override["max_batch"]))
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

    def cancel_impl(self) -> None:
        """Stop a model call in progress, from another thread (default: nothing; the call finishes and
        `infer` refuses its result). ONNX Runtime overrides it: its run can be terminated."""

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

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name} backend is not active; call activate() first or use it as a context manager")
        checked = {name: _checked_input(name, feed) for name in C.INPUT_NAMES}
        self._raise_if_cancelled()
        try:
            outputs = self.infer_impl(checked)
        except Exception:
            self._raise_if_cancelled()  # a terminated run fails with the backend's own error: report the cause
            raise
        self._raise_if_cancelled()
        return outputs

    # -- cancelling (Ctrl-C, server shutdown) ------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the model call in progress and refuse later ones until `reset_cancel()`. Safe to call from
        any thread, a signal handler's included: TensorRT and PyTorch stop at the next model call (between
        crops and batches), ONNX Runtime within its current run."""
        self._cancel_event.set()
        self.cancel_impl()

    def reset_cancel(self) -> None:
        self._cancel_event.clear()
        self.reset_cancel_impl()

    def reset_cancel_impl(self) -> None:
        """Undo `cancel_impl` (default: nothing)."""

    @property
    def cancelled(self) -> bool:
        return self._cancel_event.is_set()

    @property
    def _cancel_event(self) -> threading.Event:
        """Made on first use, so subclasses that skip `Backend.__init__` still cancel."""
        event = self.__dict__.get("_cancel_flag")
        return event if event is not None else self.__dict__.setdefault("_cancel_flag", threading.Event())

    def _raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise InferenceCancelled(f"{self.name} inference cancelled")

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
