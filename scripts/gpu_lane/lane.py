"""The GPU lane: everything a bare NVIDIA GPU machine can verify, in one command, from a plain checkout.

    python3 scripts/gpu_lane.py --out DIR            # on the GPU machine (no install step)
    python3 scripts/gpu_lane.py --out DIR --dry-run  # anywhere (automatic without CUDA): collection + skips

Stages, each in its own child process with its own time limit, so nothing can hang the lane:
1. probe: torch/CUDA, GPU name, driver, cuda-python, tensorrt, onnxruntime(-gpu) - what exists here;
2. the quick GPU benchmark (`lama-deploy bench --device cuda --gpu-quick`: big-lama at 512, batch 1 and 4);
3. `pytest -m gpu` with a per-test watchdog (scripts/gpu_lane_plugin.py); a test that hangs or kills the
   process is recorded and the remaining tests run in a fresh process.
DIR/gpu_lane.json and DIR/gpu_lane.md are rewritten after every stage and at the end, whatever happened.
Exit status 0 when nothing failed (skips are not failures), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a plain checkout: no install step on the GPU machine
    sys.path.insert(0, str(ROOT))

from lama_deploy.scripts.gpu_lane_report import (PROBE_CODE, collect_tests, collected_tests,  # noqa: E402
                                                  render_markdown, unfinished_test)

PLUGIN = "lama_deploy.scripts.gpu_lane_plugin"
DRY_RUN_REASON = "needs an NVIDIA GPU (GPU lane dry run)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu_lane", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_lane.json, gpu_lane.md and logs")
    parser.add_argument("--dry-run", action="store_true", help="skip every GPU test and the GPU rows (automatic "
                        "without CUDA): checks collection and writes the summary files")
    parser.add_argument("--test-timeout", type=float, default=150.0, help="seconds per test (default 150)")
    parser.add_argument("--tests-timeout", type=float, default=200.0, help="seconds for all tests (default 200)")
    parser.add_argument("--bench-timeout", type=float, default=150.0, help="seconds for the benchmark (default 150)")
    parser.add_argument("--no-bench", action="store_true", help="tests only")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a subset of the GPU tests)")
    parser.add_argument("--tests", default="tests", help="test folder or file (default: the checkout's tests)")
    return parser


def child_env(out: Path, dry_run: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["LAMA_MODEL_CACHE"] = str(out / "models")      # big-lama's weights built once for bench and tests
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
    return {"exit_code": code, "timed_out": code is None, "seconds": round(time.monotonic() - start, 1)}


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


def probe(out: Path, env: dict[str, str]) -> dict[str, Any]:
    """Versions and devices, read in a child (a broken driver can hang or crash an import)."""
    path = out / "probe.json"
    result = run_child([sys.executable, "-c", PROBE_CODE, str(path)], env, out / "probe.log", 60)
    if path.is_file():
        return json.loads(path.read_text())
    how = "timed out" if result["timed_out"] else f"exit {result['exit_code']}"
    return {"error": f"probe failed ({how}); see {out / 'probe.log'}", "cuda": False}


def run_bench(out: Path, env: dict[str, str], timeout_s: float, dry_run: bool) -> dict[str, Any]:
    bench_out = out / "bench"
    if dry_run:  # the same command on a tiny config: it must say why its GPU rows are empty
        extra = ["--config", "tiny", "--sizes", "64", "--batch", "1", "--batch-at", "64"]
    else:
        extra = ["--gpu-quick", "--budget-s", str(max(30, int(timeout_s - 25)))]
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--device", "cuda", "--out", str(bench_out)] + extra
    result = run_child(cmd, env, out / "bench.log", timeout_s)
    result["command"] = " ".join(["python3 scripts/benchmark.py"] + cmd[2:])
    data = bench_out / "bench_gpu.json"
    if data.is_file():
        result["gpu"] = json.loads(data.read_text())
        result["markdown"] = (bench_out / "bench_gpu.md").read_text()
    return result


def run_tests(out: Path, env: dict[str, str], per_test_s: float, total_s: float, keyword: str | None,
              tests_path: str = "tests") -> dict[str, Any]:
    """`pytest -m gpu`, rerun without the finished tests after a hang or crash, until done or out of time."""
    events, traces = out / "pytest_events.jsonl", out / "pytest_tracebacks.txt"
    env = {**env, "LAMA_LANE_LOG": str(events), "LAMA_LANE_TEST_TIMEOUT": str(per_test_s), "LAMA_LANE_TRACES": str(traces)}
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
    return {"runs": runs, "tests": tests}


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict[str, Any] = {"status": "running", "command": " ".join(["python3 scripts/gpu_lane.py"] + (argv or sys.argv[1:])),
                               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        summary["environment"] = env_facts = probe(out, child_env(out, False))
        dry_run = args.dry_run or not env_facts.get("cuda")
        summary["dry_run"] = dry_run
        if dry_run:
            summary["dry_run_reason"] = "--dry-run" if args.dry_run else "no CUDA GPU visible to torch"
        env = child_env(out, dry_run)
        write_summary(out, summary)
        if args.no_bench:
            summary["bench"] = {"skipped": "--no-bench"}
        else:
            summary["bench"] = run_bench(out, env, args.bench_timeout, dry_run)
        write_summary(out, summary)
        summary["pytest"] = run_tests(out, env, args.test_timeout, args.tests_timeout, args.keyword, args.tests)
        summary["counts"] = summarise(summary["pytest"]["tests"])
        summary["status"] = "done"
    except BaseException as exc:  # the summary files are written whatever happens
        summary["status"] = f"lane error: {type(exc).__name__}: {exc}"
        raise
    finally:
        summary["seconds"] = round(time.monotonic() - started, 1)
        write_summary(out, summary)
        print(f"gpu_lane: {summary['status']} in {summary['seconds']} s; counts {summary.get('counts')}; "
              f"wrote {out / 'gpu_lane.json'} and {out / 'gpu_lane.md'}", file=sys.stderr)
    failed = summary["counts"]["failed"] or summary["pytest"]["runs"] == [] or _bench_failed(summary["bench"])
    return 1 if failed else 0


def _bench_failed(bench: dict[str, Any]) -> bool:
    return bool(bench.get("timed_out") or (bench.get("exit_code") not in (None, 0)))


if __name__ == "__main__":
    sys.exit(main())
