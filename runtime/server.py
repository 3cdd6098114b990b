"""`lama-deploy serve`: a small HTTP server in front of the Inpainter (FastAPI + uvicorn).

    POST /inpaint   multipart files `image` and `mask` (+ optional field `threshold`: a number or `iopaint`) -> image/png
                    headers X-Inpaint-Strategy, X-Inpaint-Backend, X-Inpaint-Seconds, X-Inpaint-Weights
    GET  /health    backend, model, weights label, profile ranges, size rule, limits, uptime, request counts

Every error is JSON `{"error": "one line"}`: 400 unreadable image or size mismatch, 408 body not received
within --request-timeout, 413 body or pixel count over the limit or an image the memory budget cannot hold
even downscaled, 415 not multipart, 422 missing or invalid form field, 503 queue full or timed out (with
Retry-After), 500 unexpected failure (details in the server log only). Connection limits (header deadline,
idle cap) are in `server_http`; what the server promises is in docs/security.md. Inference runs in a
bounded worker pool (`lama_deploy.runtime.server_pool`), one Inpainter per worker, so a TensorRT execution context
never serves two requests at once. FastAPI and uvicorn are imported only when the server is built.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Sequence

from lama_deploy import contract as C
from lama_deploy.errors import UserError, cli_entry, missing_dependency

from .backends.torch_precision import add_mode_arguments, mode_options
from .images import DEFAULT_MAX_PIXELS, InpaintInputError, upright_size
from .input_options import add_input_options, input_options
from .memory import MemoryBudgetExceeded, format_bytes, max_side_for, resolve_budget
from .server_limits import (RequestRejected, ServerLimits, check_content_length,
                            check_same_size, checked_size, limited_receive, parse_threshold)
from .server_pool import InferencePool, PoolFull, PoolTimeout

LOG = logging.getLogger("lama_deploy.server")
_INSTALL = "pip install 'lama-deploy[server]'"
#: Form parts other than the two images are tiny (the threshold); cap them so a field cannot balloon.
_MAX_FIELD_BYTES = 1024


def _import_fastapi():
    try:
        import fastapi
        import python_multipart  # noqa: F401 - starlette's form parser needs it; fail here, not per request
    except ImportError as exc:
        raise missing_dependency(exc.name or "fastapi", _INSTALL) from None
    return fastapi


def _header_text(value: Any, limit: int = 300) -> str:
    """HTTP header values are latin-1 lines: flatten and drop what cannot travel."""
    text = " ".join(str(value).split())[:limit]
    return text.encode("ascii", "replace").decode("ascii")


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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

async def _read_form(request: Any, limits: ServerLimits) -> tuple[bytes, bytes, float | None]:
    """(image bytes, mask bytes, threshold) from the multipart body, reading at most max_body_bytes."""
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
        form = await limited.form(max_files=2, max_fields=2, max_part_size=_MAX_FIELD_BYTES)
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
        threshold = parse_threshold(form.get("threshold"))
    finally:
        await form.close()
    return uploads[C.IMAGE], uploads[C.MASK], threshold


async def _read_form_in_time(request: Any, limits: ServerLimits) -> tuple[bytes, bytes, float | None]:
    """`_read_form` under the request timeout: a client trickling its body is cut off with a 408."""
    import asyncio

    try:
        return await asyncio.wait_for(_read_form(request, limits), limits.request_timeout_s)
    except asyncio.TimeoutError:
        raise RequestRejected(408, f"request body not received within {limits.request_timeout_s:g} s "
                                   "(--request-timeout); send it faster or in a smaller request",
                              {"Connection": "close"}) from None


def _check_pair(image_bytes: bytes, mask_bytes: bytes, max_pixels: int, inpainter: Any, exif: str = "keep") -> None:
    """Header-only checks of both uploads (sizes as the loader will see them, EXIF orientation included); the
    worker decodes them with the runtime's own loader.

    An image that the memory budget cannot hold even cropped or downscaled is refused here, before it is
    queued or decoded (the worker's Inpainter plans the crop/downscale for the rest)."""
    image_size, mask_size = checked_size(image_bytes, C.IMAGE, max_pixels), checked_size(mask_bytes, C.MASK, max_pixels)
    check_same_size(upright_size(image_bytes, image_size, exif), upright_size(mask_bytes, mask_size, exif))
    width, height = image_size
    cost, budget = getattr(inpainter, "memory_cost", None), getattr(inpainter, "max_memory", None)
    if cost is not None and budget is not None:
        max_side_for(cost, budget, width * height)


def _encode_png(result: Any, weights: str) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if weights:
        info.add_text(C.META_WEIGHTS, weights)  # random weights stay labelled in the file itself
    info.add_text("lama.strategy", str(result.strategy))
    buffer = io.BytesIO()
    result.image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


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
        self.model_path = model_path or self.info.get("model") or self.info.get("path")
        self.weights = str(self.info.get("weights") or self.info.get("weights_label") or "")
        self.started = time.monotonic()

    def limits_info(self) -> dict[str, Any]:
        limits = self.limits
        return {"max_body_bytes": limits.max_body_bytes, "max_pixels": limits.max_pixels,
                "queue_size": limits.queue_size, "request_timeout_s": limits.request_timeout_s,
                "max_memory": limits.max_memory, "worker_memory": self.info.get("max_memory"),
                "header_timeout_s": limits.header_timeout_s, "max_connections": limits.max_connections,
                "max_idle_connections": limits.max_idle_connections}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "backend": self.info.get("backend"), "model": self.model_path,
                "weights": self.weights, "profile": self.info.get("profile", self.info.get("profiles")),
                "size_rule": C.SIZE_RULE, "size_multiple": C.SIZE_MULTIPLE, "min_side": C.MIN_SIDE,
                "limits": self.limits_info(),
                "uptime_s": round(time.monotonic() - self.started, 1), "requests": self.pool.snapshot(),
                "info": self.info}


async def _inpaint(request: Any, state: ServerState) -> Any:
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    state.pool.refuse_if_full()  # before reading an upload we could not queue anyway
    deadline = time.monotonic() + state.limits.request_timeout_s
    image_bytes, mask_bytes, threshold = await _read_form_in_time(request, state.limits)
    # headers only, but a PNG may carry megabytes of chunks before its pixels: keep it off the event loop
    await run_in_threadpool(_check_pair, image_bytes, mask_bytes, state.limits.max_pixels, state.pool.inpainters[0],
                            state.info.get("exif", "keep"))
    slot = state.pool.admit()
    try:
        remaining = max(0.001, deadline - time.monotonic())
        result = await state.pool.run(slot, image_bytes, mask_bytes, threshold, remaining,
                                      state.limits.request_timeout_s)
    finally:
        if not slot.submitted:
            slot.release()
    png = await run_in_threadpool(_encode_png, result, state.weights)
    return Response(png, media_type="image/png", headers=_result_headers(result, state.weights))


def create_app(inpainter: Any | Sequence[Any], limits: ServerLimits | None = None, *,
               model_path: str | None = None) -> Any:
    """The FastAPI app serving `inpainter` (or a list of them: one per worker thread)."""
    fastapi = _import_fastapi()
    from fastapi.responses import JSONResponse
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
        except RequestRejected as exc:
            state.pool.count_bad_input()
            return _error(exc.status, exc.message, exc.headers)
        except PoolFull as exc:
            return _error(503, f"server busy: {state.pool.capacity} requests already running or queued "
                               f"(--queue-size); retry in {exc.retry_after_s} s",
                          {"Retry-After": str(exc.retry_after_s)})
        except PoolTimeout as exc:
            return _error(503, f"{exc}; the server is overloaded, retry later",
                          {"Retry-After": str(state.pool.retry_after_s())})
        except MemoryBudgetExceeded as exc:  # before inference: the image cannot fit the budget at all
            return _error(413, str(exc).splitlines()[0])
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
    return app


# --- CLI ----------------------------------------------------------------------------------------------------

#: Memory and connection limits: flag, type, default, help (docs/security.md lists the same).
_GUARD_OPTIONS = (
    ("--max-memory", str, "auto", "host memory all inference workers may take together, e.g. 4GB (CPU backends; "
     "larger images are cropped/downscaled or refused with 413); default: 70%% of the memory available, 'none' "
     "for no budget"),
    ("--header-timeout", float, 10.0, "seconds a connection may take to send its request headers before it is "
     "closed (default: 10)"),
    ("--max-connections", int, 128, "open connections and requests at once; beyond that requests get 503 "
     "(default: 128)"),
    ("--max-idle-connections", int, 32, "connections waiting to send headers; one more closes the oldest "
     "(default: 32)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lama-deploy serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="TensorRT engine, ONNX model or checkpoint")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend", default="auto", help="runtime backend (default: auto)")
    parser.add_argument("--device", default=None, help="device, e.g. cuda, cuda:1, cpu (default: the backend's)")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body in MiB (default: 20)")
    parser.add_argument("--max-pixels", type=int, default=None, help="largest image in pixels (W*H), checked "
                        "before decoding (default: the runtime's)")
    parser.add_argument("--workers-per-model", type=int, default=1, help="inference threads, each with its own "
                        "model instance/execution context (default: 1)")
    parser.add_argument("--queue-size", type=int, default=64, help="requests that may wait for a worker; beyond "
                        "that the server answers 503 (default: 64)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds a request may wait and run "
                        "(default: 120), reading the body included")
    for flag, kind, default, text in _GUARD_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_mode_arguments(parser)
    add_input_options(parser)  # --threshold (default for requests without one), --exif, --strategy, ...
    return parser


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.workers_per_model < 1:
        raise UserError(f"--workers-per-model must be >= 1, got {args.workers_per_model}")
    return ServerLimits(max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, queue_size=args.queue_size,
                        request_timeout_s=args.request_timeout, max_memory=resolve_budget(args.max_memory),
                        header_timeout_s=args.header_timeout, max_connections=args.max_connections,
                        max_idle_connections=args.max_idle_connections)


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """The connection limits, for `uvicorn.run` / `uvicorn.Config` (tests run the same ones)."""
    from .server_http import guarded_h11_protocol

    return {"http": guarded_h11_protocol(limits.header_timeout_s, limits.max_idle_connections),
            "limit_concurrency": limits.max_connections, "timeout_keep_alive": 5, "access_log": False,
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


def load_inpainters(args: argparse.Namespace, limits: ServerLimits) -> list[Any]:
    """One Inpainter per worker: each owns its session / execution context, so workers never share one."""
    from .inpainter import Inpainter

    share = None if limits.max_memory is None else limits.max_memory // args.workers_per_model
    options = input_options(args)
    return [Inpainter.from_path(args.model, backend=args.backend, device=args.device, max_pixels=limits.max_pixels,
                                **mode_options(args),
                                max_memory=share if share is not None else "none", **options)
            for _ in range(args.workers_per_model)]


@cli_entry("lama-deploy serve")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limits = limits_from_args(args)
    _import_fastapi()
    try:
        import uvicorn
    except ImportError:
        raise missing_dependency("uvicorn", _INSTALL) from None
    check_can_listen(args.host, args.port)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inpainters = load_inpainters(args, limits)
    app = create_app(inpainters, limits, model_path=str(args.model))
    state: ServerState = app.state.lama
    LOG.info("serving %s (%s, %d worker(s), queue %d) on http://%s:%d  POST /inpaint  GET /health", args.model,
             state.info.get("backend"), len(inpainters), limits.queue_size, args.host, args.port)
    worker_memory = state.info.get("max_memory")
    LOG.info("memory budget: %s", "none (GPU backend or --max-memory none)" if worker_memory is None else
             f"{format_bytes(worker_memory)} per worker (--max-memory)")
    if "random" in state.weights.lower():
        LOG.warning("model has %s", state.weights)
    uvicorn.run(app, **uvicorn_options(limits), host=args.host, port=args.port, log_level=args.log_level)
    return 0
