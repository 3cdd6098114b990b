"""Inpaint one image through a Triton server with `tritonclient` (HTTP or gRPC): the raw-image interface.

    lama-deploy triton-repo --model big-lama.onnx --output repo --repo-kind python
    lama-deploy triton-serve --repository repo &
    python scripts/triton_client.py photo.png photo_mask.png -o out.png                      # HTTP :8000
    python scripts/triton_client.py photo.png photo_mask.png -o out.png --protocol grpc --url 127.0.0.1:8001

The request is what `lama-deploy serve` takes: `image` UINT8 [H, W, 3] (RGB) and `mask` UINT8 [H, W]; the
server thresholds the mask with its configured threshold (pass the same `--threshold` here, it only decides
which pixels of a grey/RGBA input are taken from the answer). Files are read and written with the runtime's
own functions, so the output file equals `lama-deploy inpaint`'s with the same model and options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lama_deploy.errors import UserError, cli_entry, missing_dependency
from lama_deploy.runtime.output import save_image
from lama_deploy.runtime.images import DEFAULT_MAX_PIXELS, load_hole, load_image, mask_threshold, to_output_image, to_pil

PROG = "triton_client.py"
DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}


def client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise missing_dependency("tritonclient", "pip install 'lama-deploy[triton]'") from None
    return module


def infer(url: str, image: np.ndarray, mask: np.ndarray, protocol: str = "http", model: str = "lama",
          timeout_s: float = 60.0, parameters: dict | None = None) -> np.ndarray:
    """One request: uint8 H x W x 3 and H x W in (+ per-request options as parameters), the inpainted uint8
    H x W x 3 out."""
    module = client_module(protocol)
    http_options = {"network_timeout": timeout_s, "connection_timeout": timeout_s} if protocol == "http" else {}
    client = module.InferenceServerClient(url, **http_options)
    try:
        inputs = [module.InferInput("image", list(image.shape), "UINT8"),
                  module.InferInput("mask", list(mask.shape), "UINT8")]
        inputs[0].set_data_from_numpy(np.ascontiguousarray(image))
        inputs[1].set_data_from_numpy(np.ascontiguousarray(mask))
        options = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        if parameters:
            options["parameters"] = parameters
        return client.infer(model, inputs, **options).as_numpy("inpainted")
    except Exception as exc:  # tritonclient's and the socket's errors: one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"Triton request to {url} ({protocol}) failed: {text}") from exc
    finally:
        client.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("mask", help="mask file: pixels > threshold (on the server) are inpainted")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--protocol", choices=sorted(DEFAULT_URLS), default="http")
    parser.add_argument("--url", help="host:port (default: 127.0.0.1:8000 for http, :8001 for grpc)")
    parser.add_argument("--model", default="lama", help="model name in the repository (default: lama)")
    parser.add_argument("--threshold", default="auto", help="mask > T is a hole, sent with each request; auto "
                        "(default): decided from the mask file as `lama-deploy inpaint` does (127 for JPEG/WebP)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    parser.add_argument("--bench", type=int, default=0, metavar="N", help="then send N more requests and print the "
                        "throughput (answers checked equal to the first)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight during --bench")
    return parser


def bench(url: str, image: np.ndarray, mask: np.ndarray, expected: np.ndarray, args: argparse.Namespace) -> str:
    """Throughput of `--bench` requests with `--concurrency` in flight; every answer must equal the first."""
    import concurrent.futures
    import time

    def one(_: int) -> float:
        started = time.perf_counter()
        answer = infer(url, image, mask, args.protocol, args.model, args.timeout, {"threshold": args.sent_threshold})
        if not np.array_equal(answer, expected):
            raise UserError("answers differ between identical requests")
        return time.perf_counter() - started

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.concurrency)) as pool:
        latencies = sorted(pool.map(one, range(args.bench)))
    wall = time.perf_counter() - started
    return (f"{args.bench} requests {image.shape[1]}x{image.shape[0]}, concurrency {args.concurrency}: "
            f"{args.bench / wall:.2f} req/s, latency p50 {latencies[len(latencies) // 2] * 1e3:.0f} ms, "
            f"max {latencies[-1] * 1e3:.0f} ms")


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    loaded = load_image(args.image, DEFAULT_MAX_PIXELS)
    mask_image = to_pil(args.mask, "mask", DEFAULT_MAX_PIXELS, is_mask=True)
    mask = np.asarray(mask_image if mask_image.mode == "L" else mask_image.convert("L"))
    # the decoded array has lost the file's format: send the threshold the file gets from `inpaint`
    threshold = mask_threshold(args.threshold, mask_image.format)
    args.sent_threshold = f"{threshold:g}"
    hole = load_hole(mask, (loaded.width, loaded.height), threshold)  # checks the size, as the server does
    rgb = infer(args.url or DEFAULT_URLS[args.protocol], loaded.rgb, mask, args.protocol, args.model, args.timeout,
                {"threshold": args.sent_threshold})
    save_image(to_output_image(loaded, rgb, hole), Path(args.output))  # grey / alpha restored as the CLI does
    print(f"{PROG}: wrote {args.output} ({args.protocol}, model {args.model})")
    if args.bench > 0:
        print(f"{PROG}: {bench(args.url or DEFAULT_URLS[args.protocol], loaded.rgb, mask, rgb, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
