"""Peak host memory of one inference, each case in a fresh process (peak RSS: the process's VmHWM).

    python -m lama_deploy.scripts.bench.memory --model big-lama.onnx [--sizes 1024 2048] [--big 6000]

Rows: ONNX Runtime CPU with its default session options ("before") and with the runtime's memory-lean
options ("after", what `OnnxRuntimeBackend` uses), per image size; then `lama-deploy inpaint` on a
big x big image under `--max-memory` (time, peak RSS, outcome). Prints a markdown table. The per-pixel
costs declared in `lama_deploy.runtime.memory` come from these numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lama_deploy import contract as C
from lama_deploy.host import peak_rss_mb


def _peak_rss_bytes() -> int:
    return int(peak_rss_mb() * 2**20)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_session(model: str, size: int, lean: bool) -> dict:
    """One ORT CPU inference at size x size in this process: peak RSS, wall and CPU seconds."""
    import onnxruntime as ort

    from lama_deploy.runtime.backends.ort_backend import ARENA_SHRINKAGE, memory_lean_options

    if lean:
        options, run_options = memory_lean_options(ort), ort.RunOptions()
        run_options.add_run_config_entry(*ARENA_SHRINKAGE)
    else:
        options, run_options = ort.SessionOptions(), None
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    loaded, cpu = _peak_rss_bytes(), _cpu_seconds()
    rng = np.random.default_rng(0)
    feed = {C.IMAGE: rng.random((1, 3, size, size), dtype=np.float32),
            C.MASK: (rng.random((1, 1, size, size)) > 0.5).astype(np.float32)}
    start = time.perf_counter()
    session.run([C.OUTPUT], feed, run_options)
    return {"wall_s": time.perf_counter() - start, "cpu_s": _cpu_seconds() - cpu, "loaded": loaded,
            "peak": _peak_rss_bytes()}


def measure_cli(model: str, side: int, max_memory: str) -> dict:
    """`lama-deploy inpaint` in this process on a side x side image with a centred hole, under max_memory."""
    from PIL import Image

    from lama_deploy.runtime import cli

    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        mask = np.zeros((side, side), np.uint8)
        mask[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 255
        Image.fromarray(image).save(Path(folder, "big.jpg"), quality=90)
        Image.fromarray(mask).save(Path(folder, "big_mask.png"))
        del image, mask
        start = time.perf_counter()
        try:
            code = cli.main([str(Path(folder, "big.jpg")), str(Path(folder, "big_mask.png")), "-o",
                             str(Path(folder, "out.png")), "--model", model, "--device", "cpu",
                             "--max-memory", max_memory])
        except SystemExit as exit_:
            code = exit_.code
    return {"wall_s": time.perf_counter() - start, "exit": code, "peak": _peak_rss_bytes()}


def _in_child(case: dict) -> dict:
    """Run one case in a fresh interpreter, so each peak RSS is that case's alone."""
    done = subprocess.run([sys.executable, "-m", "lama_deploy.scripts.bench.memory", "--child", json.dumps(case)],
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(lines[-1])


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f}"


def table(model: str, sizes: list[int], big: int, max_memory: str, variants: list[str]) -> str:
    rows = ["| case | image | peak RSS (GB) | after load (GB) | wall (s) | CPU (s) | outcome |",
            "|---|---|---|---|---|---|---|"]
    for size in sizes:
        for variant in variants:
            r = _in_child({"kind": "session", "model": model, "size": size, "lean": variant == "after"})
            label = "ORT CPU, default options" if variant == "before" else "ORT CPU, lama-deploy options"
            rows.append(f"| {label} | {size}x{size} | " + (
                f"{_gb(r['peak'])} | {_gb(r['loaded'])} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | ok |"
                if "error" not in r else f"- | - | - | - | {r['error']} |"))
            print(rows[-1], file=sys.stderr, flush=True)
    if big:
        r = _in_child({"kind": "cli", "model": model, "side": big, "max_memory": max_memory})
        outcome = "error" if "error" in r else ("completed" if r["exit"] == 0 else f"refused (exit {r['exit']})")
        rows.append(f"| `lama-deploy inpaint --max-memory {max_memory}` | {big}x{big} | " + (
            f"{_gb(r['peak'])} | - | {r['wall_s']:.1f} | - | {outcome} |" if "error" not in r else
            f"- | - | - | - | {r['error']} |"))
    machine = f"{platform.machine()}, {platform.processor() or platform.system()}"
    return "\n".join(rows) + f"\n\nbig-lama fp32 ONNX, random weights, one image per fresh process; {machine}.\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lama_deploy.scripts.bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an exported big-lama .onnx (fp32)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048])
    parser.add_argument("--variants", nargs="*", default=["before", "after"], choices=["before", "after"])
    parser.add_argument("--big", type=int, default=6000, help="side of the --max-memory case (0: skip it)")
    parser.add_argument("--max-memory", default="4GB")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        case = json.loads(args.child)
        result = (measure_session(case["model"], case["size"], case["lean"]) if case["kind"] == "session"
                  else measure_cli(case["model"], case["side"], case["max_memory"]))
        print(json.dumps(result))
        return 0
    if not args.model:
        print("bench_memory: error: pass --model big-lama.onnx (export one with lama-deploy export)",
              file=sys.stderr)
        return 2
    print(table(args.model, args.sizes, args.big, args.max_memory, args.variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
