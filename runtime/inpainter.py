"""`Inpainter`: one object that inpaints images with any backend, at any resolution.

    from lama_deploy.runtime import Inpainter

    with Inpainter.from_path("big-lama.onnx") as inpainter:      # or .engine / .plan / .ckpt
        result = inpainter.inpaint("photo.jpg", "photo_mask.png")
        result.image.save("out.png")                               # same size and mode as photo.jpg
        print(result.strategy, result.backend, result.seconds, result.notes)

Images and masks may be file paths, bytes, PIL images or uint8 numpy arrays. Pixels outside the mask
are returned bit-identical to the input. Images above 800 px are inpainted one crop per hole region
(IOPaint's Crop; `strategy=` picks crop, window, resize or whole), sizes outside the model's range are
handled by padding, cropping around the mask or downscaling (see `lama_deploy.runtime.strategy`); the
result says which ran. Photos are turned upright by their EXIF orientation (`exif="keep"` to not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import UsageError

from .backends import Backend, BackendError, InferenceCancelled, Profile, create_backend, profile_from_override
from .images import ImageSource
from .memory import host_cost
from .options import InpaintOptions
from .pipeline import Batch, InpaintResult, Job, Pipeline

__all__ = ["InferenceError", "InpaintResult", "Inpainter"]


class InferenceError(RuntimeError):
    """The backend crashed while running a model it had loaded: not the user's input, so not a UserError.

    Commands exit 3 (internal error) with the traceback (lama_deploy/errors.py); the server answers its one-line
    500 and logs the details.
    """


class Inpainter:
    """Inpaints with one backend. Build it with `from_path` or `from_random_weights`; close it when done.

    The work is `Pipeline`'s public steps around `run` (the model call): `prepare` -> `batches` -> `run` ->
    `finish`; `inpaint`/`inpaint_batch` are exactly those steps in order."""

    def __init__(self, backend: Backend, options: Optional[InpaintOptions] = None,
                 model_path: Union[str, Path, None] = None, profile: Any = None, **changes: Any) -> None:
        self.options = (options or InpaintOptions()).replace(**changes)
        self.backend = backend
        self.model_path = Path(model_path) if model_path is not None else None
        self._profile_override = profile
        backend.activate()
        try:
            self.pipeline = Pipeline(self._effective_profile(), self.options, host_cost(backend), backend.name,
                                     C.is_random_weights(backend.weights))
        except Exception:
            backend.deactivate()
            raise

    def _effective_profile(self) -> Profile:
        profile = profile_from_override(self.backend.profile, self._profile_override).narrowed(
            max_side=self.options.max_side)
        if profile.is_empty():
            raise UsageError(f"the model's size range {profile.as_dict()} holds no valid size "
                             f"(H and W multiples of {profile.size_multiple}, at least {C.MIN_SIDE}); raise --max-side or "
                             f"use a model with a wider profile")
        return profile.usable()

    @classmethod
    def from_path(cls, path: Union[str, Path], options: Optional[InpaintOptions] = None, profile: Any = None,
                  **changes: Any) -> "Inpainter":
        """`.engine`/`.plan` -> TensorRT, `.onnx` -> ONNX Runtime, `.ckpt`/`.pt`/`.pth` -> PyTorch (or
        `backend=`); `options` (or keywords naming its fields) say the rest."""
        options = (options or InpaintOptions()).replace(**changes)
        return cls(create_model_backend(path, options), options, path, profile)

    @classmethod
    def from_random_weights(cls, config: str = "tiny", seed: int = 0, options: Optional[InpaintOptions] = None,
                            **changes: Any) -> "Inpainter":
        """Seeded random weights on the PyTorch backend: a plumbing demo, not trained LaMa (it says so)."""
        from .backends.pytorch.backend import TorchBackend

        options = (options or InpaintOptions()).replace(**changes)
        backend = TorchBackend.from_random_weights(config, seed, options.device, **torch_mode(options))
        return cls(backend, options)

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def profile(self) -> Profile:
        return self.pipeline.profile

    @property
    def memory_cost(self) -> Any:
        return self.pipeline.memory_cost

    @property
    def max_memory(self) -> Optional[int]:
        return self.pipeline.max_memory

    @property
    def weights(self) -> Optional[str]:
        return self.backend.weights

    @property
    def random_weights(self) -> bool:
        return C.is_random_weights(self.weights)

    def info(self) -> Dict[str, Any]:
        """What the Inpainter runs and with which options (the server's /health shows it)."""
        facts = {
            "backend": self.backend.name,
            "model": str(self.model_path) if self.model_path else None,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "profile": self.profile.as_dict(),
            "backend_profile": self.backend.profile.as_dict(),
            "size_multiple": self.profile.size_multiple,
            "options": self.options.as_text(),
            "max_memory": self.max_memory,
        }
        facts.update(self.backend.describe())
        return facts

    # -- the steps -----------------------------------------------------------------------------------------
    def prepare(self, image: ImageSource, mask: ImageSource, options: Optional[InpaintOptions] = None) -> Job:
        return self.pipeline.prepare(image, mask, options)

    def batches(self, jobs: Sequence[Job]) -> List[Batch]:
        return self.pipeline.batches(jobs)

    def run(self, batch: Batch) -> None:
        """The model step: one backend call for the batch, its outputs handed to their jobs."""
        batch.scatter(self.infer(batch.feed))

    def finish(self, job: Job) -> InpaintResult:
        return self.pipeline.finish(job)

    def infer(self, feed: Dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self.backend.infer(feed)[C.OUTPUT]
        except (BackendError, InferenceCancelled):
            raise
        except Exception as exc:  # a backend's own error type, one line for the user
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InferenceError(f"{self.backend.name} inference failed on {feed[C.IMAGE].shape}: {first}") from exc

    # -- inpainting ----------------------------------------------------------------------------------------
    def inpaint(self, image: ImageSource, mask: ImageSource, threshold: Any = None,
                options: Optional[InpaintOptions] = None) -> InpaintResult:
        """Inpaint one image; pixels where mask > threshold are the hole (`options` for this call only)."""
        return self.inpaint_batch([image], [mask], threshold, options)[0]

    def inpaint_batch(self, images: Sequence[ImageSource], masks: Sequence[ImageSource], threshold: Any = None,
                      options: Optional[InpaintOptions] = None) -> List[InpaintResult]:
        """Inpaint several images; those fed at the same tensor size share one model call (N > 1)."""
        if len(images) != len(masks):
            raise UsageError(f"got {len(images)} images but {len(masks)} masks; pass one mask per image")
        options = options or self.options
        if threshold is not None:
            options = options.replace(threshold=threshold)
        jobs = [self.prepare(image, mask, options) for image, mask in zip(images, masks)]
        for batch in self.batches(jobs):
            self.run(batch)
        return [self.finish(job) for job in jobs]

    # -- cancelling (issue 24): a hook kept apart from the steps above ------------------------------------------
    def cancel(self) -> None:
        """Stop the inference in progress (from any thread: a signal handler, a server shutting down); it
        raises `InferenceCancelled` and makes no result. Later calls are refused until `reset_cancel()`."""
        self.backend.cancel()

    def reset_cancel(self) -> None:
        self.backend.reset_cancel()

    # -- cancelling: from any thread (a signal handler, a server shutting down) -------------------------------
    def cancel(self) -> None:
        """Stop the inference in progress; it raises `InferenceCancelled` and makes no result. Later calls are
        refused until `reset_cancel()`."""
        self.backend.cancel()

    def reset_cancel(self) -> None:
        self.backend.reset_cancel()

    # -- lifecycle -----------------------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.deactivate()

    def __enter__(self) -> "Inpainter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Inpainter(backend={self.backend.name!r}, model={str(self.model_path) if self.model_path else None!r})"


def torch_mode(options: InpaintOptions) -> Dict[str, Any]:
    """The PyTorch backend's mode keywords from the options (None: the backend's default)."""
    return {"precision": options.precision, "cuda_graphs": None if options.cuda_graphs == "auto" else options.cuda_graphs,
            "compile": None if options.compile == "off" else options.compile}


def create_model_backend(path: Union[str, Path], options: InpaintOptions) -> Backend:
    """The (inactive) backend for a model file, configured by the options."""
    return create_backend(path, backend=options.backend, device=options.device, providers=options.providers,
                          **torch_mode(options))
