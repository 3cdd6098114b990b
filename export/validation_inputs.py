"""Inputs of `lama-deploy validate`: seeded synthetic batches over the profile, or the user's own images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lama_deploy import contract as C
from lama_deploy.errors import InputNotFound, UserError, one_line

#: (N, H, W): min side, small, non-square, odd 1/8 feature maps (25x41, 33x25), batch 2, typical, large.
DEFAULT_SHAPES = ((1, 16, 16), (1, 64, 64), (1, 256, 384), (1, 200, 328), (1, 264, 200), (2, 256, 256),
                  (1, 512, 512), (1, 1024, 1024))
#: --quick drops the 1024x1024 case. Measured for big-lama (random weights, 2 shared CPU cores under heavy load):
#: rebuilding the seeded model and its PyTorch reference for the 7 remaining shapes took 167 s of CPU time
#: (the ONNX Runtime run did not finish: numpy was being reinstalled under it), so minutes, not ~10 s.
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


def folder_feeds(image_dir: str | Path, mask_dir: str | Path | None) -> tuple[list[dict], list[str], list[str]]:
    """(feeds, image names, skipped-file lines): one feed per image and mask, matched like `lama-deploy inpaint`.

    Masks sit in their own folder or beside the images (`<stem>.*` or LaMa's `<stem>_mask*.*`); each image is
    padded at the bottom/right to multiples of 8 (contract rule). A file that cannot be read is skipped with
    a line, the others are checked.
    """
    from lama_deploy.runtime.folders import pair_files
    from lama_deploy.runtime.images import load_hole, load_image
    from lama_deploy.runtime.preprocess import make_feed, padded_size

    image_dir = Path(image_dir)
    mask_dir = Path(mask_dir) if mask_dir else image_dir
    for folder, flag in ((image_dir, "--images"), (mask_dir, "--masks")):
        if not folder.is_dir():
            raise InputNotFound(f"{flag} folder {folder} not found")
    feeds, names, skipped = [], [], []
    for pair in pair_files(image_dir, mask_dir):
        name = pair.image.name if pair.output_stem == pair.image.stem else f"{pair.image.name}+{pair.mask.name}"
        if pair.mask is None:
            skipped.append(f"{pair.image.name}: no mask in {mask_dir} (looked for {pair.image.stem}.*, "
                           f"{pair.image.stem}_mask*.*)")
            continue
        try:
            loaded = load_image(pair.image)
            hole = load_hole(pair.mask, (loaded.width, loaded.height), "auto")  # as `inpaint`: JPEG noise is no hole
        except UserError as exc:
            skipped.append(f"{name}: {one_line(exc)}")
            continue
        feeds.append(make_feed([loaded.rgb], [hole], *padded_size(loaded.height, loaded.width)))
        names.append(name)
    if not feeds:
        detail = f" ({skipped[0]})" if skipped else ""
        raise UserError(f"no usable image and mask pair in {image_dir}{detail}")
    return feeds, names, skipped


def make_feeds(shapes, quick: bool, seed: int, image_dir: str | None,
               mask_dir: str | None) -> tuple[list[dict], list[str], list[str]]:
    """(feeds, input names, skipped-file lines)."""
    if image_dir or mask_dir:
        if not image_dir:
            raise UserError("--masks needs --images (the folder of the images; masks may also sit beside them)")
        return folder_feeds(image_dir, mask_dir)
    shapes = list(shapes or DEFAULT_SHAPES)
    if quick:
        shapes = [s for s in shapes if max(s[1:]) <= QUICK_MAX_SIDE]
    return synthetic_feeds(shapes, seed), ["synthetic"] * len(shapes), []
