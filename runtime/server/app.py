"""`lama-deploy serve`: a small HTTP server in front of the Inpainter (FastAPI + uvicorn).

    POST /inpaint   multipart files `image` and `mask`, + optional fields threshold, exif, strategy, margin,
                    crop_trigger, resize_limit (the CLI's flags under their option names, docs/options.md)
                    -> image/png with the input's ICC profile, EXIF and DPI;
                    headers X-Inpaint-Strategy, X-Inpaint-Backend, X-Inpaint-Seconds, X-Inpaint-Weights
    GET  /          the web page (static/; off with `ui=False` / --no-ui), with /ui.js and /ui.css
    GET  /health    backend, model, weights label, profile ranges, size rule, limits, uptime, request counts

Every error is JSON `{"error": "one line"}`: 400 unreadable image or size mismatch, 408 body not received
within --request-timeout, 413 body or pixel count over the limit or an image the memory budget cannot hold
even downscaled, 415 not multipart or an image format other than PNG, JPEG, WebP, BMP, TIFF (`images.IMAGE_FORMATS`,
checked from the header before any decoder runs), 422 missing or invalid form field, 503 queue full or timed out (with
Retry-After), 500 unexpected failure (details in the server log only). Connection limits (header deadline,
idle cap) are in `http`; what the server promises is in docs/security.md. Inference runs in a
bounded worker pool (`lama_deploy.runtime.server.pool`), one Inpainter per worker, so a TensorRT execution context
never serves two requests at once. FastAPI and uvicorn are imported only when the server is built.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Sequence

from lama_deploy import contract as C
from lama_deploy.errors import UserError, missing_dependency

from ..images import InpaintInputError, UnsupportedFormat, upright_size
from ..memory import MemoryBudgetExceeded
from ..options import REQUEST_OPTIONS, InpaintOptions
from ..output import encode_image
from .limits import (RequestRejected, ServerLimits, check_content_length, check_same_size, checked_size,
                     limited_receive, request_options)
from .pool import InferencePool, PoolFull, PoolShed, PoolTimeout

LOG = logging.getLogger("lama_deploy.server")
INSTALL_HINT = "pip install 'lama-deploy[server]'"
#: Connections the kernel queues before uvicorn accepts them (uvicorn's default; the kernel caps it at
#: net.core.somaxconn): a burst of simultaneous connects is queued, never reset.
LISTEN_BACKLOG = 2048
#: Form parts other than the two images are tiny (the option fields); cap them so a field cannot balloon.
_MAX_FIELD_BYTES = 1024


def import_fastapi():
    try:
        import fastapi
        import python_multipart  # noqa: F401 - starlette's form parser needs it; fail here, not per request
    except ImportError as exc:
        raise missing_dependency(exc.name or "fastapi", INSTALL_HINT) from None
    return fastapi


def _header_text(value: Any, limit: int = 300) -> str:
    """HTTP header values are latin-1 lines: flatten and drop what cannot travel."""
    text = " ".join(str(value).split())[:limit]
    return text.encode("ascii", "replace").decode("ascii")


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


#: Status logged for a request whose client left before sending it all (nginx's convention; never sent).
CLIENT_CLOSED = 499


def _client(request: Any) -> str:
    client = request.scope.get("client") or ("-", 0)
    return str(client[0])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _without_paths(info: dict[str, Any]) -> dict[str, Any]:
    """`Inpainter.info()` for any client: a value that is a filesystem path becomes its file name."""
    return {key: (Path(value).name if isinstance(value, str) and ("/" in value or "\\" in value) else value)
            for key, value in info.items()}


class AccessLog:
    """Pure ASGI middleware: one log line per HTTP request (uvicorn's access log is turned off)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "bytes": 0, "strategy": "-"}

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = dict(message.get("headers") or [])
                seen["strategy"] = headers.get(b"x-inpaint-strategy", b"-").decode("latin-1")
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            client = scope.get("client") or ("-", 0)
            LOG.info("%s %s %s %d %dB %.3fs strategy=%s", client[0], scope.get("method"), scope.get("path"),
                     seen["status"], seen["bytes"], time.perf_counter() - start, seen["strategy"])


# --- the request --------------------------------------------------------------------------------------------

async def _read_form(request: Any, limits: ServerLimits) -> tuple[bytes, bytes, dict[str, Any]]:
    """(image bytes, mask bytes, option fields) from the multipart body, reading at most max_body_bytes."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise RequestRejected(415, "send multipart/form-data with files 'image' and 'mask' "
                                   "(curl -F image=@photo.png -F mask=@mask.png)")
    check_content_length(request.headers, limits.max_body_bytes)
    limited = Request(request.scope, receive=limited_receive(request.receive, limits.max_body_bytes))
    try:
        form = await limited.form(max_files=2, max_fields=len(REQUEST_OPTIONS), max_part_size=_MAX_FIELD_BYTES)
    except HTTPException as exc:  # starlette's multipart errors (malformed body, too many parts)
        raise RequestRejected(400, f"malformed multipart body: {exc.detail}") from None
    try:
        uploads = {}
        for field in (C.IMAGE, C.MASK):
            part = form.get(field)
            if part is None:
                raise RequestRejected(422, f"missing form file '{field}'; send files 'image' and 'mask'")
            if not isinstance(part, UploadFile):
                raise RequestRejected(422, f"form field '{field}' must be a file upload, not text")
            uploads[field] = await part.read()
        fields = {key: value for key, value in form.multi_items() if key not in (C.IMAGE, C.MASK)}
    finally:
        await form.close()
    return uploads[C.IMAGE], uploads[C.MASK], fields


async def _read_form_in_time(request: Any, limits: ServerLimits) -> tuple[bytes, bytes, dict[str, Any]]:
    """`_read_form` under the request timeout: a client trickling its body is cut off with a 408."""
    import asyncio

    try:
        return await asyncio.wait_for(_read_form(request, limits), limits.request_timeout_s)
    except asyncio.TimeoutError:
        raise RequestRejected(408, f"request body not received within {limits.request_timeout_s:g} s "
                                   "(--request-timeout); send it faster or in a smaller request",
                              {"Connection": "close"}) from None


def _check_pair(image_bytes: bytes, mask_bytes: bytes, max_pixels: int, inpainter: Any, exif: str) -> None:
    """Header-only checks of both uploads (sizes as the loader will see them, EXIF orientation included); the
    worker decodes them with the runtime's own loader.

    An image that the memory budget cannot hold even cropped or downscaled is refused here, before it is
    queued or decoded (the worker's Inpainter plans the crop/downscale for the rest)."""
    image_size, mask_size = checked_size(image_bytes, C.IMAGE, max_pixels), checked_size(mask_bytes, C.MASK, max_pixels)
    check_same_size(upright_size(image_bytes, image_size, exif), upright_size(mask_bytes, mask_size, exif))
    pipeline = getattr(inpainter, "pipeline", None)
    if pipeline is not None:
        pipeline.check_budget(*image_size)


def _encode_png(result: Any, weights: str) -> bytes:
    """The result as PNG with the input's ICC profile, EXIF and DPI; random weights stay labelled in the file."""
    text = {C.META_WEIGHTS: weights} if weights else {}
    text["lama.strategy"] = str(result.strategy)
    return encode_image(result.image, "PNG", text=text)


def _result_headers(result: Any, weights: str) -> dict[str, str]:
    headers = {"X-Inpaint-Strategy": _header_text(result.strategy), "X-Inpaint-Backend": _header_text(result.backend),
               "X-Inpaint-Seconds": f"{float(result.seconds):.4f}"}
    if weights:
        headers["X-Inpaint-Weights"] = _header_text(weights)
    if getattr(result, "notes", None):
        headers["X-Inpaint-Notes"] = _header_text("; ".join(result.notes), limit=1000)
    return headers


# --- the application ----------------------------------------------------------------------------------------

class ServerState:
    """What the routes share: the pool, the limits and the model description (read once at start)."""

    def __init__(self, inpainters: Sequence[Any], limits: ServerLimits, model_path: str | None) -> None:
        self.limits = limits
        self.pool = InferencePool(inpainters, limits.queue_size)
        self.info = _jsonable(inpainters[0].info())
        #: the server's options; each request may change the per-request ones (form fields)
        self.options = getattr(inpainters[0], "options", None) or InpaintOptions()
        # /health names the model file, never its path (the host's folders are nobody's business)
        self.model_name = Path(str(model_path or self.info.get("model") or "")).name or None
        self.weights = str(self.info.get("weights") or "")
        self.started = time.monotonic()

    def limits_info(self) -> dict[str, Any]:
        limits = self.limits
        return {"max_body_bytes": limits.max_body_bytes, "max_pixels": limits.max_pixels,
                "queue_size": limits.queue_size, "request_timeout_s": limits.request_timeout_s,
                "max_memory": limits.max_memory, "worker_memory": self.info.get("max_memory"),
                "header_timeout_s": limits.header_timeout_s, "max_connections": limits.max_connections,
                "max_idle_connections": limits.max_idle_connections}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "backend": self.info.get("backend"), "model": self.model_name,
                "weights": self.weights, "profile": self.info.get("profile"),
                "size_rule": C.SIZE_RULE, "size_multiple": C.SIZE_MULTIPLE, "min_side": C.MIN_SIDE,
                "limits": self.limits_info(),
                "uptime_s": round(time.monotonic() - self.started, 1), "requests": self.pool.snapshot(),
                "info": _without_paths(self.info)}


async def _inpaint(request: Any, state: ServerState) -> Any:
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    deadline = time.monotonic() + state.limits.request_timeout_s
    # at the door, before reading an upload we could not queue or finish in time anyway
    state.pool.refuse_if_full(state.limits.request_timeout_s)
    image_bytes, mask_bytes, fields = await _read_form_in_time(request, state.limits)
    options = request_options(fields, state.options)
    # headers only, but a PNG may carry megabytes of chunks before its pixels: keep it off the event loop
    await run_in_threadpool(_check_pair, image_bytes, mask_bytes, state.limits.max_pixels, state.pool.inpainters[0],
                            options.exif)
    slot = state.pool.admit(deadline - time.monotonic())
    try:
        remaining = max(0.001, deadline - time.monotonic())
        result = await state.pool.run(slot, image_bytes, mask_bytes, options, remaining,
                                      state.limits.request_timeout_s)
    finally:
        if not slot.submitted:
            slot.release()
    png = await run_in_threadpool(_encode_png, result, state.weights)
    return Response(png, media_type="image/png", headers=_result_headers(result, state.weights))


def create_app(inpainter: Any | Sequence[Any], limits: ServerLimits | None = None, *,
               model_path: str | None = None, ui: bool = True) -> Any:
    """The FastAPI app serving `inpainter` (or a list of them: one per worker thread); `ui`: also the web page
    at `GET /` (read-only routes, see `ui.py`)."""
    fastapi = import_fastapi()
    from fastapi.responses import JSONResponse, Response
    from starlette.requests import ClientDisconnect
    from starlette.exceptions import HTTPException as StarletteHTTPException

    inpainters = list(inpainter) if isinstance(inpainter, (list, tuple)) else [inpainter]
    limits = limits or ServerLimits()
    state = ServerState(inpainters, limits, model_path)

    @asynccontextmanager
    async def lifespan(app: Any):
        yield
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(state.pool.close)  # after uvicorn drained the connections
        LOG.info("shut down after %d requests", state.pool.stats.served)

    app = fastapi.FastAPI(title="lama-deploy", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.lama = state
    app.add_middleware(AccessLog)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Any, exc: StarletteHTTPException) -> Any:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def inpaint(request: Any) -> Any:
        try:
            return await _inpaint(request, state)
        except ClientDisconnect:
            # the client went away mid-body: its own doing, one line (a traceback per client would flood the log)
            LOG.warning("%s: client disconnected before its request body was complete", _client(request))
            return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the access log says 499
        except RequestRejected as exc:
            state.pool.count_bad_input()
            return _error(exc.status, exc.message, exc.headers)
        except PoolShed as exc:
            return _error(503, f"server busy: the requests ahead would take about {exc.expected_s:.0f} s, more than "
                               f"the {state.limits.request_timeout_s:g} s request timeout; retry in "
                               f"{exc.retry_after_s} s", {"Retry-After": str(exc.retry_after_s)})
        except PoolFull as exc:
            return _error(503, f"server busy: {state.pool.capacity} requests already running or queued "
                               f"(--queue-size); retry in {exc.retry_after_s} s",
                          {"Retry-After": str(exc.retry_after_s)})
        except PoolTimeout as exc:
            return _error(503, f"{exc}; the server is overloaded, retry later",
                          {"Retry-After": str(state.pool.retry_after_s())})
        except MemoryBudgetExceeded as exc:  # before inference: the image cannot fit the budget at all
            return _error(413, str(exc).splitlines()[0])
        except UnsupportedFormat as exc:
            return _error(415, str(exc).splitlines()[0])
        except InpaintInputError as exc:  # the runtime judged the input: the client's to fix
            return _error(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception:
            # backend messages carry node names, paths, shapes: they go to the log, never to the client
            LOG.exception("inpainting failed")
            return _error(500, "inpainting failed on the server (internal error); the details are in the server log")

    async def health(request: Any) -> Any:
        return JSONResponse(state.health())

    # Plain Starlette routes: the handlers take the raw request (the multipart body is read under the
    # byte limit by hand), so FastAPI's parameter injection has nothing to do here.
    app.router.add_route("/inpaint", inpaint, methods=["POST"])
    app.router.add_route("/health", health, methods=["GET"])
    if ui:
        from .ui import add_ui_routes

        add_ui_routes(app)
    return app


# --- serving --------------------------------------------------------------------------------------------------

def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """The connection limits, for `uvicorn.run` / `uvicorn.Config` (tests run the same ones)."""
    from .http import guarded_h11_protocol

    return {"http": guarded_h11_protocol(limits.header_timeout_s, limits.max_idle_connections, limits.min_idle_s,
                                         limits.max_connections),
            "limit_concurrency": limits.max_connections, "timeout_keep_alive": 5, "access_log": False,
            "backlog": LISTEN_BACKLOG,
            "timeout_graceful_shutdown": int(limits.request_timeout_s) + 5}


def check_can_listen(host: str, port: int) -> None:
    """Fail before loading models (seconds for a big engine) if the address cannot be bound."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(infos[0][4])
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port/--host "
                        "or stop what is using it") from None
