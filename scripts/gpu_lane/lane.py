"""The GPU lane's stages, each a child process with its own time limit, inside one total budget (8 minutes).

1. wheelhouse (with `--wheelhouse DIR`): local wheels installed into DIR_OUT/site, put on every child's
   PYTHONPATH (scripts/gpu_lane/wheelhouse.py);
2. probe: torch/CUDA, GPU name, driver, cuda-python, TensorRT(-RTX), onnxruntime(-gpu) - what exists here;
3. `pytest -m gpu` with a per-test watchdog (plugin.py); a test that hangs or kills the process is recorded
   and the remaining tests run in a fresh process;
4. engine: TensorRT(-RTX) builds an engine for this GPU and runs it against PyTorch (engine_check.py);
5. bench: the GPU rows (`lama-deploy bench --device cuda --gpu-quick`), cut to the time left; a stopped run
   leaves its rows so far (bench_gpu.partial.json), which the summary shows.
Each stage gets min(its cap, what the budget leaves after reserving the minimum of every later stage), so
the whole lane ends within `--budget-s`. DIR/gpu_lane.json and DIR/gpu_lane.md are rewritten after every
stage, whatever happened. Exit status 0 when nothing failed (skips are not failures), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import wheelhouse
from .report import PROBE_CODE, collect_tests, collected_tests, render_markdown, unfinished_test

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "scripts.gpu_lane.plugin"
COMMAND = "python3 -m scripts.gpu_lane"
#: The whole lane: one GPU session's command limit leaves room to rerun once within 15 minutes of device time.
DEFAULT_BUDGET_S = 480.0


@dataclass(frozen=True)
class Stage:
    name: str
    cap_s: float       # most it may take
    minimum_s: float   # kept for it while earlier stages run


STAGES = (Stage("wheelhouse", 90, 0), Stage("probe", 60, 15), Stage("tests", 180, 60), Stage("engine", 120, 30),
          Stage("bench", 300, 60))


class Budget:
    """The lane's total time; a stage's limit leaves every later stage its minimum."""

    def __init__(self, total_s: float, stages: list[Stage]) -> None:
        self.total_s = total_s
        self.stages = stages
        self.start = time.monotonic()

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.start)

    def limit(self, name: str, cap_s: float | None = None) -> float:
        names = [s.name for s in self.stages]
        stage = self.stages[names.index(name)]
        later = sum(s.minimum_s for s in self.stages[names.index(name) + 1:])
        return max(0.0, min(cap_s if cap_s is not None else stage.cap_s, self.left() - later))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=COMMAND, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_lane.json, gpu_lane.md and logs")
    parser.add_argument("--dry-run", action="store_true", help="skip every GPU test, build engines ahead of time "
                        "and leave the GPU rows empty (automatic without CUDA): the plan, end to end on a CPU")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for the whole lane (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--wheelhouse", help="folder of wheels (.whl, .whl.xz, .whl.zst, split .partNNN) installed "
                        "into OUT/site for the lane's processes, e.g. TensorRT-RTX for a machine with no network")
    parser.add_argument("--test-timeout", type=float, default=150.0, help="seconds per test (default 150)")
    parser.add_argument("--tests-timeout", type=float, help="cap of the test stage (default 180)")
    parser.add_argument("--bench-timeout", type=float, help="cap of the benchmark stage (default 300)")
    parser.add_argument("--engine-timeout", type=float, help="cap of the engine stage (default 120)")
    parser.add_argument("--big-lama-engine", action="store_true", help="engine stage: big-lama too if time allows")
    parser.add_argument("--no-bench", action="store_true", help="no benchmark stage")
    parser.add_argument("--no-engine", action="store_true", help="no engine stage")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a subset of the GPU tests)")
    parser.add_argument("--tests", default="tests", help="test folder or file (default: the checkout's tests)")
    return parser


def child_env(out: Path, dry_run: bool, site: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    first = [str(ROOT)] + ([str(site)] if site is not None else [])
    env["PYTHONPATH"] = os.pathsep.join(first + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["LAMA_MODEL_CACHE"] = str(out / "models")      # tests/model_cache.py: each model built once for all runs
    env["LAMA_TEST_THREADS"] = str(max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
    env["PYTHONUNBUFFERED"] = "1"
    if dry_run:
        env["LAMA_GPU_DRY_RUN"] = "1"
    return env


def run_child(cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> dict[str, Any]:
    """Run `cmd` in its own process group, output to `log`; kill the whole group after `timeout_s`."""
    start = time.monotonic()
    with open(log, "ab") as sink:
        sink.write(f"\n$ {' '.join(cmd)}\n".encode())
        sink.flush()
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code: int | None = process.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            _kill_group(process)
            code = None
    return {"exit_code": code, "timed_out": code is None, "seconds": round(time.monotonic() - start, 1),
            "limit_s": round(timeout_s, 1)}


def _kill_group(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def probe(out: Path, env: dict[str, str], timeout_s: float, modules: list[str]) -> dict[str, Any]:
    """Versions and devices, read in a child (a broken driver can hang or crash an import)."""
    path = out / "probe.json"
    env = {**env, "LAMA_LANE_WHEEL_MODULES": ",".join(modules)}
    result = run_child([sys.executable, "-c", PROBE_CODE, str(path)], env, out / "probe.log", timeout_s)
    if path.is_file():
        return json.loads(path.read_text())
    how = "timed out" if result["timed_out"] else f"exit {result['exit_code']}"
    return {"error": f"probe failed ({how}); see {out / 'probe.log'}", "cuda": False}


def run_bench(out: Path, env: dict[str, str], timeout_s: float, dry_run: bool) -> dict[str, Any]:
    from lama_deploy.scripts.bench.gpu_report import PARTIAL, gpu_markdown

    bench_out = out / "bench"
    if dry_run:  # the same command on a tiny config: it must say why its GPU rows are empty
        extra = ["--config", "tiny", "--sizes", "64", "--batch", "1", "--batch-at", "64"]
    else:  # the bench stops starting cells 30 s before the stage's end: writing its files takes a moment
        extra = ["--gpu-quick", "--budget-s", str(max(20, int(timeout_s - 30)))]
    cmd = [sys.executable, "-m", "lama_deploy.scripts.bench", "--device", "cuda", "--out", str(bench_out)] + extra
    result = run_child(cmd, env, out / "bench.log", timeout_s)
    result["command"] = " ".join(["lama-deploy bench"] + cmd[3:])
    for name in ("bench_gpu.json", PARTIAL):
        data = bench_out / name
        if data.is_file():
            result["gpu"] = json.loads(data.read_text())
            result["markdown"] = gpu_markdown(result["gpu"], result["command"])
            break
    return result


def run_engine(out: Path, env: dict[str, str], timeout_s: float, dry_run: bool, big_lama: bool) -> dict[str, Any]:
    folder = out / "engine"
    cmd = [sys.executable, "-m", "scripts.gpu_lane.engine_check", "--out", str(folder),
           "--budget-s", str(max(10, int(timeout_s - 10)))] + (["--dry-run"] if dry_run else []) \
        + (["--big-lama"] if big_lama else [])
    result = run_child(cmd, env, out / "engine.log", timeout_s)
    if (folder / "engine.json").is_file():
        result["check"] = json.loads((folder / "engine.json").read_text())
    return result


def run_tests(out: Path, env: dict[str, str], per_test_s: float, total_s: float, keyword: str | None,
              tests_path: str = "tests") -> dict[str, Any]:
    """`pytest -m gpu`, rerun without the finished tests after a hang or crash, until done or out of time."""
    events, traces = out / "pytest_events.jsonl", out / "pytest_tracebacks.txt"
    env = {**env, "LAMA_LANE_LOG": str(events), "LAMA_LANE_TEST_TIMEOUT": str(min(per_test_s, total_s)),
           "LAMA_LANE_TRACES": str(traces)}
    deadline = time.monotonic() + total_s
    runs: list[dict[str, Any]] = []
    lost: dict[str, str] = {}
    while True:
        done = collect_tests(events)
        cmd = [sys.executable, "-m", "pytest", tests_path, "-m", "gpu", "-p", PLUGIN, "-p", "no:cacheprovider", "-q",
               "-rA", "-o", "addopts=", "--continue-on-collection-errors", f"--junitxml={out / f'junit-{len(runs)}.xml'}"]
        cmd += ["-k", keyword] if keyword else []
        cmd += [arg for nodeid in sorted(set(done) | set(lost)) for arg in ("--deselect", nodeid)]
        remaining = deadline - time.monotonic()
        if remaining < 5:
            runs.append({"skipped": "no time left for another pytest run"})
            break
        result = run_child(cmd, env, out / "pytest.log", remaining)
        runs.append(result)
        hung = unfinished_test(events)
        if hung is None or len(runs) >= 6:
            break
        nodeid, started = hung
        ran_s = time.time() - started
        if result["timed_out"]:
            why = f"stopped when the lane's test time ({total_s:.0f} s) ran out, after {ran_s:.0f} s"
        elif ran_s >= per_test_s - 1:
            why = f"timed out: no result within {per_test_s:.0f} s (tracebacks in {traces.name})"
        else:
            why = f"the test process died (exit {result['exit_code']}) after {ran_s:.0f} s; see pytest.log"
        lost[nodeid] = why
    tests = collect_tests(events)
    for nodeid, message in lost.items():
        tests[nodeid] = {"outcome": "failed", "message": message}
    for nodeid in collected_tests(events):
        if nodeid not in tests:  # selected, never started: the lane's test time ran out first
            tests[nodeid] = {"outcome": "failed", "message": f"not run: the lane's test time ({total_s:.0f} s) ran out"}
    return {"runs": runs, "tests": tests, "limit_s": round(total_s, 1)}


def summarise(tests: dict[str, dict]) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for test in tests.values():
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    return counts


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    for name, text in (("gpu_lane.json", json.dumps(summary, indent=2) + "\n"), ("gpu_lane.md", render_markdown(summary))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def _stage_skipped(reason: str) -> dict[str, Any]:
    return {"skipped": reason}


def run_lane(args: argparse.Namespace, argv: list[str], out: Path, summary: dict[str, Any]) -> None:
    """Every stage in order, the summary rewritten after each."""
    stages = [s for s in STAGES if not (s.name == "wheelhouse" and not args.wheelhouse)
              and not (s.name == "bench" and args.no_bench) and not (s.name == "engine" and args.no_engine)]
    budget = Budget(args.budget_s, stages)
    summary["plan"] = {"budget_s": args.budget_s, "stages": [{"stage": s.name, "cap_s": s.cap_s, "minimum_s": s.minimum_s}
                                                             for s in stages]}
    site, modules = None, []
    if args.wheelhouse:
        summary["wheelhouse"] = wheelhouse.install(Path(args.wheelhouse).resolve(), out / "site",
                                                   budget.limit("wheelhouse"))
        if "error" not in summary["wheelhouse"]:
            site, modules = out / "site", summary["wheelhouse"]["modules"]
        write_summary(out, summary)
    summary["environment"] = env_facts = probe(out, child_env(out, False, site), budget.limit("probe"), modules)
    dry_run = args.dry_run or not env_facts.get("cuda")
    summary["dry_run"] = dry_run
    if dry_run:
        summary["dry_run_reason"] = "--dry-run" if args.dry_run else "no CUDA GPU visible to torch"
    env = child_env(out, dry_run, site)
    write_summary(out, summary)
    summary["pytest"] = run_tests(out, env, args.test_timeout, budget.limit("tests", args.tests_timeout), args.keyword,
                                  args.tests)
    summary["counts"] = summarise(summary["pytest"]["tests"])
    write_summary(out, summary)
    if args.no_engine:
        summary["engine"] = _stage_skipped("--no-engine")
    else:
        summary["engine"] = run_engine(out, env, budget.limit("engine", args.engine_timeout), dry_run,
                                       args.big_lama_engine)
    write_summary(out, summary)
    if args.no_bench:
        summary["bench"] = _stage_skipped("--no-bench")
    else:
        summary["bench"] = run_bench(out, env, budget.limit("bench", args.bench_timeout), dry_run)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict[str, Any] = {"status": "running", "command": " ".join([COMMAND] + argv),
                               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        run_lane(args, argv, out, summary)
        summary["status"] = "done"
    except BaseException as exc:  # the summary files are written whatever happens
        summary["status"] = f"lane error: {type(exc).__name__}: {exc}"
        raise
    finally:
        summary["seconds"] = round(time.monotonic() - started, 1)
        write_summary(out, summary)
        print(f"gpu_lane: {summary['status']} in {summary['seconds']} s; counts {summary.get('counts')}; "
              f"wrote {out / 'gpu_lane.json'} and {out / 'gpu_lane.md'}", file=sys.stderr)
    return 1 if failures(summary) else 0


def failures(summary: dict[str, Any]) -> list[str]:
    """What failed: tests, a stage that crashed or ran out of time, a wheelhouse that did not install."""
    found = []
    if summary.get("counts", {}).get("failed") or not summary.get("pytest", {}).get("runs"):
        found.append("tests")
    for stage in ("bench", "engine"):
        result = summary.get(stage) or {}
        if result.get("timed_out") or result.get("exit_code") not in (None, 0):
            found.append(stage)
    if (summary.get("wheelhouse") or {}).get("error"):
        found.append("wheelhouse")
    return found
