"""Reading and checking inpainting inputs: file paths, bytes, PIL images or numpy arrays.

Images become an 8-bit RGB array plus what is needed to give the result back in the input's mode:
grayscale in -> grayscale out, RGBA in -> RGB inpainted with the alpha channel kept as given.

Mask convention (the one place it is stated): a mask is read as 8-bit luminance (RGB masks reduced
with `convert("L")`, as the official LaMa loader does) and a pixel is a hole when its value is
strictly greater than the threshold. The default threshold 0 is the official predictor's (`mask > 0`);
`threshold="iopaint"` is 127, IOPaint's web UI and API rule (`mask > 127`), which keeps the soft edge
of a feathered brush out of the hole. With threshold 0, a mask with many values strictly between 0
and 255 (a soft brush, a JPEG-saved mask) gets a warning note, since every faint pixel becomes a hole.

EXIF orientation (`exif="apply"`, the default, as IOPaint and every photo viewer): an image or mask
file with an EXIF orientation tag (1-8) is turned upright on load (`ImageOps.exif_transpose`), each
file by its own tag, so a mask drawn on the picture as viewers show it fits; the result is upright
and carries no orientation tag (the rest of the EXIF, the ICC profile and the DPI are kept:
`carried_metadata`). `exif="keep"` uses the pixels as stored (the official predictor's way).

Palette ("P") images are converted transparently (to RGB, or RGBA when they carry transparency) and
the result says so in its notes; palette masks are reduced to luminance. Each bad input raises
`InpaintInputError` with one line that names the input and what to do.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lama_deploy.errors import UsageError, UserError

#: Decompression-bomb guard; also the largest image the runtime accepts by default (40 MP).
DEFAULT_MAX_PIXELS = 40_000_000
#: Named mask thresholds (mask > value is a hole): the official predictor's, and IOPaint's UI/API rule.
THRESHOLD_PRESETS = {"lama": 0, "iopaint": 127}
#: JPEG/WebP masks carry compression noise (values 1..30 around white strokes, a few even on black): with the
#: lossless rule (> 0) that noise becomes hole. Mid-grey separates the two cleanly. Decided from the decoded
#: file's format (not its name), so a file gets the same threshold from the CLI, the server and Triton.
LOSSY_MASK_FORMATS = ("JPEG", "MPO", "WEBP")
LOSSY_MASK_THRESHOLD = 127
#: The threshold of lossless masks (and arrays): the official predictor's `mask > 0`.
LOSSLESS_MASK_THRESHOLD = 0
EXIF_MODES = ("apply", "keep")
DEFAULT_EXIF = "apply"
#: With threshold 0, warn when more than this share of the nonzero mask pixels lie strictly between 0 and 255.
SOFT_MASK_SHARE = 0.05

#: The image formats the API accepts (Pillow's name -> file suffixes): the one list the server, the CLI's
#: folder mode and the loader read. Every other format Pillow knows is refused from its header before any
#: decoder runs: EPS/PS/PDF hand the file to Ghostscript, which runs the client's PostScript without a limit.
IMAGE_FORMATS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "WEBP": (".webp",), "BMP": (".bmp",),
                 "TIFF": (".tif", ".tiff")}
IMAGE_SUFFIXES = tuple(suffix for suffixes in IMAGE_FORMATS.values() for suffix in suffixes)
FORMAT_NAMES = "PNG, JPEG, WebP, BMP or TIFF"
#: Magic bytes at the start of each accepted format's file.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
          (b"MM\x00*", "TIFF"))
#: A PNG's chunks are walked (by Pillow, in Python) one by one: a 20 MB upload of empty chunks is 1.6 million
#: of them. Real encoders write IDAT chunks of 8 KiB or more and a few dozen others; allow far more than that.
PNG_CHUNK_BYTES = 4096
PNG_EXTRA_CHUNKS = 1024

ImageSource = Union[str, Path, bytes, IO[bytes], Image.Image, np.ndarray]

_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;32", "I;32B"}
_GRAY_MODES = {"L", "LA", "1", "La"}
_OPEN_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is global: set it and open under one lock


class InpaintInputError(UserError):
    """An image or mask the runtime cannot use; the message is one line that says what to do."""


class UnsupportedFormat(InpaintInputError):
    """A file whose header is none of IMAGE_FORMATS (the server answers 415)."""


def sniff_format(head: bytes) -> str | None:
    """The IMAGE_FORMATS name of a file from its first 12 bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


def check_format(stream: IO[bytes], name: str) -> str:
    """The accepted format of a seekable stream, from its header (the position is restored); else
    `UnsupportedFormat`. PNG chunk counts are bounded here too, before Pillow walks them."""
    start = stream.tell()
    head = stream.read(12)
    stream.seek(start)
    fmt = sniff_format(head)
    if fmt is None:
        raise UnsupportedFormat(f"cannot read {name}: not a {FORMAT_NAMES} file (from its header); convert it to "
                                f"one of these formats")
    if fmt == "PNG":
        _check_png_chunks(stream, name)
        stream.seek(start)
    return fmt


def _check_png_chunks(stream: IO[bytes], name: str) -> None:
    """Walk chunk headers only (seeking over the data), stopping at the chunk budget for the file's size."""
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    budget = size // PNG_CHUNK_BYTES + PNG_EXTRA_CHUNKS
    position = start + 8
    for _ in range(budget):
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            return  # truncated: Pillow reports it
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            return
        position += 12 + length
    raise InpaintInputError(f"{name} has more than {budget} PNG chunks for its {size} bytes (a crafted file); "
                            f"save it again with an ordinary encoder")


def open_header(source: str | Path | IO[bytes], name: str) -> Image.Image:
    """`Image.open` restricted to the format the header declares (only that plugin runs); pixels not decoded."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as probe:
            fmt = check_format(probe, name)
        return Image.open(str(source), formats=[fmt])
    if not source.seekable():
        source = io.BytesIO(source.read())
    return Image.open(source, formats=[check_format(source, name)])


@dataclass
class LoadedImage:
    """An input image as the model sees it (`rgb`) plus what is needed to restore its mode."""

    rgb: np.ndarray  # H x W x 3 uint8
    mode: str  # mode of the result: "RGB", "RGBA", "L" or "LA"
    alpha: np.ndarray | None = None  # H x W uint8, kept as given
    notes: list[str] = field(default_factory=list)
    #: what the file carried and the output keeps (`carried_metadata`): icc_profile, exif, dpi
    metadata: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def describe_source(source: ImageSource, what: str) -> str:
    if isinstance(source, (str, Path)):
        return f"{what} '{Path(source).name}'"
    return what


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise InpaintInputError(f"{name} is empty ({width}x{height} pixels); pass a non-empty image")
    if width * height > max_pixels:
        raise InpaintInputError(f"{name} is {width}x{height} = {_megapixels(width * height)}, more than the "
                                f"{_megapixels(max_pixels)} limit; downscale it first or raise --max-pixels")


def _is_high_depth(img: Image.Image) -> bool:
    """16/32-bit images: high-depth modes, and 16-bit RGB(A) PNGs that Pillow would silently reduce to 8 bits."""
    if img.mode in _HIGH_DEPTH_MODES:
        return True
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if isinstance(tile, tuple) else getattr(tile, "args", None)
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def open_file(source: str | Path | bytes | IO[bytes], name: str, max_pixels: int) -> Image.Image:
    """Open and decode an image file (or its bytes), with the size guard applied before decoding."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            raise InpaintInputError(f"{name} is a directory, not a file: {path}")
        if not path.is_file():
            raise InpaintInputError(f"{name} does not exist: {path}")
        stream: IO[bytes] | str = str(path)
    else:
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with _OPEN_LOCK:
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    img = open_header(stream, name)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except Image.DecompressionBombError:
        raise InpaintInputError(f"{name} has more than twice the {_megapixels(max_pixels)} limit; "
                                f"downscale it first or raise --max-pixels") from None
    except (UnidentifiedImageError, ValueError, OSError, SyntaxError):
        raise InpaintInputError(f"cannot read {name}: not an image file Pillow can decode "
                                f"(PNG, JPEG, WebP, BMP, TIFF)") from None
    check_size(img.width, img.height, max_pixels, name)
    if _is_high_depth(img):
        raise InpaintInputError(f"{name} is a 16-bit image (mode {img.mode}); LaMa works on 8-bit images: "
                                f"convert it to 8-bit RGB first")
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InpaintInputError(f"cannot read {name}: the file is truncated or corrupt ({reason})") from None
    return img


def array_to_pil(array: np.ndarray, name: str, is_mask: bool) -> Image.Image:
    """A uint8 (or, for masks, bool) H x W [x C] array as a PIL image."""
    array = np.asarray(array)
    if array.dtype == bool and is_mask:
        array = array.astype(np.uint8) * 255
    if array.dtype in (np.uint16, np.int16, np.int32, np.uint32):
        raise InpaintInputError(f"{name} is a {array.dtype} array (16/32-bit); LaMa works on 8-bit images: "
                                f"convert it to uint8 first")
    if array.dtype != np.uint8:
        raise InpaintInputError(f"{name} is a {array.dtype} array; pass uint8 values 0..255"
                                f"{' (or bool)' if is_mask else ''}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise InpaintInputError(f"{name} has shape {array.shape}; pass H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InpaintInputError(f"{name} is empty ({array.shape[1]}x{array.shape[0]} pixels); pass a non-empty image")
    return Image.fromarray(np.ascontiguousarray(array))  # (H,W) -> L, x2 -> LA, x3 -> RGB, x4 -> RGBA


def to_pil(source: ImageSource, name: str, max_pixels: int, is_mask: bool = False) -> Image.Image:
    if isinstance(source, Image.Image):
        check_size(source.width, source.height, max_pixels, name)
        if _is_high_depth(source):
            raise InpaintInputError(f"{name} is a 16-bit image (mode {source.mode}); convert it to 8-bit RGB first")
        return source
    if isinstance(source, np.ndarray):
        img = array_to_pil(source, name, is_mask)
        check_size(img.width, img.height, max_pixels, name)
        return img
    if isinstance(source, (str, Path, bytes, bytearray, memoryview)) or hasattr(source, "read"):
        return open_file(source, name, max_pixels)
    raise InpaintInputError(f"{name} must be a file path, bytes, a PIL image or a numpy array, not {type(source).__name__}")


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # broken EXIF must not stop inpainting
        return 1


def check_exif(exif: str) -> str:
    if exif not in EXIF_MODES:
        raise ValueError(f"exif must be one of {', '.join(EXIF_MODES)}, got {exif!r}")
    return exif


def upright_size(data: bytes, size: tuple[int, int], exif: str = DEFAULT_EXIF) -> tuple[int, int]:
    """(width, height) of an image file once loaded: swapped for EXIF orientations 5-8 when exif="apply".

    Reads the header only (the server checks sizes before anything is decoded)."""
    if check_exif(exif) == "keep":
        return size
    try:
        with open_header(io.BytesIO(data), "image") as img:
            orientation = _exif_orientation(img)
    except Exception:  # the size check already opened it; an odd header keeps the stored size
        return size
    return (size[1], size[0]) if 5 <= orientation <= 8 else size


def oriented(img: Image.Image, exif: str, name: str, notes: list[str]) -> Image.Image:
    """The image turned upright by its EXIF orientation tag (exif="apply"), or as stored (exif="keep")."""
    orientation = _exif_orientation(img)
    if orientation == 1:
        return img
    if check_exif(exif) == "keep":
        notes.append(f"{name} has EXIF orientation {orientation}; pixels used as stored (exif=keep), "
                     f"the output keeps the tag")
        return img
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not stop inpainting
        notes.append(f"{name} has an unreadable EXIF block; pixels used as stored")
        return img
    if 2 <= orientation <= 8:
        notes.append(f"{name} turned upright by its EXIF orientation {orientation}")
    return upright


def _colour_family(mode: str) -> str:
    return "gray" if mode in _GRAY_MODES else "rgb" if mode in ("RGB", "RGBA", "RGBX", "P", "PA") else mode


def carried_metadata(img: Image.Image, exif: str = DEFAULT_EXIF) -> dict:
    """What the output keeps of the input file: ICC profile, EXIF (orientation reset to 1 once it was applied
    to the pixels; kept as stored with exif="keep") and DPI. Unreadable EXIF is dropped, never fatal."""
    kept: dict = {}
    if img.info.get("icc_profile"):
        kept["icc_profile"] = img.info["icc_profile"]
    try:
        tags = img.getexif()
        if len(tags):
            if check_exif(exif) == "apply" and 0x0112 in tags:
                del tags[0x0112]  # the pixels are upright now: no tag, as an upright photo has
            kept["exif"] = tags.tobytes()
    except Exception:  # a broken EXIF block: the output simply has none
        pass
    dpi = img.info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2:
        kept["dpi"] = (float(dpi[0]), float(dpi[1]))
    return kept


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image",
               exif: str = DEFAULT_EXIF) -> LoadedImage:
    """An input image as 8-bit RGB plus its output mode and alpha channel (upright unless exif="keep")."""
    name = describe_source(source, name)
    notes: list[str] = []
    decoded = to_pil(source, name, max_pixels)
    img = oriented(decoded, exif, name, notes)
    metadata = carried_metadata(decoded, exif)  # after turning: it edits the decoded image's EXIF tags
    if img.mode in ("P", "PA"):
        has_alpha = img.mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        notes.append(f"palette image converted to {img.mode}")
    elif img.mode in _GRAY_MODES:
        img = img.convert("LA" if img.mode in ("LA", "La") else "L")
    elif img.mode not in ("RGB", "RGBA"):
        source_mode = img.mode
        img = img.convert("RGBA" if "A" in source_mode else "RGB")
        notes.append(f"{source_mode} image converted to {img.mode}")
    if "icc_profile" in metadata and _colour_family(decoded.mode) != _colour_family(img.mode):
        metadata.pop("icc_profile")  # a CMYK/Lab profile does not describe the converted pixels
        notes.append(f"{name}'s {decoded.mode} colour profile dropped: the pixels were converted to {img.mode}")
    array = np.asarray(img)
    if img.mode in ("L", "LA"):
        gray = array if img.mode == "L" else array[:, :, 0]
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        rgb = array[:, :, :3]
    alpha = array[:, :, -1].copy() if img.mode in ("LA", "RGBA") else None
    return LoadedImage(np.ascontiguousarray(rgb), img.mode, alpha, notes, metadata)


@dataclass
class LoadedMask:
    """The hole map (mask > threshold) and what the user should know about the mask."""

    hole: np.ndarray  # H x W bool
    notes: list[str] = field(default_factory=list)


def mask_threshold(threshold: float | str, mask_format: str | None) -> float:
    """The threshold for one mask: a number or preset as given; `auto` by the mask's own format (the one place
    this default is decided): LOSSY_MASK_THRESHOLD for JPEG/WebP files, LOSSLESS_MASK_THRESHOLD otherwise."""
    if isinstance(threshold, str) and threshold.strip().lower() == "auto":
        return float(LOSSY_MASK_THRESHOLD if (mask_format or "").upper() in LOSSY_MASK_FORMATS else LOSSLESS_MASK_THRESHOLD)
    return resolve_threshold(threshold)


def load_mask(source: ImageSource, size: tuple[int, int], threshold: float | str = "auto",
              max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "mask", exif: str = DEFAULT_EXIF) -> LoadedMask:
    """Hole map: mask (luminance, 0..255) > threshold, upright unless exif="keep". `size` is the image's (w, h).
    `threshold="auto"` is decided by `mask_threshold` from the mask file's format."""
    name = describe_source(source, name)
    notes: list[str] = []
    decoded = to_pil(source, name, max_pixels, is_mask=True)
    threshold = mask_threshold(threshold, decoded.format)
    img = oriented(decoded, exif, name, notes)
    if img.size != tuple(size):
        hint = " (it matches the image turned by 90 degrees: check the EXIF orientation, --exif)" \
            if img.size == tuple(size)[::-1] else ""
        raise InpaintInputError(f"{name} is {img.width}x{img.height} but the image is {size[0]}x{size[1]}; "
                                f"the mask must have the image's size{hint}")
    values = np.asarray(img if img.mode == "L" else img.convert("L"))
    soft = soft_mask_note(values, threshold)
    return LoadedMask(values > threshold, notes + ([soft] if soft else []))


def load_hole(source: ImageSource, size: tuple[int, int], threshold: float | str = "auto",
              max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "mask", exif: str = DEFAULT_EXIF) -> np.ndarray:
    """Boolean H x W hole map: mask (luminance, 0..255) > threshold. `size` is the image's (width, height)."""
    return load_mask(source, size, threshold, max_pixels, name, exif).hole


def soft_mask_note(values: np.ndarray, threshold: float) -> str | None:
    """A warning when threshold 0 meets a soft-edged mask (many values strictly between 0 and 255)."""
    if threshold != 0:
        return None
    nonzero = int(np.count_nonzero(values))
    between = nonzero - int(np.count_nonzero(values == 255))
    if between < 16 or between <= SOFT_MASK_SHARE * nonzero:
        return None
    return (f"warning: the mask has {between} pixels strictly between 0 and 255 ({between / nonzero:.0%} of its "
            f"nonzero pixels: a soft brush or JPEG mask) and threshold 0 makes every one a hole; IOPaint uses "
            f"mask > 127 (threshold iopaint)")


def resolve_threshold(threshold: float | str) -> float:
    """A threshold value or preset name (`lama` = 0, `iopaint` = 127), checked: 0 <= value < 255."""
    if isinstance(threshold, str):
        key = threshold.strip().lower()
        if key in THRESHOLD_PRESETS:
            return THRESHOLD_PRESETS[key]
        try:
            threshold = float(key)
        except ValueError:
            raise ValueError(f"threshold {threshold!r} is neither a number nor a preset "
                             f"({', '.join(THRESHOLD_PRESETS)})") from None
    check_threshold(threshold)
    return threshold


def check_threshold(threshold: float) -> None:
    if not 0 <= float(threshold) < 255:
        raise UsageError(f"threshold {threshold} is out of range; use 0 <= threshold < 255 (mask > threshold is a hole)")


def to_output_image(loaded: LoadedImage, generated_rgb: np.ndarray, hole: np.ndarray) -> Image.Image:
    """The result in the input's mode; every pixel outside the hole is the input's own pixel, bit for bit."""
    rgb = np.where(hole[:, :, None], generated_rgb, loaded.rgb)
    if loaded.mode in ("L", "LA"):
        generated_gray = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
        channels = [np.where(hole, generated_gray, loaded.rgb[:, :, 0])]
    else:
        channels = [rgb[:, :, i] for i in range(3)]
    if loaded.alpha is not None:
        channels.append(loaded.alpha)
    array = channels[0] if len(channels) == 1 else np.stack(channels, axis=2)
    image = Image.fromarray(np.ascontiguousarray(array))
    image.info.update(loaded.metadata)  # ICC profile, EXIF, DPI: `save_image` writes them
    return image


def save_options(image: Image.Image, fmt: str) -> dict:
    """Pillow save keywords that keep the input's ICC profile, EXIF and DPI in PNG, JPEG, WebP and TIFF."""
    kept = {key: image.info[key] for key in ("icc_profile", "exif", "dpi") if image.info.get(key)}
    if fmt not in ("PNG", "JPEG", "WEBP", "TIFF"):
        return {}
    if fmt == "WEBP":
        kept.pop("dpi", None)  # WebP has no DPI field
    return kept
