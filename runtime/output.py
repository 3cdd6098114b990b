"""Writing results: the format from the file name, the input's ICC profile, EXIF and DPI kept, atomic files.

One writer for the CLI (files) and the server and Triton (encoded bytes), so every entry point gives back what
the input carried (`images.carried_metadata`): a colour-managed viewer shows the output as it showed the input.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from PIL import Image, PngImagePlugin

from lama_deploy.errors import UserError
from lama_deploy.files import atomic_output

from .images import InpaintInputError, save_options

DEFAULT_JPEG_QUALITY = 95


def image_format(path: Path) -> str:
    """The Pillow format that a file name asks for (one line naming the fix when there is none)."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"cannot tell an image format from '{Path(path).name}'; end the output name with .png, .jpg "
                        f"or .webp")
    return fmt


def encode_image(image: Image.Image, fmt: str, quality: int = DEFAULT_JPEG_QUALITY,
                 text: Optional[Dict[str, str]] = None) -> bytes:
    """The image in `fmt` with the input's metadata (and, in PNG, `text` chunks such as the weights label)."""
    buffer = io.BytesIO()
    _save(image, buffer, fmt, quality, text)
    return buffer.getvalue()


#: Formats whose encoder changes pixels (at the quality given): their outputs are checked after writing.
LOSSY_FORMATS = ("JPEG", "WEBP")


def save_image(image: Image.Image, path: Path, quality: int = DEFAULT_JPEG_QUALITY,
               hole: Optional[np.ndarray] = None) -> Optional[str]:
    """Write the result to `path` atomically, in the format its suffix names, with the input's metadata. For a
    lossy format and the hole map given: a note when pixels outside the hole no longer match (the inpainter
    keeps them bit for bit; the encoder does not)."""
    path = Path(path)
    fmt = image_format(path)
    with atomic_output(path) as tmp:
        _save(image, tmp, fmt, quality)
    return lossy_note(image, path, fmt, hole) if fmt in LOSSY_FORMATS and hole is not None else None


def lossy_note(image: Image.Image, path: Path, fmt: str, hole: np.ndarray) -> Optional[str]:
    with Image.open(path, formats=[fmt]) as written:
        decoded = np.asarray(written.convert(image.mode))
    wanted = np.asarray(image)
    changed = (decoded != wanted) if decoded.ndim == 2 else (decoded != wanted).any(axis=-1)
    count = int(np.count_nonzero(changed & ~hole))
    if not count:
        return None
    return f"{'JPEG' if fmt == 'JPEG' else 'WebP'} is lossy: {count} pixels outside the mask changed; write .png to keep them"


def _save(image: Image.Image, target: object, fmt: str, quality: int, text: Optional[Dict[str, str]] = None) -> None:
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise InpaintInputError(f"JPEG cannot keep the alpha channel of a {image.mode} image; write a .png "
                                f"instead (folders: --ext png)")
    options = save_options(image, fmt)
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "PNG" and text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        options["pnginfo"] = info
    image.save(target, format=fmt, **options)
