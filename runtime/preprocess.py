"""Pre- and post-processing exactly as the official LaMa predictor (`bin/predict.py`) does it.

- image: uint8 HWC -> float32 CHW in 0..1 (`/ 255`); mask: binary float32 1HW (1 = hole);
- both padded at the bottom/right to the model size with `np.pad(..., mode="symmetric")`
  (`pad_img_to_modulo`), and the output cropped back (`unpad_to_size`);
- output `np.clip(x * 255, 0, 255).astype(np.uint8)`: truncation, not rounding, as the predictor.

Then, unlike the predictor, the result is re-composited in uint8: the model composites in float, and
`x / 255 * 255` can truncate to `x - 1`, so pixels outside the hole are copied back from the input and
are bit-identical to it.
"""

from __future__ import annotations

import numpy as np

from lama_deploy import contract as C


def pad_bottom_right(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad a (..., H, W) array at the bottom/right to (height, width), mirroring (`symmetric`) like LaMa."""
    h, w = array.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"cannot pad {h}x{w} down to {height}x{width}")
    if (h, w) == (height, width):
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, height - h), (0, width - w)]
    return np.pad(array, pad, mode="symmetric")


def padded_size(height: int, width: int, multiple: int = C.SIZE_MULTIPLE) -> tuple[int, int]:
    return C.round_up(height, multiple), C.round_up(width, multiple)


def image_to_chw(rgb: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 -> float32 3 x H x W in 0..1."""
    return np.transpose(rgb, (2, 0, 1)).astype(np.float32) / 255


def hole_to_mask(hole: np.ndarray) -> np.ndarray:
    """bool H x W -> float32 1 x H x W (1 = hole)."""
    return hole[None].astype(np.float32)


def make_feed(rgbs: list[np.ndarray], holes: list[np.ndarray], height: int, width: int) -> dict[str, np.ndarray]:
    """One model batch from same-shape tensors: every item padded to (height, width)."""
    images = [pad_bottom_right(image_to_chw(rgb), height, width) for rgb in rgbs]
    masks = [pad_bottom_right(hole_to_mask(hole), height, width) for hole in holes]
    return {C.IMAGE: np.ascontiguousarray(np.stack(images)), C.MASK: np.ascontiguousarray(np.stack(masks))}


def to_uint8(array: np.ndarray) -> np.ndarray:
    """float 0..1 -> uint8 with the predictor's clip-and-truncate."""
    return np.clip(array * 255, 0, 255).astype(np.uint8)


def output_to_images(output: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """float32 N x 3 x H' x W' -> uint8 H x W x 3 per item, cropped back to each item's (h, w)."""
    return [to_uint8(np.transpose(output[i, :, :h, :w], (1, 2, 0))) for i, (h, w) in enumerate(sizes)]
