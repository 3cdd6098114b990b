"""Command-line options for how inputs are read and large images are handled, shared by `inpaint` and `serve`.

One parser fragment and one converter, so both commands spell the options alike and hand the
`Inpainter` the same keywords (`threshold`, `exif`, `strategy`).
"""

from __future__ import annotations

import argparse
from typing import Any

from lama_deploy.runtime.images import DEFAULT_EXIF, EXIF_MODES, THRESHOLD_PRESETS, resolve_threshold
from lama_deploy.runtime.strategy import (ALIASES, DEFAULT_CONTEXT_MARGIN, DEFAULT_CROP_TRIGGER, DEFAULT_RESIZE_LIMIT, STRATEGIES,
                       StrategyOptions, strategy_name)


def _threshold(text: str) -> float:
    try:
        return resolve_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _strategy(text: str) -> str:
    try:
        return strategy_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_input_options(parser: argparse.ArgumentParser, lossy_mask_threshold: float | None = None) -> None:
    """--threshold, --exif, --strategy, --margin, --crop-trigger, --resize-limit.

    With `lossy_mask_threshold` (mask files), --threshold defaults to None: 0 for lossless masks, that value
    for JPEG/WebP masks, whose compression noise is not a hole.
    """
    presets = ", ".join(f"{name} = {value}" for name, value in THRESHOLD_PRESETS.items())
    default = "default 0, the official predictor's" if lossy_mask_threshold is None else \
        f"default 0, the official predictor's; {lossy_mask_threshold:g} for JPEG/WebP masks"
    parser.add_argument("--threshold", type=_threshold, default=0 if lossy_mask_threshold is None else None, metavar="T",
                        help=f"mask > T (0..254) is a hole; presets: {presets} ({default})")
    parser.add_argument("--exif", choices=EXIF_MODES, default=DEFAULT_EXIF,
                        help="apply: turn images and masks upright by their EXIF orientation (default, as IOPaint); "
                             "keep: use pixels as stored")
    names = "|".join(STRATEGIES + tuple(ALIASES))
    parser.add_argument("--strategy", type=_strategy, default="auto", metavar=names.replace("|", ","),
                        help="large images: crop = one crop per hole region above --crop-trigger (auto, as IOPaint); "
                             "window = one crop around all holes; resize = long side to --resize-limit; "
                             "whole/original = the full image")
    parser.add_argument("--margin", type=int, default=DEFAULT_CONTEXT_MARGIN,
                        help=f"context kept around holes when cropping (pixels, default {DEFAULT_CONTEXT_MARGIN})")
    parser.add_argument("--crop-trigger", type=int, default=DEFAULT_CROP_TRIGGER,
                        help=f"crop/window only when the long side exceeds this (default {DEFAULT_CROP_TRIGGER})")
    parser.add_argument("--resize-limit", type=int, default=DEFAULT_RESIZE_LIMIT,
                        help=f"resize: the long side is scaled to this (default {DEFAULT_RESIZE_LIMIT})")


def input_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Inpainter keywords for the parsed options (a bad value raises ValueError with one line)."""
    strategy = StrategyOptions(args.strategy, margin=args.margin, crop_trigger=args.crop_trigger,
                               resize_limit=args.resize_limit)
    return {"threshold": args.threshold, "exif": args.exif, "strategy": strategy}
