"""`lama-deploy serve`: serve POST /inpaint over HTTP (the command over `lama_deploy.runtime.server`)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from lama_deploy.errors import UserError, cli_entry, missing_dependency
from lama_deploy.runtime.memory import format_bytes, resolve_budget
from lama_deploy.runtime.options import InpaintOptions
from lama_deploy.runtime.server.app import (INSTALL_HINT, LOG, ServerState, check_can_listen, create_app, import_fastapi,
                                            uvicorn_options)
from lama_deploy.runtime.server.limits import ServerLimits

from .arguments import add_inpaint_options, make_parser, options_from_args

#: Connection limits: flag, type, default, help (docs/security.md lists the same).
_GUARD_OPTIONS = (
    ("--header-timeout", float, 10.0, "seconds a connection may take to send its request headers before it is "
     "closed (default: 10)"),
    ("--max-connections", int, 128, "open connections and requests at once; beyond that requests get 503 "
     "(default: 128)"),
    ("--max-idle-connections", int, 32, "connections waiting to send headers; one more closes the oldest "
     "(default: 32)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("lama-deploy serve", __doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="TensorRT engine, ONNX model or checkpoint")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body in MiB (default: 20)")
    parser.add_argument("--workers-per-model", type=int, default=1, help="inference threads, each with its own "
                        "model instance/execution context; --max-memory is shared among them (default: 1)")
    parser.add_argument("--queue-size", type=int, default=64, help="requests that may wait for a worker; beyond "
                        "that the server answers 503 (default: 64)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds a request may wait and run "
                        "(default: 120), reading the body included")
    for flag, kind, default, text in _GUARD_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument("--no-ui", dest="ui", action="store_false", help="do not serve the web page at GET / "
                        "(the API alone)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_inpaint_options(parser)  # per-request ones are the defaults of requests that do not send them
    return parser


def limits_from_args(args: argparse.Namespace, options: InpaintOptions) -> ServerLimits:
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.workers_per_model < 1:
        raise UserError(f"--workers-per-model must be >= 1, got {args.workers_per_model}")
    return ServerLimits(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=options.max_pixels,
                        queue_size=args.queue_size, request_timeout_s=args.request_timeout,
                        max_memory=resolve_budget(options.max_memory), header_timeout_s=args.header_timeout,
                        max_connections=args.max_connections, max_idle_connections=args.max_idle_connections)


def load_inpainters(model: str, options: InpaintOptions, limits: ServerLimits, workers: int) -> list[Any]:
    """One Inpainter per worker: each owns its session / execution context, so workers never share one; the
    memory budget is split among them."""
    from lama_deploy.runtime.inpainter import Inpainter

    share = "none" if limits.max_memory is None else str(limits.max_memory // workers)
    return [Inpainter.from_path(model, options.replace(max_memory=share)) for _ in range(workers)]


@cli_entry("lama-deploy serve")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    limits = limits_from_args(args, options)
    import_fastapi()
    try:
        import uvicorn
    except ImportError:
        raise missing_dependency("uvicorn", INSTALL_HINT) from None
    check_can_listen(args.host, args.port)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inpainters = load_inpainters(args.model, options, limits, args.workers_per_model)
    app = create_app(inpainters, limits, model_path=str(args.model), ui=args.ui)
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
