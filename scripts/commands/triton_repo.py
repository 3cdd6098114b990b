"""`lama-deploy triton-repo`: write a Triton Inference Server model repository (raw, python or ensemble kind)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lama_deploy.errors import cli_entry
from lama_deploy.runtime.options import InpaintOptions
from lama_deploy.runtime.triton.repo import KINDS, REPO_KINDS, repo_kind, write_triton_repo

from .arguments import add_inpaint_options, make_parser, options_from_args

PROG = "lama-deploy triton-repo"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="TensorRT engine (.engine/.plan, with its .json sidecar) or ONNX")
    parser.add_argument("--output", required=True, help="model repository folder (created if missing)")
    parser.add_argument("--name", default="lama", help="model name = folder name in the repository (default: lama)")
    parser.add_argument("--repo-kind", choices=("auto",) + REPO_KINDS, default="auto",
                        help="raw: the model on tensorrt_plan/onnxruntime_onnx, float NCHW in and out; python: raw "
                             "images (or encoded files) in and out through the project's runtime in one "
                             "python-backend model; ensemble: python pre-processing -> raw model -> python "
                             "post-processing (default: ensemble for .engine/.onnx on --kind gpu, python otherwise)")
    parser.add_argument("--max-batch", type=int, default=4, help="Triton max_batch_size (<= the engine profile's max "
                        "N); the ensemble sends the crops of one image as one batch of at most this many")
    parser.add_argument("--instances", type=int, default=1, help="model instances (execution contexts) per device")
    parser.add_argument("--kind", choices=sorted(KINDS), help="instance kind (engines: gpu only; default: gpu, "
                        "cpu for --repo-kind python, whose runtime still picks a GPU when it has one)")
    parser.add_argument("--dynamic-batching", action=argparse.BooleanOptionalAction, default=True,
                        help="let Triton group concurrent same-size requests into batches (default: on)")
    parser.add_argument("--preferred-batch", type=int, nargs="+", default=[], metavar="N",
                        help="preferred batch sizes for the dynamic batcher")
    parser.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="how long the batcher may hold a request to fill a batch (microseconds)")
    parser.add_argument("--force", action="store_true", help="replace an existing model folder of the same name")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="python: no warm-up request")
    add_inpaint_options(parser)  # python and ensemble kinds: as `lama-deploy inpaint` (config parameters)
    return parser


def _write_raw_image_repo(args: argparse.Namespace, kind: str, options: InpaintOptions) -> int:
    from lama_deploy.runtime.triton.image_repos import write_ensemble_repo, write_python_repo

    if kind == "python":
        result = write_python_repo(args.model, args.output, name=args.name, instances=args.instances,
                                   kind=KINDS[args.kind], options=options, warmup=args.warmup, force=args.force)
    else:
        result = write_ensemble_repo(args.model, args.output, name=args.name, max_batch=args.max_batch,
                                     instances=args.instances, kind=args.kind, preferred_batch=args.preferred_batch,
                                     max_queue_delay_us=args.max_queue_delay_us, options=options, force=args.force)
    print(f"wrote {result.repository}: {kind} repository, models {', '.join(result.models)}; "
          f"request model '{args.name}' with image UINT8 [H, W, 3] and mask UINT8 [H, W]")
    for note in result.notes:
        print(f"note: {note}")
    print(f"run: lama-deploy triton-serve --repository {result.repository}  (see docs/triton.md)")
    return 0


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    kind = repo_kind(Path(args.model), args.repo_kind, args.kind or "gpu")
    args.kind = args.kind or ("cpu" if kind == "python" else "gpu")
    if kind != "raw":
        return _write_raw_image_repo(args, kind, options)
    result = write_triton_repo(args.model, args.output, name=args.name, max_batch=args.max_batch,
                               instances=args.instances, kind=args.kind, dynamic_batching=args.dynamic_batching,
                               preferred_batch=args.preferred_batch, max_queue_delay_us=args.max_queue_delay_us,
                               force=args.force)
    print(f"wrote {result.model_dir} ({result.platform}, max_batch_size {result.max_batch_size})")
    for note in result.notes:
        print(f"note: {note}")
    print(f"run: tritonserver --model-repository={Path(result.model_dir).parent}  (see docs/triton.md)")
    return 0
