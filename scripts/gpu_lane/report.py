"""What the GPU lane reads and writes: the environment probe, the per-test event log, gpu_lane.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Run with `python -c PROBE_CODE out.json` in a child: every fact is optional, none may crash the probe.
PROBE_CODE = r'''
import json, platform, subprocess, sys
facts = {"python": platform.python_version(), "platform": platform.platform(), "cuda": False}
def version(dist):
    try:
        from importlib.metadata import version as v
        return v(dist)
    except Exception:
        return None
try:
    import torch
    facts["torch"] = torch.__version__
    facts["torch_cuda"] = torch.version.cuda
    facts["cuda"] = bool(torch.cuda.is_available())
    if facts["cuda"]:
        p = torch.cuda.get_device_properties(0)
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["gpu_count"] = torch.cuda.device_count()
        facts["compute_capability"] = f"{p.major}.{p.minor}"
        facts["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        facts["cudnn"] = torch.backends.cudnn.version()
except Exception as exc:
    facts["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    facts["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    facts["driver"] = out.stdout.strip().splitlines()[0].split(",")[-1].strip() if out.returncode == 0 else None
except Exception as exc:
    facts["driver"] = None
    facts["nvidia_smi"] = f"{type(exc).__name__}: {exc}"
def module(name, attr="__version__"):
    try:
        m = __import__(name, fromlist=["_"])
        return str(getattr(m, attr, "present"))
    except Exception as exc:
        return None
facts["cuda_python"] = (version("cuda-python") or version("cuda-bindings")) if (module("cuda.bindings.runtime")
                        or module("cuda.cudart")) else None
facts["tensorrt"] = module("tensorrt")
facts["tensorrt_rtx"] = module("tensorrt_rtx")
facts["onnxruntime"] = module("onnxruntime")
try:
    import onnxruntime
    facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
except Exception:
    facts["onnxruntime_providers"] = []
facts["onnxruntime_gpu"] = "CUDAExecutionProvider" in facts["onnxruntime_providers"]
for name in ("numpy", "PIL", "onnx", "pytest", "fastapi", "polygraphy", "pytest_timeout"):
    facts[name] = module(name)
json.dump(facts, open(sys.argv[1], "w"), indent=2)
'''

#: What each optional package enables in the lane (shown when it is missing).
NEEDS = {"cuda_python": "TensorRT backend device-memory tests (tests/gpu/test_trt_device_memory.py)",
         "tensorrt": "TensorRT engine tests (marked `tensorrt`): skipped with their reason",
         "onnxruntime_gpu": "ONNX Runtime CUDA rows: not part of this lane"}


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return events


def collect_tests(path: Path) -> dict[str, dict[str, Any]]:
    """nodeid -> {"outcome", "message", "duration"} of every test that reported (failed > skipped > passed)."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    tests: dict[str, dict[str, Any]] = {}
    for event in read_events(path):
        if event.get("event") == "collect_error":
            tests[event["nodeid"] or "<collection>"] = {"outcome": "failed", "message": "collection error: "
                                                        + event.get("message", "")}
        if event.get("event") != "report":
            continue
        old = tests.get(event["nodeid"])
        entry = {"outcome": event["outcome"], "message": event.get("message", ""), "duration": event.get("duration"),
                 "when": event.get("when")}
        if old is None or rank[entry["outcome"]] > rank[old["outcome"]]:
            tests[event["nodeid"]] = entry
    return tests


def collected_tests(path: Path) -> list[str]:
    """Every test id any pytest run of the lane selected."""
    seen: dict[str, None] = {}
    for event in read_events(path):
        if event.get("event") == "collected":
            seen.update(dict.fromkeys(event.get("nodeids", [])))
    return list(seen)


def unfinished_test(path: Path) -> tuple[str, float] | None:
    """(nodeid, start time) of the test that started last and never finished (hung or crashed), if any."""
    open_test = None
    for event in read_events(path):
        if event.get("event") == "start":
            open_test = (event["nodeid"], float(event.get("t", 0)))
        elif event.get("event") == "finish" and open_test and event.get("nodeid") == open_test[0]:
            open_test = None
    return open_test


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value not in (None, "") else "-"


def _environment_lines(env: dict[str, Any]) -> list[str]:
    keys = ["gpu", "gpu_count", "compute_capability", "gpu_memory_gib", "driver", "torch", "torch_cuda", "cudnn",
            "cuda_python", "tensorrt", "tensorrt_rtx", "onnxruntime", "onnxruntime_providers", "python", "platform"]
    lines = ["| fact | value |", "|---|---|"] + [f"| {k} | {_cell(env.get(k))} |" for k in keys]
    missing = [f"- `{name}` missing: {what}" for name, what in NEEDS.items() if not env.get(name)]
    return lines + ([""] + missing if missing else [])


def render_markdown(summary: dict[str, Any]) -> str:
    env = summary.get("environment", {})
    where = env.get("gpu") or "no NVIDIA GPU"
    lines = [f"# GPU lane: {where}", "", f"`{summary.get('command')}` started {summary.get('started_utc')}, "
             f"status **{summary.get('status')}**" + (f", {summary['seconds']} s" if "seconds" in summary else "") + ".", ""]
    if summary.get("dry_run"):
        lines += [f"Dry run ({summary.get('dry_run_reason')}): every GPU test is skipped; this checks collection "
                  "and the summary files only.", ""]
    lines += ["## Environment", ""] + _environment_lines(env) + [""]
    if env.get("error"):
        lines += [f"Probe: {env['error']}", ""]
    lines += _test_lines(summary.get("pytest")) + _bench_lines(summary.get("bench"))
    return "\n".join(lines) + "\n"


def _test_lines(pytest_result: dict[str, Any] | None) -> list[str]:
    if not pytest_result:
        return ["## Tests", "", "Not run.", ""]
    tests = pytest_result["tests"]
    counts: dict[str, int] = {}
    for test in tests.values():
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    runs = "; ".join(f"exit {r.get('exit_code')}{' (timed out)' if r.get('timed_out') else ''} in {r.get('seconds')} s"
                     if "skipped" not in r else r["skipped"] for r in pytest_result["runs"])
    lines = ["## Tests (`pytest -m gpu`)", "", f"{', '.join(f'{n} {k}' for k, n in sorted(counts.items())) or 'no tests'}"
             f" (pytest runs: {runs}).", "", "| test | outcome | s | reason / error |", "|---|---|---|---|"]
    order = {"failed": 0, "passed": 1, "skipped": 2}
    for nodeid, test in sorted(tests.items(), key=lambda kv: (order.get(kv[1]["outcome"], 3), kv[0])):
        lines.append(f"| `{nodeid}` | {test['outcome']} | {_cell(test.get('duration'))} | {_cell(test.get('message'))} |")
    return lines + [""]


def _bench_lines(bench: dict[str, Any] | None) -> list[str]:
    lines = ["## Benchmark (GPU rows)", ""]
    if not bench:
        return lines + ["Not run.", ""]
    if bench.get("skipped"):
        return lines + [bench["skipped"], ""]
    status = "timed out" if bench.get("timed_out") else f"exit {bench.get('exit_code')}"
    lines += [f"`{bench.get('command')}`: {status} in {bench.get('seconds')} s.", ""]
    markdown = bench.get("markdown")
    return lines + ([markdown.replace("## GPU rows", "### GPU rows"), ""] if markdown else ["No table written; see bench.log.", ""])
