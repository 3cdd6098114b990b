"""What the spectrum padding costs on a CPU: one Fourier unit's ONNX Runtime time, padded and not, in one run.

    python3 -m lama_deploy.scripts.bench.fourier_unit                      # big-lama's unit, 64x64 and 128x128
    python3 -m lama_deploy.scripts.bench.fourier_unit --sizes 64 --repeats 5

One FourierUnit (random weights; big-lama's has 192 channels, 384 in its spectral conv) is exported per
DFT-as-matmul form and spectrum alignment (1: Wf = W/2+1 columns; 8: padded with zero columns to a multiple
of 8, `lama_model.fourier.spectrum_width`), with dynamic H and W. Every session runs with one intra-op thread,
and each call is timed in CPU time of the calling thread (`time.thread_time`, where ONNX Runtime computes with
one thread), interleaved across the sessions, so that other load on the machine shifts all of them alike.
Reported: the minimum and median per session, and padded / unpadded ratios of both.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from typing import Any

FORMS = ("matmul", "matmul-dense")


def export_unit(form: str, align: int, channels: int, seed: int = 0) -> bytes:
    """ONNX bytes of one Fourier unit (dynamic N, H, W) in `form` with the spectrum padded to `align`."""
    import torch

    from lama_model.ffc import FourierUnit
    from lama_model.fourier import set_spectrum_align

    torch.manual_seed(seed)
    unit = set_spectrum_align(FourierUnit(channels, fourier=form).eval(), align)
    buffer = io.BytesIO()
    axes = {0: "n", 2: "h", 3: "w"}
    with torch.no_grad():
        torch.onnx.export(unit, (torch.randn(1, channels, 16, 16),), buffer, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": axes, "y": axes}, dynamo=False)
    return buffer.getvalue()


def measure(channels: int, sizes: list[int], repeats: int, aligns: tuple[int, int] = (1, 8)) -> list[dict[str, Any]]:
    """Rows (form, size, align, min ms, median ms, ratios vs align 1) from interleaved single-thread runs."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = {(form, align): ort.InferenceSession(export_unit(form, align, channels), options,
                                                    providers=["CPUExecutionProvider"])
                for form in FORMS for align in aligns}
    rows = []
    for size in sizes:
        x = np.random.default_rng(size).standard_normal((1, channels, size, size)).astype(np.float32)
        times: dict[tuple[str, int], list[float]] = {key: [] for key in sessions}
        for session in sessions.values():
            session.run(None, {"x": x})  # warm-up
        for _ in range(repeats):
            for key, session in sessions.items():
                start = time.thread_time()
                session.run(None, {"x": x})
                times[key].append((time.thread_time() - start) * 1e3)
        for form, align in sessions:
            base, mine = times[(form, aligns[0])], times[(form, align)]
            rows.append({"form": form, "size": size, "align": align, "min_ms": round(min(mine), 2),
                         "median_ms": round(statistics.median(mine), 2),
                         "min_ratio": round(min(mine) / min(base), 3),
                         "median_ratio": round(statistics.median(mine) / statistics.median(base), 3)})
    return rows


def markdown(rows: list[dict[str, Any]], channels: int, repeats: int) -> str:
    lines = [f"One Fourier unit ({channels} channels), ONNX Runtime CPU, 1 thread, CPU time of {repeats} interleaved "
             "runs per session (random weights).", "",
             "| form | map | Wf align | min ms | median ms | min vs align 1 | median vs align 1 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['form']} | {r['size']}x{r['size']} | {r['align']} | {r['min_ms']:.2f} | {r['median_ms']:.2f} | "
              f"{r['min_ratio']:.3f} | {r['median_ratio']:.3f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lama_deploy.scripts.bench.fourier_unit",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--channels", type=int, default=192, help="the unit's channels (big-lama: 192)")
    parser.add_argument("--sizes", default="64,128", help="square map sides (512 and 1024 px images: 64,128)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per session (default 15)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"fourier_unit: error: --sizes must be comma-separated integers, not {args.sizes!r}", file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 2 or args.channels < 1 or args.repeats < 1:
        print("fourier_unit: error: --sizes >= 2, --channels >= 1 and --repeats >= 1", file=sys.stderr)
        return 2
    print(markdown(measure(args.channels, sizes, args.repeats), args.channels, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
