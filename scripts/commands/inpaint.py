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

from lama_deploy.errors import EXIT_INTERRUPTED, InputNotFound, UserError, cli_entry
from lama_deploy.files import check_output_file
from lama_deploy.runtime.folders import IMAGE_SUFFIXES, pair_files
from lama_deploy.runtime.images import InpaintInputError
from lama_deploy.runtime.options import InpaintOptions
from lama_deploy.runtime.output import DEFAULT_JPEG_QUALITY, image_format, save_image
from lama_deploy.runtime.progress import stage

from .arguments import add_inpaint_options, make_parser, options_from_args

PROG = "lama-deploy inpaint"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, "Inpaint an image (or folders of images and masks).")
    parser.add_argument("image", nargs="?", help="input image (single mode)")
    parser.add_argument("mask", nargs="?", help="mask: pixels > --threshold are inpainted (single mode)")
    parser.add_argument("--images", metavar="DIR", help="folder of images (folder mode)")
    parser.add_argument("--masks", metavar="DIR", help="folder of masks matched by stem (default: --images)")
    parser.add_argument("-o", "--output", required=True, help="output file (single mode) or folder (folder mode)")
    parser.add_argument("--model", help="TensorRT engine (.engine/.plan), ONNX (.onnx) or checkpoint (.ckpt/.pt/.pth)")
    parser.add_argument("--ext", default="png", help="output format in folder mode (png, jpg, webp, ...)")
    parser.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, metavar="1-100",
                        help=f"quality of JPEG/WebP outputs (default {DEFAULT_JPEG_QUALITY})")
    add_inpaint_options(parser)
    return parser


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


def check_args_before_work(args: argparse.Namespace) -> None:
    """Everything that can be checked without the model, so a mistake costs seconds, not a minute."""
    if not 1 <= args.jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality {args.jpeg_quality} is out of range; use 1..100")
    if args.image is None:
        return
    for path, what in ((args.image, "image"), (args.mask, "mask")):
        if Path(path).is_dir():
            raise UserError(f"{what} {path} is a directory, not a file; pass an image file (folders: --images DIR)")
        if not Path(path).is_file():
            raise InputNotFound(f"{what} {path} not found")
    check_output_file(args.output, "-o")
    image_format(Path(args.output))


def _load_inpainter(model: str | None, options: InpaintOptions):
    from lama_deploy.runtime.inpainter import Inpainter

    if not model:
        raise UserError("no model given: pass --model PATH (.engine/.plan, .onnx or .ckpt/.pt/.pth), "
                        "or run `lama-deploy demo` to try the random-weights demo")
    with stage(PROG, f"loading {model}"):
        inpainter = Inpainter.from_path(model, options)
    if inpainter.random_weights:
        print(f"{PROG}: warning: {model} has random weights ({inpainter.weights}); "
              f"the output is a plumbing demo, not inpainting", file=sys.stderr)
    return inpainter


def run_single(args: argparse.Namespace, options: InpaintOptions) -> int:
    """One image; an input problem (unreadable image, wrong-size mask, ...) is a user error: one line, exit 2."""
    output = Path(args.output)
    with _load_inpainter(args.model, options) as inpainter:
        with stage(PROG, f"inpainting {Path(args.image).name} with {inpainter.backend.name}"):
            result = interruptible(inpainter, lambda: inpainter.inpaint(args.image, args.mask))
        lossy = save_image(result.image, output, args.jpeg_quality, result.hole)
    print(f"{PROG}: wrote {output} ({result.strategy}, {result.backend}, {result.seconds:.2f} s)")
    for note in result.notes + ([lossy] if lossy else []):
        print(f"  note: {note}")
    return 0


def run_folder(args: argparse.Namespace, options: InpaintOptions) -> int:
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
    with _load_inpainter(args.model, options) as inpainter:
        for pair in tqdm(pairs, desc="inpaint", unit="img", file=sys.stderr):
            try:
                if pair.mask is None:
                    raise InpaintInputError(f"no mask for '{pair.image.name}' in {masks_dir} "
                                            f"(looked for {pair.image.stem}.*, {pair.image.stem}_mask*.*)")
                result = interruptible(inpainter, lambda: inpainter.inpaint(pair.image, pair.mask))
                save_image(result.image, out_dir / f"{pair.output_stem}.{args.ext.lstrip('.')}", args.jpeg_quality)
                strategies[result.strategy] += 1
                for note in result.notes:  # warnings (a soft mask, ...) matter per file, as in single mode
                    if note.startswith("warning:"):
                        tqdm.write(f"{PROG}: {pair.image.name}: {note}", file=sys.stderr)
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
    options = options_from_args(args)
    return run_folder(args, options) if folder_mode else run_single(args, options)


if __name__ == "__main__":
    sys.exit(main())
