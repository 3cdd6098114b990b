"""Crop strategy vs whole-image inference on a large photo with small holes: time and peak memory.

    python -m lama_deploy.scripts.bench.crop --model big-lama.onnx               # 4000x3000, two holes
    python -m lama_deploy.scripts.bench.crop --model tiny.onnx --size 960x640    # a quick check

Each strategy runs once in a fresh process (spawned, so its peak RSS is its own): load the model through
`Inpainter` exactly as `lama-deploy inpaint` does, inpaint a seeded photo-like scene
(`lama_model.synthetic.synthetic_image`) with two small holes, and report the time of that one
inpaint, the model load, and the process's peak resident memory (VmHWM). A whole-image run of a 12 MP
photo can need tens of GB on ONNX Runtime CPU: the parent watches the child's memory and stops it at
`--rss-cap-gb`, reporting that instead of letting the machine's out-of-memory killer pick a victim.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lama_deploy.host import peak_rss_mb, proc_status_mb

STRATEGIES = ("crop", "whole")


def scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded photo-like image and a mask with two small holes (about 1% and 0.5% of the short side squared)."""
    from lama_model.synthetic import synthetic_image

    rgb = (synthetic_image(height, width, np.random.default_rng(seed)) * 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    side = max(min(height, width) // 25, 4)
    mask[height // 3:height // 3 + side, width // 5:width // 5 + side + side // 5] = 255
    mask[2 * height // 3:2 * height // 3 + side // 2, 3 * width // 4:3 * width // 4 + side] = 255
    return rgb, mask


def _child(job: dict[str, Any], results: mp.Queue) -> None:
    sys.path.insert(0, job["repo"])
    try:
        from lama_deploy.runtime import Inpainter

        rgb, mask = scene(job["height"], job["width"], job["seed"])
        start = time.perf_counter()
        inpainter = Inpainter.from_path(job["model"], backend=job["backend"], strategy=job["strategy"])
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        result = inpainter.inpaint(rgb, mask)
        seconds = time.perf_counter() - start
        out = result.array
        outside_kept = bool(np.array_equal(out[mask == 0], rgb[mask == 0]))
        planned = inpainter.prepare(rgb, mask).plan.runs  # the pipeline's own plan step, as inpaint ran it
        inpainter.close()
        runs = [f"{r.tensor_size[1]}x{r.tensor_size[0]}" for r in planned]
        results.put(("ok", {"seconds": seconds, "load_s": load_s, "peak_rss_mb": peak_rss_mb(),
                            "ran": result.strategy, "runs": runs, "backend": result.backend,
                            "outside_kept": outside_kept, "checksum": int(out.astype(np.int64).sum())}))
    except BaseException as exc:  # one line to the parent, whatever happened
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        results.put(("error", f"{type(exc).__name__}: {line}"))


def measure(job: dict[str, Any], timeout_s: float, rss_cap_mb: float) -> dict[str, Any]:
    """One strategy in a spawned child; stopped (and said so) past `timeout_s` or `rss_cap_mb`."""
    context = mp.get_context("spawn")
    results: mp.Queue = context.Queue()
    child = context.Process(target=_child, args=(job, results), daemon=True)
    child.start()
    deadline, peak, outcome = time.monotonic() + timeout_s, 0.0, None
    try:
        while outcome is None:
            try:
                outcome = results.get(timeout=0.5)
            except queue.Empty:
                peak = max(peak, proc_status_mb(child.pid, "VmRSS") or 0.0)
                if peak > rss_cap_mb:
                    outcome = ("stopped", f"stopped at {peak / 1024:.1f} GB RSS (cap {rss_cap_mb / 1024:.0f} GB)")
                elif time.monotonic() > deadline:
                    outcome = ("stopped", f"stopped after {timeout_s:.0f} s (timeout)")
                elif not child.is_alive():
                    outcome = ("error", f"child died (exit code {child.exitcode}; -9 is usually the OOM killer)")
    finally:
        if outcome and outcome[0] != "ok" and child.is_alive():
            child.kill()
        child.join(timeout=30)
    if outcome[0] == "ok":
        return outcome[1]
    return {"error": outcome[1], "peak_rss_mb": peak or None}


def markdown(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [f"{args.width}x{args.height} synthetic photo, two small holes, `{Path(args.model).name}` on "
             f"{args.backend} ({os.cpu_count()} CPU threads, {platform.machine()}); one inpaint per strategy in a "
             f"fresh process; peak RSS = the process's VmHWM (Python + runtime + model + activations).", "",
             "| strategy | ran | model inputs | inpaint time | model load | peak RSS | outside holes kept |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        if "error" in r:
            rss = f"> {r['peak_rss_mb'] / 1024:.1f} GB" if r.get("peak_rss_mb") else "-"
            lines.append(f"| {name} | {r['error']} | - | - | - | {rss} | - |")
            continue
        lines.append(f"| {name} | {r['ran']} | {', '.join(r['runs'])} | {r['seconds']:.2f} s | {r['load_s']:.2f} s | "
                     f"{r['peak_rss_mb'] / 1024:.2f} GB | {'yes' if r['outside_kept'] else 'NO'} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lama_deploy.scripts.bench.crop", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ONNX model, engine or checkpoint (as `inpaint --model`)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--size", default="4000x3000", help="WxH of the photo (default 4000x3000)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default crop,whole)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per strategy before it is stopped")
    parser.add_argument("--rss-cap-gb", type=float, default=12, help="stop a run whose RSS passes this (default 12)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"bench_crop: error: --size {args.size!r} is not WxH, e.g. 4000x3000", file=sys.stderr)
        return 2
    if not Path(args.model).is_file():
        print(f"bench_crop: error: --model {args.model} does not exist", file=sys.stderr)
        return 2
    repo = str(Path(__file__).resolve().parents[2])
    rows = []
    for name in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        job = {"repo": repo, "model": str(args.model), "backend": args.backend, "strategy": name,
               "height": args.height, "width": args.width, "seed": args.seed}
        rows.append((name, measure(job, args.timeout, args.rss_cap_gb * 1024)))
    print(markdown(rows, args))
    return 1 if any("error" in r and "stopped" not in r["error"] for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
