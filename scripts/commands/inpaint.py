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
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from PIL import Image

from lama_deploy.errors import EXIT_INTERRUPTED, InputNotFound, UserError, cli_entry
from lama_deploy.files import atomic_output, check_output_file

from lama_deploy.runtime.backends import BACKENDS
from lama_deploy.runtime.backends.torch_precision import add_mode_arguments
from lama_deploy.runtime.images import DEFAULT_MAX_PIXELS, LOSSY_MASK_SUFFIXES, LOSSY_MASK_THRESHOLD, InpaintInputError, check_threshold

from .arguments import add_input_options, input_options
from lama_deploy.runtime.folders import IMAGE_SUFFIXES, pair_files
from lama_deploy.runtime.progress import stage

PROG = "lama-deploy inpaint"


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


# -- output ------------------------------------------------------------------------------------------------
def image_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"cannot tell an image format from '{path.name}'; end the output name with .png, .jpg or .webp")
    return fmt


#: Formats whose encoder changes pixels (at the --jpeg-quality given): their outputs are checked afterwards.
LOSSY_FORMATS = ("JPEG", "WEBP")


def save_image(image: Image.Image, path: Path, quality: int = 95, hole: np.ndarray | None = None) -> str | None:
    """Write `image` atomically; for a lossy format with the hole map given, a note when pixels outside the
    hole no longer match (the inpainter keeps them bit for bit; the encoder does not)."""
    fmt = image_format(path)
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise InpaintInputError(f"JPEG cannot keep the alpha channel of a {image.mode} image; write {path.stem}.png "
                                f"instead (folders: --ext png)")
    with atomic_output(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": quality} if fmt in LOSSY_FORMATS else {}))
    return lossy_note(image, path, fmt, hole) if fmt in LOSSY_FORMATS and hole is not None else None


def lossy_note(image: Image.Image, path: Path, fmt: str, hole: np.ndarray) -> str | None:
    with Image.open(path, formats=[fmt]) as written:
        decoded = np.asarray(written.convert(image.mode))
    wanted = np.asarray(image)
    changed = (decoded != wanted) if decoded.ndim == 2 else (decoded != wanted).any(axis=-1)
    count = int(np.count_nonzero(changed & ~hole))
    if not count:
        return None
    name = "JPEG" if fmt == "JPEG" else "WebP"
    return f"{name} is lossy: {count} pixels outside the mask changed; write .png to keep them"


def _hole(args: argparse.Namespace, inpainter: Any, image: Path, mask: Path, size: tuple[int, int]) -> np.ndarray:
    """The hole map as the inpainter read it (same threshold and EXIF rule), for the lossy-output note."""
    from lama_deploy.runtime.images import load_hole

    return load_hole(mask, size, mask_threshold(args, mask), args.max_pixels, exif=inpainter.exif)


#: After Ctrl-C, how long the inference may take to stop: ONNX Runtime ends its run at the next node boundary,
#: which at 3000x2000 can be a second away; after that the process exits without it (2 s promised).
CANCEL_WAIT_S = 1.0


def interruptible(inpainter: Any, work: Callable[[], Any]) -> Any:
    """`work()` on a helper thread, so that the main thread (the one Python runs signal handlers on) is free:
    Ctrl-C cancels the inference there (`Inpainter.cancel`) and re-raises, exit 130, with nothing written."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread as is
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="lama-inpaint", daemon=True).start()
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        inpainter.cancel()
        if not done.wait(CANCEL_WAIT_S):
            # a model call still running: the interpreter's normal exit would tear the runtime down under it
            # (an abort, or seconds of waiting), so leave at once; nothing was written (outputs are atomic)
            print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


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
        if Path(path).is_dir():
            raise UserError(f"{what} {path} is a directory, not a file; pass an image file (folders: --images DIR)")
        if not Path(path).is_file():
            raise InputNotFound(f"{what} {path} not found")
    check_output_file(args.output, "-o")
    image_format(Path(args.output))


def _load_inpainter(args: argparse.Namespace):
    from lama_deploy.runtime.inpainter import Inpainter

    if not args.model:
        raise UserError("no model given: pass --model PATH (.engine/.plan, .onnx or .ckpt/.pt/.pth), "
                        "or run `lama-deploy demo` to try the random-weights demo")
    with stage(PROG, f"loading {args.model}"):
        inpainter = Inpainter.from_path(args.model, backend=args.backend, device=args.device,
                                        max_pixels=args.max_pixels, max_side=args.max_side, precision=args.precision,
                                        cuda_graphs=args.cuda_graphs, max_memory=args.max_memory,
                                        **{**input_options(args), "threshold": args.threshold or 0})
    if inpainter.random_weights:
        print(f"{PROG}: warning: {args.model} has random weights ({inpainter.weights}); "
              f"the output is a plumbing demo, not inpainting", file=sys.stderr)
    return inpainter


def run_single(args: argparse.Namespace) -> int:
    """One image; an input problem (unreadable image, wrong-size mask, ...) is a user error: one line, exit 2."""
    output = Path(args.output)
    image, mask = Path(args.image), Path(args.mask)
    with _load_inpainter(args) as inpainter:
        with stage(PROG, f"inpainting {image.name} with {inpainter.backend.name}"):
            result = interruptible(inpainter, lambda: inpainter.inpaint(image, mask,
                                                                        threshold=mask_threshold(args, mask)))
        hole = _hole(args, inpainter, image, mask, result.image.size) if image_format(output) in LOSSY_FORMATS else None
        lossy = save_image(result.image, output, args.jpeg_quality, hole)
    print(f"{PROG}: wrote {output} ({result.strategy}, {result.backend}, {result.seconds:.2f} s)")
    for note in result.notes + ([lossy] if lossy else []):
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
                result = interruptible(inpainter, lambda: inpainter.inpaint(
                    pair.image, pair.mask, threshold=mask_threshold(args, pair.mask)))
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
