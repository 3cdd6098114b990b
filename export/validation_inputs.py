"""Inputs of `lama-deploy validate`: seeded synthetic batches over the profile, or the user's own images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import UserError

#: (N, H, W): min side, small, non-square, odd 1/8 feature maps (25x41, 33x25), batch 2, typical, large.
DEFAULT_SHAPES = ((1, 16, 16), (1, 64, 64), (1, 256, 384), (1, 200, 328), (1, 264, 200), (2, 256, 256),
                  (1, 512, 512), (1, 1024, 1024))
#: --quick drops the 1024x1024 case (big-lama: ~10 s in PyTorch on CPU).
QUICK_MAX_SIDE = 512


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    from lama_deploy.profiles import parse_nhw

    shapes = [parse_nhw(part.strip(), "--shapes") for part in text.split(",") if part.strip()]
    for n, h, w in shapes:
        if n < 1 or not C.is_valid_size(h, w):
            raise UserError(f"--shapes {n}x{h}x{w}: need N >= 1 and H, W multiples of {C.SIZE_MULTIPLE}, >= {C.MIN_SIDE}")
    return shapes


def synthetic_feeds(shapes, seed: int) -> list[dict[str, np.ndarray]]:
    """One feed per shape: seeded images and LaMa training-style masks, mask kinds rotating between shapes."""
    from lama_model.synthetic import MASK_KINDS, sample_batch

    feeds = []
    for index, (n, h, w) in enumerate(shapes):
        kinds = MASK_KINDS[index % len(MASK_KINDS):] + MASK_KINDS[:index % len(MASK_KINDS)]
        image, mask = sample_batch(n, h, w, seed=seed + index, kinds=kinds)
        feeds.append({C.IMAGE: image, C.MASK: mask})
    return feeds


def folder_feeds(image_dir: str | Path, mask_dir: str | Path) -> list[dict[str, np.ndarray]]:
    """One feed per image with a same-named mask, padded at the bottom/right to multiples of 8 (contract rule)."""
    from lama_deploy.runtime.images import load_hole, load_image
    from lama_deploy.runtime.preprocess import make_feed, padded_size

    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {folder} not found")
    masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
    feeds = []
    for path in sorted(p for p in image_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.stem not in masks:
            raise UserError(f"no mask for {path.name} in {mask_dir} (masks are matched by file name without extension)")
        loaded = load_image(path)
        hole = load_hole(masks[path.stem], (loaded.width, loaded.height))
        feeds.append(make_feed([loaded.rgb], [hole], *padded_size(loaded.height, loaded.width)))
    if not feeds:
        raise UserError(f"no images in {image_dir}")
    return feeds


def make_feeds(shapes, quick: bool, seed: int, image_dir: str | None, mask_dir: str | None) -> list[dict]:
    if image_dir or mask_dir:
        if not (image_dir and mask_dir):
            raise UserError("give both --images and --masks (or neither for synthetic inputs)")
        return folder_feeds(image_dir, mask_dir)
    shapes = list(shapes or DEFAULT_SHAPES)
    if quick:
        shapes = [s for s in shapes if max(s[1:]) <= QUICK_MAX_SIDE]
    return synthetic_feeds(shapes, seed)
