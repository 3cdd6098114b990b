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
import os
wheel_modules = [m for m in os.environ.get("LAMA_LANE_WHEEL_MODULES", "").split(",") if m]
facts["wheelhouse_imports"] = {}
for name in wheel_modules:
    try:
        m = __import__(name)
        facts["wheelhouse_imports"][name] = f"{getattr(m, '__version__', 'imported')} from {getattr(m, '__file__', '?')}"
    except Exception as exc:
        facts["wheelhouse_imports"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
json.dump(facts, open(sys.argv[1], "w"), indent=2)
'''

#: What each optional package enables in the lane (shown when it is missing).
NEEDS = {"cuda_python": "TensorRT backend device-memory tests (tests/gpu/test_trt_device_memory.py)",
         "tensorrt": "TensorRT engine tests (marked `tensorrt`) need it or `tensorrt_rtx` (`--wheelhouse`)",
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
    missing = [f"- `{name}` missing: {what}" for name, what in NEEDS.items()
               if not env.get(name) and not (name == "tensorrt" and env.get("tensorrt_rtx"))]
    return lines + ([""] + missing if missing else [])


def render_markdown(summary: dict[str, Any]) -> str:
    env = summary.get("environment", {})
    where = env.get("gpu") or "no NVIDIA GPU"
    lines = [f"# GPU lane: {where}", "", f"`{summary.get('command')}` started {summary.get('started_utc')}, "
             f"status **{summary.get('status')}**" + (f", {summary['seconds']} s" if "seconds" in summary else "") + ".",
             "", "Rerun from a checkout: `python3 -m scripts.gpu_lane --out DIR [--wheelhouse WHEELS]` (docs/gpu.md).", ""]
    if summary.get("dry_run"):
        lines += [f"Dry run ({summary.get('dry_run_reason')}): every GPU test is skipped, engines are built ahead of "
                  "time and not run, the GPU rows say why they are empty; this checks the plan end to end.", ""]
    lines += _plan_lines(summary) + ["## Environment", ""] + _environment_lines(env) + [""]
    if env.get("error"):
        lines += [f"Probe: {env['error']}", ""]
    lines += _wheelhouse_lines(summary.get("wheelhouse"), env)
    lines += _test_lines(summary.get("pytest")) + _engine_lines(summary.get("engine")) + _bench_lines(summary.get("bench"))
    return "\n".join(lines) + "\n"


def _plan_lines(summary: dict[str, Any]) -> list[str]:
    plan = summary.get("plan")
    if not plan:
        return []
    took = {"tests": (summary.get("pytest") or {}).get("limit_s"), "engine": (summary.get("engine") or {}).get("limit_s"),
            "bench": (summary.get("bench") or {}).get("limit_s")}
    cells = [f"{s['stage']} (cap {s['cap_s']:.0f} s" + (f", given {took[s['stage']]:.0f} s" if took.get(s["stage"]) else "")
             + ")" for s in plan["stages"]]
    return [f"Time budget {plan['budget_s']:.0f} s: " + ", ".join(cells) + ".", ""]


def _wheelhouse_lines(wheels: dict[str, Any] | None, env: dict[str, Any]) -> list[str]:
    if not wheels:
        return []
    lines = ["## Wheelhouse", "", f"`{wheels.get('folder')}` -> `{wheels.get('target')}`: "
             + (f"**error**: {wheels['error']}" if wheels.get("error") else f"{wheels.get('method')}, {wheels.get('seconds')} s"),
             ""]
    lines += [f"- `{name}`" for name in wheels.get("wheels", [])]
    imports = env.get("wheelhouse_imports") or {}
    lines += [f"- import `{name}` in a lane child: {_cell(outcome)}" for name, outcome in sorted(imports.items())]
    return lines + [""]


def _engine_lines(engine: dict[str, Any] | None) -> list[str]:
    lines = ["## TensorRT engine on this GPU", ""]
    if not engine:
        return lines + ["Not run.", ""]
    if engine.get("skipped"):
        return lines + [engine["skipped"], ""]
    status = "timed out" if engine.get("timed_out") else f"exit {engine.get('exit_code')}"
    check = engine.get("check") or {}
    lines += [f"`python3 -m scripts.gpu_lane.engine_check`: {status} in {engine.get('seconds')} s"
              + (f"; {check['tensorrt']}" if check.get("tensorrt") else "") + ".", ""]
    if check.get("error"):
        return lines + ["```", check["error"], "```", ""]
    body = []
    for row in check.get("rows", []):
        what = f"{row['config']} {row['fourier']} {row['precision']}" + (f" ({row['fp16_policy']})" if row.get("fp16_policy") else "")
        errors = [f"{key}: {row[key]}" for key in ("export_error", "build_error", "run_error") if row.get(key)]
        run = row.get("run") if isinstance(row.get("run"), str) else ""
        checks = "; ".join(f"{c['shape']}: max abs {c['max_abs']:.2e}, hole {c['hole_mean_255']:.3f}/255, "
                           f"{c['latency_ms']:.2f} ms, {'pass' if c['passed'] else 'FAIL'}" for c in row.get("checks", []))
        body.append(f"| {what} | {_cell(row.get('build_s'))} | {_cell(row.get('engine_mb'))} | "
                    f"{_cell(row.get('compute_capability'))} | {_cell(checks or run or row.get('skipped'))} | "
                    f"{_cell(' / '.join(errors))} |")
    lines += ["| engine | build s | MB | for CC | vs PyTorch (Polygraphy-style, max statistic) | error |",
              "|---|---|---|---|---|---|"] + body
    return lines + [""]


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
    status = "stopped at the stage's time limit" if bench.get("timed_out") else f"exit {bench.get('exit_code')}"
    lines += [f"`{bench.get('command')}`: {status} in {bench.get('seconds')} s.", ""]
    markdown = bench.get("markdown")
    return lines + ([markdown.replace("## GPU rows", "### GPU rows"), ""] if markdown else ["No table written; see bench.log.", ""])
