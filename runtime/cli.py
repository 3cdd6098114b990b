"""`lama-deploy inpaint`: inpaint one image, or folders of images and masks, with any backend.

    lama-deploy inpaint photo.jpg photo_mask.png -o out.png --model big-lama.engine
    lama-deploy inpaint --images imgs/ --masks masks/ -o results/ --model big-lama.onnx

Folder mode matches masks to images by file stem: `<stem>.*`, or LaMa's dataset layout `<stem>_mask.*` /
`<stem>_mask001.*` (several masks per image give one output each, named after the mask). A bad file is
reported and skipped, the rest finish; the summary line counts both and the exit code is 1 if any
failed. Outputs are written atomically (PNG by default in folder mode).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lama_deploy.errors import InputNotFound, UserError, cli_entry
from lama_deploy.files import atomic_output, check_output_file

from .backends import BACKENDS
from .backends.torch_precision import add_mode_arguments, mode_options
from .images import DEFAULT_MAX_PIXELS, InpaintInputError, check_threshold
from .input_options import add_input_options, input_options
from .progress import stage

PROG = "lama-deploy inpaint"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_MASK_STEM = re.compile(r"^(?P<stem>.+)_mask\d*$")
#: JPEG masks carry compression noise (values 1..30 around white strokes, a few even on black): with the
#: lossless default (> 0) that noise becomes hole. Mid-grey separates the two cleanly.
LOSSY_MASK_SUFFIXES = (".jpg", ".jpeg", ".webp")
LOSSY_MASK_THRESHOLD = 127


@dataclass
class Pair:
    image: Path
    mask: Path | None
    output_stem: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Inpaint an image (or folders of images and masks).")
    parser.add_argument("image", nargs="?", help="input image (single mode)")
    parser.add_argument("mask", nargs="?", help="mask: pixels > --threshold are inpainted (single mode)")
    parser.add_argument("--images", metavar="DIR", help="folder of images (folder mode)")
    parser.add_argument("--masks", metavar="DIR", help="folder of masks matched by stem (default: --images)")
    parser.add_argument("-o", "--output", required=True, help="output file (single mode) or folder (folder mode)")
    parser.add_argument("--model", help="TensorRT engine (.engine/.plan), ONNX (.onnx) or checkpoint (.ckpt/.pt/.pth)")
    parser.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS)
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the backend's best)")
    parser.add_argument("--max-side", type=int, help="largest H/W fed to the model; bigger images are cropped/resized")
    add_input_options(parser, lossy_mask_threshold=LOSSY_MASK_THRESHOLD)  # --threshold, --exif, --strategy, --margin, ...
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    parser.add_argument("--ext", default="png", help="output format in folder mode (png, jpg, webp, ...)")
    parser.add_argument("--jpeg-quality", type=int, default=95, metavar="1-100",
                        help="quality of JPEG/WebP outputs (default 95)")
    parser.add_argument("--max-memory", default="auto", help="host memory one inference may take, e.g. 4GB, 512MB "
                        "(CPU backends; bigger images are cropped/downscaled to fit, or refused); default: "
                        "70%% of the memory available, 'none' for no budget")
    add_mode_arguments(parser)
    return parser


# -- folder pairing ----------------------------------------------------------------------------------------
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


# -- output ------------------------------------------------------------------------------------------------
def image_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"cannot tell an image format from '{path.name}'; end the output name with .png, .jpg or .webp")
    return fmt


def save_image(image: Image.Image, path: Path, quality: int = 95) -> None:
    fmt = image_format(path)
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise InpaintInputError(f"JPEG cannot keep the alpha channel of a {image.mode} image; write {path.stem}.png "
                                f"instead (folders: --ext png)")
    with atomic_output(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))


def mask_threshold(args: argparse.Namespace, mask: Path) -> float:
    """--threshold, else 0 for lossless masks and LOSSY_MASK_THRESHOLD for JPEG/WebP ones."""
    if args.threshold is not None:
        return args.threshold
    return LOSSY_MASK_THRESHOLD if mask.suffix.lower() in LOSSY_MASK_SUFFIXES else 0


def check_args_before_work(args: argparse.Namespace) -> None:
    """Everything that can be checked without the model, so a mistake costs seconds, not a minute."""
    if not 1 <= args.jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality {args.jpeg_quality} is out of range; use 1..100")
    if args.threshold is not None:
        check_threshold(args.threshold)
    if args.image is None:
        return
    for path, what in ((args.image, "image"), (args.mask, "mask")):
        if not Path(path).is_file():
            raise InputNotFound(f"{what} {path} not found")
    check_output_file(args.output, "-o")
    image_format(Path(args.output))


def _load_inpainter(args: argparse.Namespace):
    from .inpainter import Inpainter

    if not args.model:
        raise UserError("no model given: pass --model PATH (.engine/.plan, .onnx or .ckpt/.pt/.pth), "
                        "or run `lama-deploy demo` to try the random-weights demo")
    with stage(PROG, f"loading {args.model}"):
        inpainter = Inpainter.from_path(args.model, backend=args.backend, device=args.device,
                                        max_pixels=args.max_pixels, max_side=args.max_side, max_memory=args.max_memory,
                                        **mode_options(args),
                                        **{**input_options(args), "threshold": args.threshold or 0})
    if inpainter.random_weights:
        print(f"{PROG}: warning: {args.model} has random weights ({inpainter.weights}); "
              f"the output is a plumbing demo, not inpainting", file=sys.stderr)
    return inpainter


def run_single(args: argparse.Namespace) -> int:
    output = Path(args.output)
    with _load_inpainter(args) as inpainter:
        try:
            with stage(PROG, f"inpainting {Path(args.image).name} with {inpainter.backend.name}"):
                result = inpainter.inpaint(args.image, args.mask, threshold=mask_threshold(args, Path(args.mask)))
            save_image(result.image, output, args.jpeg_quality)
        except InpaintInputError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
    print(f"{PROG}: wrote {output} ({result.strategy}, {result.backend}, {result.seconds:.2f} s)")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def run_folder(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    images_dir, masks_dir = Path(args.images), Path(args.masks or args.images)
    out_dir = Path(args.output)
    for folder, flag in ((images_dir, "--images"), (masks_dir, "--masks")):
        if not folder.is_dir():
            raise UserError(f"{flag} {folder} is not a folder")
        if out_dir.exists() and out_dir.resolve() == folder.resolve():
            raise UserError(f"-o {out_dir} is the {flag} folder; choose another output folder so inputs are not overwritten")
    image_format(Path(f"x.{args.ext.lstrip('.')}"))
    pairs = pair_files(images_dir, masks_dir)
    if not pairs:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    start, failed, strategies = time.perf_counter(), [], Counter()
    with _load_inpainter(args) as inpainter:
        for pair in tqdm(pairs, desc="inpaint", unit="img", file=sys.stderr):
            try:
                if pair.mask is None:
                    raise InpaintInputError(f"no mask for '{pair.image.name}' in {masks_dir} "
                                            f"(looked for {pair.image.stem}.*, {pair.image.stem}_mask*.*)")
                result = inpainter.inpaint(pair.image, pair.mask, threshold=mask_threshold(args, pair.mask))
                save_image(result.image, out_dir / f"{pair.output_stem}.{args.ext.lstrip('.')}", args.jpeg_quality)
                strategies[result.strategy] += 1
            except Exception as exc:  # one bad file must not stop the others
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failed.append(pair.image.name)
                tqdm.write(f"{PROG}: failed: {pair.image.name}: {message}", file=sys.stderr)
        backend = inpainter.backend.name
    done = len(pairs) - len(failed)
    used = ", ".join(f"{name} {count}" for name, count in sorted(strategies.items())) or "none"
    print(f"{PROG}: {done} done, {len(failed)} failed in {time.perf_counter() - start:.1f} s "
          f"({backend}; strategies: {used}) -> {out_dir}")
    return 1 if failed else 0


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    folder_mode = args.images is not None
    if folder_mode and (args.image or args.mask):
        parser.error("give either IMAGE MASK or --images/--masks, not both")
    if not folder_mode and not (args.image and args.mask):
        parser.error("give IMAGE and MASK, or --images DIR [--masks DIR] for folders")
    check_args_before_work(args)
    return run_folder(args) if folder_mode else run_single(args)


if __name__ == "__main__":
    sys.exit(main())
