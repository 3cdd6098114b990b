"""Seeded test data: natural-looking images and LaMa's training-style masks (numpy only).

The masks follow the paper's "large mask" generators (advimman/lama, `saicinpainting/training/data/masks.py`):
thick irregular brush strokes ("wide") and rectangles ("box"), plus a thin "narrow" variant. They are
used to calibrate random weights, to validate exports and to benchmark, never to claim quality.
"""

from __future__ import annotations

import numpy as np

MASK_KINDS = ("wide", "box", "narrow")


def synthetic_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in 0..1: smooth colour gradients, a periodic texture, soft blobs and an edge."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        gradient = 0.5 + 0.3 * (a * xx + b * yy) + 0.1 * c
        freq = rng.uniform(4, 24, 2)
        phase = rng.uniform(0, 2 * np.pi)
        texture = 0.12 * np.sin(2 * np.pi * (freq[0] * xx + freq[1] * yy) + phase)
        channels.append(gradient + texture)
    image = np.stack(channels, axis=-1)
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = rng.uniform(0, 1, 2)
        radius = rng.uniform(0.05, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        image += blob[..., None] * rng.uniform(-0.4, 0.4, 3).astype(np.float32)
    edge = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) > rng.uniform(-0.5, 0.5)
    image += edge[..., None] * rng.uniform(-0.15, 0.15, 3).astype(np.float32)
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


def _stroke_mask(height: int, width: int, rng: np.random.Generator, max_width: int, max_vertices: int,
                 max_strokes: int) -> np.ndarray:
    mask = np.zeros((height, width), np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        y, x = rng.uniform(0, height), rng.uniform(0, width)
        for _ in range(int(rng.integers(1, max_vertices + 1))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.1, 0.4) * max(height, width)
            radius = rng.uniform(2, max_width) / 2
            ny = np.clip(y + length * np.sin(angle), 0, height - 1)
            nx = np.clip(x + length * np.cos(angle), 0, width - 1)
            # Distance from every pixel to the segment (y, x)-(ny, nx): a round-capped thick line.
            dy, dx = ny - y, nx - x
            t = np.clip(((yy - y) * dy + (xx - x) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
            dist2 = (yy - (y + t * dy)) ** 2 + (xx - (x + t * dx)) ** 2
            mask[dist2 <= radius**2] = 1
            y, x = ny, nx
    return mask


def _box_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        bh = int(rng.uniform(0.15, 0.5) * height) + 1
        bw = int(rng.uniform(0.15, 0.5) * width) + 1
        top = int(rng.integers(0, max(height - bh, 0) + 1))
        left = int(rng.integers(0, max(width - bw, 0) + 1))
        mask[top:top + bh, left:left + bw] = 1
    return mask


def large_mask(height: int, width: int, rng: np.random.Generator, kind: str = "wide") -> np.ndarray:
    """(H, W) float32 mask, 1 = hole. Widths scale with the image so masks stay 'large' at any size."""
    scale = max(height, width) / 256
    if kind == "wide":
        mask = _stroke_mask(height, width, rng, max_width=max(4, int(100 * scale)), max_vertices=5, max_strokes=4)
    elif kind == "narrow":
        mask = _stroke_mask(height, width, rng, max_width=max(3, int(16 * scale)), max_vertices=6, max_strokes=5)
    elif kind == "box":
        mask = _box_mask(height, width, rng)
    else:
        raise ValueError(f"unknown mask kind {kind!r}; choose one of {MASK_KINDS}")
    if not mask.any():
        mask[height // 4: height // 2 + 1, width // 4: width // 2 + 1] = 1
    return mask


def sample_batch(batch: int, height: int, width: int, seed: int, kinds: tuple[str, ...] = MASK_KINDS
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(image [N,3,H,W], mask [N,1,H,W]) float32, NCHW, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for i in range(batch):
        images.append(synthetic_image(height, width, rng).transpose(2, 0, 1))
        masks.append(large_mask(height, width, rng, kinds[i % len(kinds)])[None])
    return np.stack(images), np.stack(masks)


def demo_scene(height: int = 384, width: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic picture with periodic structure (a fence, brick wall, sky) and a mask over part of it.

    (H, W, 3) uint8 image and (H, W) uint8 mask (255 = hole): the kind of scene LaMa's Fourier units are
    good at, drawn procedurally so the demo needs no downloaded photo.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = 0.55 * height
    sky = np.stack([0.45 + 0.3 * yy / height, 0.65 + 0.2 * yy / height, np.full_like(yy, 0.95)], -1)
    sun = np.exp(-((yy - 0.18 * height) ** 2 + (xx - 0.78 * width) ** 2) / (2 * (0.06 * height) ** 2))
    sky += sun[..., None] * np.array([0.5, 0.4, 0.0], np.float32)
    brick_h, brick_w = max(height // 24, 4), max(width // 12, 8)
    row = (yy // brick_h).astype(int)
    shifted = xx + (row % 2) * brick_w / 2
    mortar = ((yy % brick_h) < 2) | ((shifted % brick_w) < 2)
    shade = 0.85 + 0.15 * np.sin(row * 1.7 + (shifted // brick_w) * 2.3)
    wall = np.stack([0.62 * shade, 0.32 * shade, 0.22 * shade], -1)
    wall[mortar] = (0.78, 0.76, 0.72)
    image = np.where((yy < horizon)[..., None], sky, wall)
    picket_w = max(width // 32, 3)
    pickets = ((xx // picket_w) % 2 == 0) & (yy > horizon - 0.18 * height) & (yy < horizon + 0.05 * height)
    rail = (np.abs(yy - (horizon - 0.1 * height)) < max(height // 96, 2)) & (xx > 0)
    image[pickets | rail] = (0.93, 0.93, 0.9)
    mask = np.zeros((height, width), np.uint8)
    cy, cx = int(0.52 * height), int(0.42 * width)
    ry, rx = int(0.16 * height), int(0.14 * width)
    mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 255
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask
