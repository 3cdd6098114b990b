"""What the HTTP server refuses before any inference: oversized bodies, unreadable images, pixel bombs.

Kept free of FastAPI so the checks are plain functions: the body limit wraps an ASGI `receive` callable
(it counts bytes as they arrive and stops the upload at the limit, instead of measuring a body already
spooled to disk), and the image check reads only the header for the size, never the pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from PIL import Image, UnidentifiedImageError

from lama_deploy.errors import UsageError

from ..images import _OPEN_LOCK as PIL_GLOBALS_LOCK  # serialises changes to Image.MAX_IMAGE_PIXELS
from ..images import DEFAULT_MAX_PIXELS, FORMAT_NAMES, InpaintInputError, UnsupportedFormat, open_header


@dataclass(frozen=True)
class ServerLimits:
    """Every limit the server enforces; the CLI flags map one to one."""

    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS  # the runtime's, so `serve` and `inpaint` agree
    queue_size: int = 64
    request_timeout_s: float = 120.0  # reading the body, waiting in the queue and running, together
    max_memory: int | None = None  # host bytes for all inference workers together (None: no budget)
    header_timeout_s: float = 10.0  # a connection must complete its request headers within this
    max_connections: int = 128  # uvicorn's limit_concurrency: beyond it requests get 503
    max_idle_connections: int = 32  # per client address, connections waiting for headers; one more closes the oldest
    min_idle_s: float = 1.0  # ... but only one idle this long: a client that just connected is never evicted

    def __post_init__(self) -> None:
        if self.header_timeout_s <= 0:
            raise ValueError(f"--header-timeout must be > 0 seconds, got {self.header_timeout_s}")
        if self.min_idle_s < 0:
            raise ValueError(f"the minimum idle time must be >= 0 seconds, got {self.min_idle_s}")
        if self.max_connections < 2 or self.max_idle_connections < 1:
            raise ValueError(f"--max-connections must be >= 2 (got {self.max_connections}) and --max-idle-connections"
                             f" >= 1 (got {self.max_idle_connections})")
        if self.max_body_bytes < 1024:
            raise UsageError(f"--max-body-mb is too small ({self.max_body_bytes} bytes); allow at least 1 KiB")
        if self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be >= 1, got {self.max_pixels}")
        if self.queue_size < 0:
            raise UsageError(f"--queue-size must be >= 0, got {self.queue_size}")
        if self.request_timeout_s <= 0:
            raise UsageError(f"--request-timeout must be > 0 seconds, got {self.request_timeout_s}")


class RequestRejected(Exception):
    """A request the server answers with a client error: HTTP status plus one line for `{"error": ...}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BodyTooLarge(RequestRejected):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the server limit of {_mb(limit)} "
                              "(--max-body-mb); send smaller images")


def _mb(nbytes: int) -> str:
    return f"{nbytes / (1024 * 1024):g} MiB"


Receive = Callable[[], Awaitable[dict[str, Any]]]


def check_content_length(headers: dict[str, str], limit: int) -> None:
    """Refuse early when the client announces a body over the limit (nothing is read)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)


def limited_receive(receive: Receive, limit: int) -> Receive:
    """An ASGI `receive` that raises `BodyTooLarge` as soon as more than `limit` body bytes have arrived.

    Chunked uploads announce no length, and a Content-Length can lie, so counting is what enforces it.
    """
    received = 0

    async def receive_within_limit() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit


def _header_size(data: bytes, field: str) -> tuple[int, int]:
    """Parse the header only. Pillow's own bomb check is lifted for it (our limit is applied by the caller,
    with a message that names it); the runtime's loader guards that global with the same lock."""
    with PIL_GLOBALS_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with open_header(io.BytesIO(data), field) as image:  # only the declared format's plugin runs
                return image.size
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def checked_size(data: bytes, field: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an uploaded image from its header alone, refused above `max_pixels`.

    `Image.open` parses only the header; a 20000x20000 PNG of zeros is a few KB on the wire but 400
    million pixels once decoded, so the size is checked before anything decodes pixels. The decoding
    itself happens later, in the inference worker (the runtime's loader), so queued requests hold only
    their compressed bytes.
    """
    if not data:
        raise RequestRejected(400, f"form file '{field}' is empty; send {FORMAT_NAMES}")
    try:
        width, height = _header_size(data, f"form file '{field}'")
    except UnsupportedFormat as exc:
        raise RequestRejected(415, str(exc)) from None
    except InpaintInputError as exc:
        raise RequestRejected(400, str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestRejected(400, f"form file '{field}' is not a readable image; send {FORMAT_NAMES}") from None
    if width * height > max_pixels:
        raise RequestRejected(413, f"{field} is {width}x{height} = {width * height} pixels, over the server limit "
                                   f"of {max_pixels} (--max-pixels); downscale it or split it into tiles")
    return width, height


def check_same_size(image_size: tuple[int, int], mask_size: tuple[int, int]) -> None:
    if image_size != mask_size:
        raise RequestRejected(400, f"mask is {mask_size[0]}x{mask_size[1]} but image is {image_size[0]}x"
                                   f"{image_size[1]}; send a mask of the image's size")


def request_options(fields: dict, base: Any) -> Any:
    """The per-request options of the form fields (`threshold`, `strategy`, ... as `OPTIONS` declares them; the
    same names and text as the CLI flags and Triton parameters), over the server's own options `base`."""
    from ..options import REQUEST_OPTIONS, OptionError

    texts = {}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise RequestRejected(422, f"form field '{name}' must be plain text, not a file")
        if value.strip() != "":
            texts[name] = value
    try:
        return base.with_text(texts, REQUEST_OPTIONS, where="form field")
    except OptionError as exc:
        raise RequestRejected(422, f"{exc}") from None
