"""Folder mode: which files are images, and which mask belongs to which image (as LaMa's datasets lay them out)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .images import IMAGE_SUFFIXES  # the formats the API accepts, declared once

__all__ = ["IMAGE_SUFFIXES", "Pair", "list_images", "pair_files"]
_MASK_STEM = re.compile(r"^(?P<stem>.+)_mask\d*$")


@dataclass
class Pair:
    image: Path
    mask: Optional[Path]
    output_stem: str


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_files(images_dir: Path, masks_dir: Path) -> list[Pair]:
    """Each image with its mask(s): same stem, else `<stem>_mask*`; images without a mask get `mask=None`."""
    same_folder = images_dir.resolve() == masks_dir.resolve()
    masks = list_images(masks_dir)
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        by_stem.setdefault(mask.stem, []).append(mask)
        match = _MASK_STEM.match(mask.stem)
        if match:
            by_stem.setdefault(match["stem"] + "\0mask", []).append(mask)
    pairs = []
    for image in list_images(images_dir):
        if same_folder and _MASK_STEM.match(image.stem):
            continue  # LaMa layout: masks live next to their images
        exact = [m for m in by_stem.get(image.stem, []) if m.resolve() != image.resolve()]
        found = exact[:1] or by_stem.get(image.stem + "\0mask", [])
        if not found:
            pairs.append(Pair(image, None, image.stem))
        elif len(found) == 1:
            pairs.append(Pair(image, found[0], image.stem))
        else:
            pairs.extend(Pair(image, mask, mask.stem) for mask in found)
    return pairs
