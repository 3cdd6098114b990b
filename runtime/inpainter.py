"""`Inpainter`: one object that inpaints images with any backend, at any resolution.

    from lama_deploy.runtime import Inpainter

    with Inpainter.from_path("big-lama.onnx") as inpainter:      # or .engine / .plan / .ckpt
        result = inpainter.inpaint("photo.jpg", "photo_mask.png")
        result.image.save("out.png")                               # same size and mode as photo.jpg
        print(result.strategy, result.backend, result.seconds, result.notes)

Images and masks may be file paths, bytes, PIL images or uint8 numpy arrays. Pixels outside the mask
are returned bit-identical to the input. Sizes outside the model's range are handled by padding,
cropping around the mask or downscaling (see `lama_deploy.runtime.strategy`); the result says which ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from lama_deploy import contract as C

from .backends import Backend, BackendError, Profile, create_backend, profile_from_override
from .images import DEFAULT_MAX_PIXELS, ImageSource, LoadedImage, check_threshold, load_hole, load_image, to_output_image
from .memory import MemoryBudgetExceeded, format_bytes, host_cost, max_side_for, resolve_budget
from .preprocess import make_feed, output_to_images
from .strategy import DEFAULT_CONTEXT_MARGIN, Plan, plan_image, tensor_size


class InferenceError(BackendError):
    """The backend failed while running the model."""


@dataclass
class InpaintResult:
    image: Image.Image
    strategy: str
    backend: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.image)


@dataclass
class _Job:
    """One image on its way through the model."""

    loaded: LoadedImage
    hole: np.ndarray
    plan: Plan
    started: float
    rgb: np.ndarray | None = None  # the region as fed to the model (h, w, 3)
    region_hole: np.ndarray | None = None
    output: np.ndarray | None = None


class Inpainter:
    """Inpaints with one backend. Build it with `from_path` or `from_random_weights`; close it when done."""

    def __init__(self, backend: Backend, model_path: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 threshold: float = 0, profile: Any = None, max_side: int | None = None,
                 context_margin: int = DEFAULT_CONTEXT_MARGIN, max_memory: str | int | None = "auto") -> None:
        check_threshold(threshold)
        #: host bytes one inference may take (None: no budget); "auto" = a share of the memory available now
        self.max_memory = resolve_budget(max_memory)
        self.backend = backend
        self.model_path = Path(model_path) if model_path is not None else None
        self.max_pixels = int(max_pixels)
        self.threshold = threshold
        self.context_margin = int(context_margin)
        self._profile_override = profile
        self._max_side = max_side
        backend.activate()
        try:
            self.memory_cost = host_cost(backend)  # None on GPU backends: device memory is theirs to report
            self.profile = self._effective_profile()
        except Exception:
            backend.deactivate()
            raise

    def _effective_profile(self) -> Profile:
        profile = profile_from_override(self.backend.profile, self._profile_override).narrowed(max_side=self._max_side)
        if profile.is_empty():
            raise ValueError(f"the model's size range {profile.as_dict()} holds no valid size "
                             f"(H and W multiples of {profile.size_multiple}, at least {C.MIN_SIDE}); widen it")
        return profile.usable()

    @classmethod
    def from_path(cls, path: str | Path, backend: str = "auto", device: str | None = None,
                  providers: Sequence[Any] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, threshold: float = 0,
                  profile: Any = None, max_side: int | None = None,
                  context_margin: int = DEFAULT_CONTEXT_MARGIN, precision: str | None = None,
                  cuda_graphs: bool | str | None = None, max_memory: str | int | None = "auto") -> "Inpainter":
        """`.engine`/`.plan` -> TensorRT, `.onnx` -> ONNX Runtime, `.ckpt`/`.pt`/`.pth` -> PyTorch (or `backend=`).

        `precision` (fp32/fp16/bf16) and `cuda_graphs` (True/False/"auto") apply to the PyTorch backend;
        `max_memory` is the host-memory budget of one inference (see `lama_deploy.runtime.memory`)."""
        instance = create_backend(path, backend=backend, device=device, providers=providers, precision=precision,
                                  cuda_graphs=cuda_graphs)
        return cls(instance, path, max_pixels, threshold, profile, max_side, context_margin, max_memory)

    @classmethod
    def from_random_weights(cls, config: str = "tiny", seed: int = 0, device: str | None = None,
                            **kwargs: Any) -> "Inpainter":
        """Seeded random weights on the PyTorch backend: a plumbing demo, not trained LaMa (it says so)."""
        from .backends.torch_backend import TorchBackend

        mode = {key: kwargs.pop(key) for key in ("precision", "cuda_graphs") if key in kwargs}
        return cls(TorchBackend.from_random_weights(config, seed, device, **mode), None, **kwargs)

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def weights(self) -> str | None:
        return self.backend.weights

    @property
    def random_weights(self) -> bool:
        return C.is_random_weights(self.weights)

    def info(self) -> dict[str, Any]:
        facts = {
            "backend": self.backend.name,
            "model": str(self.model_path) if self.model_path else None,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "profile": self.profile.as_dict(),
            "backend_profile": self.backend.profile.as_dict(),
            "size_multiple": self.profile.size_multiple,
            "max_pixels": self.max_pixels,
            "threshold": self.threshold,
            "context_margin": self.context_margin,
            "max_memory": self.max_memory if self.memory_cost else None,
        }
        facts.update(self.backend.describe())
        return facts

    # -- inpainting ----------------------------------------------------------------------------------------
    def inpaint(self, image: ImageSource, mask: ImageSource, threshold: float | None = None) -> InpaintResult:
        """Inpaint one image; pixels where mask > threshold are the hole."""
        return self.inpaint_batch([image], [mask], threshold)[0]

    def inpaint_batch(self, images: Sequence[ImageSource], masks: Sequence[ImageSource],
                      threshold: float | None = None) -> list[InpaintResult]:
        """Inpaint several images; those fed at the same tensor size share one model call (N > 1)."""
        if len(images) != len(masks):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks; pass one mask per image")
        threshold = self.threshold if threshold is None else threshold
        jobs = [self._prepare(image, mask, threshold) for image, mask in zip(images, masks)]
        self._run(jobs)
        return [self._finish(job) for job in jobs]

    def _prepare(self, image: ImageSource, mask: ImageSource, threshold: float) -> _Job:
        started = time.perf_counter()
        loaded = load_image(image, self.max_pixels)
        hole = load_hole(mask, (loaded.width, loaded.height), threshold, self.max_pixels)
        job = _Job(loaded, hole, self._plan(hole), started)
        if job.plan.strategy == "empty-mask":
            return job
        rows, cols = job.plan.region.slices
        job.rgb, job.region_hole = loaded.rgb[rows, cols], hole[rows, cols]
        if job.plan.strategy == "resize":
            job.rgb, job.region_hole = _downscale(job.rgb, job.region_hole, job.plan.model_size)
        return job

    def _plan(self, hole: np.ndarray) -> Plan:
        """The size strategy's plan, within the memory budget: a tensor too big for it narrows the profile
        to the largest square that fits, so the image is cropped or downscaled instead (or refused)."""
        if self.max_memory is None or self.memory_cost is None:
            return plan_image(hole, self.profile, self.context_margin)
        side = max_side_for(self.memory_cost, self.max_memory, hole.size, self.profile.size_multiple)
        height, width = tensor_size(*hole.shape, self.profile)
        if height * width <= side * side:
            return plan_image(hole, self.profile, self.context_margin)
        narrowed = self.profile.narrowed(max_side=side)
        if narrowed.is_empty():
            raise MemoryBudgetExceeded(f"the memory budget of {format_bytes(self.max_memory)} (--max-memory) allows "
                                       f"at most {side}x{side}, below this model's minimum input; raise --max-memory")
        plan = plan_image(hole, narrowed.usable(), self.context_margin)
        plan.notes.append(f"memory budget {format_bytes(self.max_memory)} (--max-memory): fed at most {side}x{side}")
        return plan

    def _batch_step(self, height: int, width: int, count: int) -> int:
        """Images per model call: the backend's maximum, and no more than the memory budget holds."""
        step = self.profile.max_batch or count or 1
        if self.max_memory is not None and self.memory_cost is not None:
            step = min(step, max(1, self.memory_cost.max_tensor_pixels(self.max_memory) // (height * width)))
        return step

    def _run(self, jobs: list[_Job]) -> None:
        """Group the jobs by tensor size and run each group in batches the backend accepts."""
        groups: dict[tuple[int, int], list[_Job]] = {}
        for job in jobs:
            if job.plan.strategy != "empty-mask":
                groups.setdefault(job.plan.tensor_size, []).append(job)
        for (height, width), group in groups.items():
            step = self._batch_step(height, width, len(group))
            for start in range(0, len(group), step):
                chunk = group[start:start + step]
                feed = make_feed([j.rgb for j in chunk], [j.region_hole for j in chunk], height, width)
                output = self._infer(feed)
                for job, result in zip(chunk, output_to_images(output, [j.rgb.shape[:2] for j in chunk])):
                    job.output = result

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self.backend.infer(feed)[C.OUTPUT]
        except BackendError:
            raise
        except Exception as exc:  # a backend's own error type, one line for the user
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InferenceError(f"{self.backend.name} inference failed on {feed[C.IMAGE].shape}: {first}") from exc

    def _finish(self, job: _Job) -> InpaintResult:
        loaded, plan = job.loaded, job.plan
        generated = loaded.rgb
        if job.output is not None:
            output = job.output
            if plan.strategy == "resize":
                output = _upscale(output, (plan.region.height, plan.region.width))
            generated = loaded.rgb.copy()
            rows, cols = plan.region.slices
            generated[rows, cols] = output
        image = to_output_image(loaded, generated, job.hole)
        notes = loaded.notes + plan.notes
        if self.random_weights and job.output is not None:
            notes.append("random weights: the output is a plumbing demo, not inpainting")
        return InpaintResult(image, plan.strategy, self.backend.name, time.perf_counter() - job.started, notes)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.deactivate()

    def __enter__(self) -> "Inpainter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Inpainter(backend={self.backend.name!r}, model={str(self.model_path) if self.model_path else None!r})"


def _downscale(rgb: np.ndarray, hole: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image with LANCZOS; hole with a box filter and > 0 so every partly-masked pixel stays a hole."""
    h, w = size
    small_rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))
    small_hole = np.asarray(Image.fromarray(hole.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX)) > 0
    return small_rgb, small_hole


def _upscale(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))
