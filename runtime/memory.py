"""Host-memory budget: how many bytes one inference may take, and what it costs per pixel on each backend.

A LaMa forward pass needs memory proportional to the tensor's pixel count (full-resolution activations,
ConvTranspose column buffers), on top of a fixed part (weights, session, Python). The constants below were
measured (peak RSS of one image in a fresh process, `python -m lama_deploy.scripts.bench.memory`, big-lama
fp32, random weights) and are declared once here; the Inpainter turns a budget into the largest tensor it may
feed, so an image that would not fit is cropped or downscaled by the size strategy, or refused in one line
before anything large is allocated. GPU backends use device memory, which this host budget does not govern.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from lama_deploy import contract as C
from lama_deploy.errors import UserError

from .images import InpaintInputError

#: Share of the memory available at start-up that the default budget takes (the rest is the system's).
DEFAULT_FRACTION = 0.7
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
#: Decoded image, hole, region copies and the pasted-back output: bytes per *input* pixel (uint8 planes).
IMAGE_BYTES_PER_PIXEL = 16


@dataclass(frozen=True)
class MemoryCost:
    """Peak host bytes of one inference: `fixed_bytes + bytes_per_pixel * N*H*W` of the model tensor."""

    backend: str
    bytes_per_pixel: float
    fixed_bytes: int

    def inference_bytes(self, pixels: int) -> int:
        return int(self.fixed_bytes + self.bytes_per_pixel * pixels)

    def max_tensor_pixels(self, budget: int, image_pixels: int = 0) -> int:
        """Largest tensor pixel count whose inference fits `budget` beside the decoded image."""
        free = budget - self.fixed_bytes - IMAGE_BYTES_PER_PIXEL * image_pixels
        return max(0, int(free / self.bytes_per_pixel))


# Measured on CPU with big-lama fp32 (random weights), one image per fresh process (see the module doc);
# smaller configurations need less, so for them the budget is conservative.
# ORT: 1.59 GB at 1024x1024 and 5.38 GB at 2048x2048 with the `subpixel_upsample` export (docs/benchmarks.md,
# Memory); fixed part rounded up.
ORT_CPU_COST = MemoryCost("onnxruntime-cpu", bytes_per_pixel=1210.0, fixed_bytes=450 * 10**6)
#: Exports from before `subpixel_upsample` (their metadata lacks it): the last ConvTranspose's column buffer
#: on top, 1.80 GB at 1024x1024 and 6.23 GB at 2048x2048.
ORT_CPU_COST_CONV_TRANSPOSE = MemoryCost("onnxruntime-cpu", bytes_per_pixel=1410.0, fixed_bytes=450 * 10**6)


def ort_cpu_cost(speedups: str) -> MemoryCost:
    """The ORT CPU cost of a graph from its `lama.speedups` metadata value."""
    return ORT_CPU_COST if C.SPEEDUP_SUBPIXEL in speedups.split(",") else ORT_CPU_COST_CONV_TRANSPOSE
#: PyTorch eager: 4.4 GB peak RSS at 2048x2048 in the benchmark (docs/benchmarks.md), ~0.9 GB with torch loaded.
TORCH_CPU_COST = MemoryCost("torch-cpu", bytes_per_pixel=850.0, fixed_bytes=900 * 10**6)


def parse_bytes(value: str | int | float) -> int:
    """'4GB' (10^9), '4GiB' (2^30), '512MB', '1500000000' -> bytes; one-line UserError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match[2].lower() not in _UNITS:
            raise UserError(f"cannot read memory size {str(value)[:40]!r}; write e.g. 4GB, 512MB, 3.5GiB or a byte count")
        number, unit = float(match[1]), match[2].lower()
    nbytes = int(number * _UNITS[unit])
    if nbytes <= 0:
        raise UserError(f"memory size must be positive, got {value!r}")
    return nbytes


def format_bytes(nbytes: float) -> str:
    return f"{nbytes / 10**9:.1f} GB" if nbytes >= 10**9 else f"{nbytes / 10**6:.0f} MB"


def available_memory() -> int | None:
    """Bytes the system can give this process now: MemAvailable, psutil, or physical memory; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported here
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def default_budget() -> int | None:
    """DEFAULT_FRACTION of the memory available now; None (no budget) where it cannot be found out."""
    available = available_memory()
    return None if available is None else int(available * DEFAULT_FRACTION)


def parse_budget_text(text: str) -> None:
    """Check a --max-memory value without resolving it: auto, none/off/unlimited, or a size (ValueError)."""
    if str(text).strip().lower() in ("auto", "none", "off", "unlimited"):
        return
    try:
        parse_bytes(text)
    except UserError as exc:
        raise ValueError(str(exc)) from None


def resolve_budget(max_memory: str | int | float | None) -> int | None:
    """The budget in bytes: an explicit size, 'auto'/None for the default, 'none'/'off' for no budget."""
    if max_memory is None or str(max_memory).lower() == "auto":
        return default_budget()
    if str(max_memory).lower() in ("none", "off", "unlimited"):
        return None
    return parse_bytes(max_memory)


def host_cost(backend: object) -> MemoryCost | None:
    """The host memory cost of `backend`, or None where inference runs in device memory (GPU)."""
    own = getattr(backend, "host_memory_cost", None)
    if callable(own):
        return own()
    device = str(getattr(backend, "device", "") or "")
    if getattr(backend, "name", "") == "torch" and device in ("", "cpu"):
        return TORCH_CPU_COST
    return None


class MemoryBudgetExceeded(InpaintInputError):
    """The image cannot be inpainted within the memory budget, even cropped or downscaled."""


def max_side_for(cost: MemoryCost, budget: int, image_pixels: int, size_multiple: int = C.SIZE_MULTIPLE) -> int:
    """Largest square tensor side (a size multiple) whose inference fits the budget; refuses one line if none.

    Raised before the model runs; the message says what would have been needed and what to do.
    """
    pixels = cost.max_tensor_pixels(budget, image_pixels)
    side = int(math.isqrt(pixels)) // size_multiple * size_multiple
    if side < C.MIN_SIDE:
        needed = cost.inference_bytes(C.MIN_SIDE * C.MIN_SIDE) + IMAGE_BYTES_PER_PIXEL * image_pixels
        raise MemoryBudgetExceeded(
            f"the memory budget of {format_bytes(budget)} (--max-memory) cannot hold even a {C.MIN_SIDE}x{C.MIN_SIDE} "
            f"inference of this {image_pixels / 1e6:.1f} MP image on {cost.backend} (needs about "
            f"{format_bytes(needed)}); raise --max-memory or send a smaller image")
    return side
