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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from lama_deploy import contract as C
from lama_deploy.errors import UsageError

from .backends import Backend, BackendError, Profile, create_backend, profile_from_override
from .images import (DEFAULT_EXIF, DEFAULT_MAX_PIXELS, ImageSource, LoadedImage, check_exif, load_mask, load_image,
                     resolve_threshold, to_output_image)
from .memory import MemoryBudgetExceeded, format_bytes, host_cost, max_side_for, resolve_budget
from .preprocess import make_feed, output_to_images
from .strategy import (DEFAULT_CONTEXT_MARGIN, Plan, StrategyOptions, batch_limit, cut_inputs, paste_outputs, plan_image,
                       strategy_name, tensor_size)


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
    inputs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (rgb, hole) per run, as fed
    outputs: list[np.ndarray] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Inpainter:
    """Inpaints with one backend. Build it with `from_path` or `from_random_weights`; close it when done."""

    def __init__(self, backend: Backend, model_path: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 threshold: float | str = 0, profile: Any = None, max_side: int | None = None,
                 context_margin: int = DEFAULT_CONTEXT_MARGIN, strategy: str | StrategyOptions = "auto",
                 exif: str = DEFAULT_EXIF, max_memory: str | int | None = "auto") -> None:
        self.threshold = resolve_threshold(threshold)
        #: host bytes one inference may take (None: no budget); "auto" = a share of the memory available now
        self.max_memory = resolve_budget(max_memory)
        self.exif = check_exif(exif)
        self.strategy = _strategy_options(strategy, context_margin)
        self.backend = backend
        self.model_path = Path(model_path) if model_path is not None else None
        self.max_pixels = int(max_pixels)
        self.context_margin = self.strategy.margin
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
            raise UsageError(f"the model's size range {profile.as_dict()} holds no valid size "
                             f"(H and W multiples of {profile.size_multiple}, at least {C.MIN_SIDE}); raise --max-side or "
                             f"use a model with a wider profile")
        return profile.usable()

    @classmethod
    def from_path(cls, path: str | Path, backend: str = "auto", device: str | None = None,
                  providers: Sequence[Any] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  threshold: float | str = 0, profile: Any = None, max_side: int | None = None,
                  context_margin: int = DEFAULT_CONTEXT_MARGIN, strategy: str | StrategyOptions = "auto",
                  exif: str = DEFAULT_EXIF, precision: str | None = None, cuda_graphs: bool | str | None = None,
                  max_memory: str | int | None = "auto", compile: str | None = None) -> "Inpainter":
        """`.engine`/`.plan` -> TensorRT, `.onnx` -> ONNX Runtime, `.ckpt`/`.pt`/`.pth` -> PyTorch (or `backend=`).

        `precision` (fp32/fp16/bf16), `cuda_graphs` (True/False/"auto") and `compile` (off/default/max-autotune)
        apply to the PyTorch backend; `max_memory` is the host-memory budget of one inference (see
        `lama_deploy.runtime.memory`)."""
        instance = create_backend(path, backend=backend, device=device, providers=providers, precision=precision,
                                  cuda_graphs=cuda_graphs, compile=compile)
        return cls(instance, path, max_pixels, threshold, profile, max_side, context_margin, strategy, exif, max_memory)

    @classmethod
    def from_random_weights(cls, config: str = "tiny", seed: int = 0, device: str | None = None,
                            **kwargs: Any) -> "Inpainter":
        """Seeded random weights on the PyTorch backend: a plumbing demo, not trained LaMa (it says so)."""
        from .backends.torch_backend import TorchBackend

        mode = {key: kwargs.pop(key) for key in ("precision", "cuda_graphs", "compile") if key in kwargs}
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
            "strategy": self.strategy.strategy,
            "crop_trigger": self.strategy.crop_trigger,
            "resize_limit": self.strategy.resize_limit,
            "exif": self.exif,
            "max_memory": self.max_memory if self.memory_cost else None,
        }
        facts.update(self.backend.describe())
        return facts

    # -- inpainting ----------------------------------------------------------------------------------------
    def inpaint(self, image: ImageSource, mask: ImageSource, threshold: float | str | None = None) -> InpaintResult:
        """Inpaint one image; pixels where mask > threshold are the hole."""
        return self.inpaint_batch([image], [mask], threshold)[0]

    def inpaint_batch(self, images: Sequence[ImageSource], masks: Sequence[ImageSource],
                      threshold: float | str | None = None) -> list[InpaintResult]:
        """Inpaint several images; those fed at the same tensor size share one model call (N > 1)."""
        if len(images) != len(masks):
            raise UsageError(f"got {len(images)} images but {len(masks)} masks; pass one mask per image")
        threshold = self.threshold if threshold is None else resolve_threshold(threshold)
        jobs = [self._prepare(image, mask, threshold) for image, mask in zip(images, masks)]
        self._run(jobs)
        return [self._finish(job) for job in jobs]

    def _prepare(self, image: ImageSource, mask: ImageSource, threshold: float) -> _Job:
        started = time.perf_counter()
        loaded = load_image(image, self.max_pixels, exif=self.exif)
        mask_in = load_mask(mask, (loaded.width, loaded.height), threshold, self.max_pixels, exif=self.exif)
        job = _Job(loaded, mask_in.hole, self._plan(mask_in.hole), started)
        job.inputs, job.notes = cut_inputs(loaded.rgb, mask_in.hole, job.plan), mask_in.notes
        return job

    def _plan(self, hole: np.ndarray) -> Plan:
        """The size strategy's plan, within the memory budget: a tensor too big for it narrows the profile
        to the largest square that fits, so the image is cropped or downscaled instead (or refused)."""
        if self.max_memory is None or self.memory_cost is None:
            return plan_image(hole, self.profile, self.strategy)
        side = max_side_for(self.memory_cost, self.max_memory, hole.size, self.profile.size_multiple)
        height, width = tensor_size(*hole.shape, self.profile)
        if height * width <= side * side:
            return plan_image(hole, self.profile, self.strategy)
        narrowed = self.profile.narrowed(max_side=side)
        if narrowed.is_empty():
            raise MemoryBudgetExceeded(f"the memory budget of {format_bytes(self.max_memory)} (--max-memory) allows "
                                       f"at most {side}x{side}, below this model's minimum input; raise --max-memory")
        plan = plan_image(hole, narrowed.usable(), self.strategy)
        plan.notes.append(f"memory budget {format_bytes(self.max_memory)} (--max-memory): fed at most {side}x{side}")
        return plan

    def _batch_step(self, height: int, width: int, count: int) -> int:
        """Inputs per model call: the backend's and the strategy's limit, and no more than the memory budget holds."""
        step = batch_limit(self.profile, (height, width), self.strategy) or count or 1
        if self.max_memory is not None and self.memory_cost is not None:
            step = min(step, max(1, self.memory_cost.max_tensor_pixels(self.max_memory) // (height * width)))
        return step

    def _run(self, jobs: list[_Job]) -> None:
        """Group the jobs by tensor size and run each group in batches the backend accepts."""
        groups: dict[tuple[int, int], list[tuple[_Job, int]]] = {}  # crops of one image batch like images
        for job in jobs:
            job.outputs = [np.empty(0)] * len(job.plan.runs)
            for index, run in enumerate(job.plan.runs):
                groups.setdefault(run.tensor_size, []).append((job, index))
        for (height, width), group in groups.items():
            step = self._batch_step(height, width, len(group))
            for start in range(0, len(group), step):
                chunk = [job.inputs[index] for job, index in group[start:start + step]]
                output = self._infer(make_feed([rgb for rgb, _ in chunk], [hole for _, hole in chunk], height, width))
                for (job, index), result in zip(group[start:start + step],
                                                output_to_images(output, [rgb.shape[:2] for rgb, _ in chunk])):
                    job.outputs[index] = result

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
        generated = paste_outputs(loaded.rgb, plan, job.outputs) if plan.runs else loaded.rgb
        image = to_output_image(loaded, generated, job.hole)
        notes = loaded.notes + job.notes + plan.notes
        if self.random_weights and plan.runs:
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



def _strategy_options(strategy: str | StrategyOptions, margin: int) -> StrategyOptions:
    """`strategy=` as a name or full options; a name takes `context_margin` and IOPaint's other defaults."""
    if isinstance(strategy, StrategyOptions):
        return strategy
    return StrategyOptions(strategy_name(strategy), margin=int(margin))
