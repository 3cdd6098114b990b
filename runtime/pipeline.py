"""The inpainting pipeline as public steps: prepare -> batches -> (the model) -> finish.

    pipeline = Pipeline(profile, options)                  # no backend: the Triton steps use it alone
    job = pipeline.prepare(image, mask)                   # load, threshold, plan (size strategy), cut
    for batch in pipeline.batches([job]):                 # model inputs grouped by tensor size
        batch.scatter(run_model(batch.feed))              # any runtime: Inpainter.run, Triton's model step
    result = pipeline.finish(job)                         # crop back, upscale, paste, composite, metadata

`Inpainter` is this pipeline plus a backend; the HTTP server calls the Inpainter, and Triton's python model,
ensemble pre-step and post-step call these same steps, so every entry point answers alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from lama_deploy import contract as C

from .backends.base import Profile
from .images import ImageSource, LoadedImage, load_image, load_mask, to_output_image
from .memory import MemoryBudgetExceeded, MemoryCost, format_bytes, max_side_for, resolve_budget
from .options import InpaintOptions
from .preprocess import make_feed, output_to_images
from .strategy import Plan, batch_limit, cut_inputs, paste_outputs, plan_image, tensor_size

RANDOM_WEIGHTS_NOTE = "random weights: the output is a plumbing demo, not inpainting"


@dataclass
class InpaintResult:
    image: Image.Image  # same size and mode as the input; carries its ICC profile, EXIF and DPI in `.info`
    strategy: str
    backend: str
    seconds: float
    notes: List[str] = field(default_factory=list)
    hole: Optional[np.ndarray] = None  # H x W bool: the pixels the model filled (as the mask was read)

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.image)


@dataclass
class Job:
    """One image on its way through the pipeline."""

    loaded: LoadedImage
    hole: np.ndarray
    plan: Plan
    started: float
    inputs: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (rgb, hole) per run, as fed
    outputs: List[Optional[np.ndarray]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


@dataclass
class Batch:
    """Model inputs of one tensor size: the feed (NCHW float32) and which job/run each item belongs to."""

    feed: Dict[str, np.ndarray]
    slots: List[Tuple[Job, int]]

    def scatter(self, output: np.ndarray) -> None:
        """Hand each job its run's output (cropped from the padded tensor)."""
        expected = (len(self.slots), 3, *self.feed[C.IMAGE].shape[2:])
        if tuple(output.shape) != expected:
            raise ValueError(f"model output is {list(output.shape)}, expected {list(expected)}")
        sizes = [job.inputs[index][0].shape[:2] for job, index in self.slots]
        for (job, index), image in zip(self.slots, output_to_images(output, sizes)):
            job.outputs[index] = image


class Pipeline:
    """The steps around the model, for one model's size range (`profile`, already narrowed and usable)."""

    def __init__(self, profile: Profile, options: InpaintOptions = InpaintOptions(),
                 memory_cost: Optional[MemoryCost] = None, backend_name: str = "",
                 random_weights: bool = False) -> None:
        self.profile = profile
        self.options = options
        self.memory_cost = memory_cost  # None: inference runs in device memory, no host budget applies
        #: host bytes one inference may take (None: no budget)
        self.max_memory = resolve_budget(options.max_memory) if memory_cost is not None else None
        self.backend_name = backend_name
        self.random_weights = random_weights

    # -- prepare -------------------------------------------------------------------------------------------
    def prepare(self, image: ImageSource, mask: ImageSource, options: Optional[InpaintOptions] = None) -> Job:
        """Load the image and mask, decide the hole, plan the size strategy and cut the model inputs."""
        options = options or self.options
        started = time.perf_counter()
        loaded = load_image(image, options.max_pixels, exif=options.exif)
        mask_in = load_mask(mask, (loaded.width, loaded.height), options.threshold, options.max_pixels,
                            exif=options.exif)
        plan = self.plan(mask_in.hole, options)
        job = Job(loaded, mask_in.hole, plan, started, notes=list(mask_in.notes))
        job.inputs = cut_inputs(loaded.rgb, mask_in.hole, plan)
        job.outputs = [None] * len(plan.runs)
        return job

    def plan(self, hole: np.ndarray, options: Optional[InpaintOptions] = None) -> Plan:
        """The size strategy's plan within the memory budget: a tensor too big for it narrows the size range to
        the largest square that fits, so the image is cropped or downscaled instead (or refused in one line)."""
        strategy = (options or self.options).strategy_options
        if self.max_memory is None or self.memory_cost is None:
            return plan_image(hole, self.profile, strategy)
        side = max_side_for(self.memory_cost, self.max_memory, hole.size, self.profile.size_multiple)
        height, width = tensor_size(*hole.shape, self.profile)
        if height * width <= side * side:
            return plan_image(hole, self.profile, strategy)
        narrowed = self.profile.narrowed(max_side=side)
        if narrowed.is_empty():
            raise MemoryBudgetExceeded(f"the memory budget of {format_bytes(self.max_memory)} (--max-memory) allows "
                                       f"at most {side}x{side}, below this model's minimum input; raise --max-memory")
        plan = plan_image(hole, narrowed.usable(), strategy)
        plan.notes.append(f"memory budget {format_bytes(self.max_memory)} (--max-memory): fed at most {side}x{side}")
        return plan

    def check_budget(self, width: int, height: int) -> None:
        """Refuse, before decoding, an image the memory budget cannot hold even cropped or downscaled."""
        if self.max_memory is not None and self.memory_cost is not None:
            max_side_for(self.memory_cost, self.max_memory, width * height, self.profile.size_multiple)

    # -- batches -------------------------------------------------------------------------------------------
    def batches(self, jobs: Sequence[Job], max_batch: Optional[int] = None) -> List[Batch]:
        """The model inputs of `jobs` grouped by tensor size (crops of one image and images of one size share a
        model call), split to the backend's batch limit, `max_batch` and the memory budget."""
        groups: Dict[Tuple[int, int], List[Tuple[Job, int]]] = {}
        for job in jobs:
            for index, run in enumerate(job.plan.runs):
                groups.setdefault(run.tensor_size, []).append((job, index))
        batches = []
        for (height, width), group in groups.items():
            step = self._batch_step(height, width, len(group), max_batch)
            for start in range(0, len(group), step):
                slots = group[start:start + step]
                inputs = [job.inputs[index] for job, index in slots]
                feed = make_feed([rgb for rgb, _ in inputs], [hole for _, hole in inputs], height, width)
                batches.append(Batch(feed, slots))
        return batches

    def _batch_step(self, height: int, width: int, count: int, max_batch: Optional[int]) -> int:
        step = batch_limit(self.profile) or count or 1
        if max_batch is not None:
            step = min(step, max_batch)
        if self.max_memory is not None and self.memory_cost is not None:
            step = min(step, max(1, self.memory_cost.max_tensor_pixels(self.max_memory) // (height * width)))
        return max(1, step)

    # -- finish --------------------------------------------------------------------------------------------
    def finish(self, job: Job) -> InpaintResult:
        """The result image: the model's pixels inside the hole, the input's own pixels (bit for bit) outside,
        in the input's size and mode, with its ICC profile, EXIF and DPI."""
        missing = [index for index, output in enumerate(job.outputs) if output is None]
        if missing:
            raise ValueError(f"runs {missing} of the plan have no model output; scatter every batch first")
        loaded, plan = job.loaded, job.plan
        generated = paste_outputs(loaded.rgb, plan, job.outputs) if plan.runs else loaded.rgb
        image = to_output_image(loaded, generated, job.hole)
        notes = loaded.notes + job.notes + plan.notes
        if self.random_weights and plan.runs:
            notes.append(RANDOM_WEIGHTS_NOTE)
        return InpaintResult(image, plan.strategy, self.backend_name, time.perf_counter() - job.started, notes,
                             job.hole)
