"""pytest plugin of the GPU lane: one JSON line per test event, and a per-test watchdog.

Loaded with `-p scripts.gpu_lane.plugin` by the GPU lane (scripts/gpu_lane/lane.py; pytest-timeout may be missing
on a bare GPU machine). Every event is flushed as it happens, so a crash or a kill loses nothing already
reported. The watchdog is `faulthandler.dump_traceback_later(exit=True)`: a test that outlives
$LAMA_LANE_TEST_TIMEOUT seconds gets every thread's traceback written to $LAMA_LANE_TRACES and the process
ends; the lane sees a test that started and never reported, records it as timed out and runs the rest.
"""

from __future__ import annotations

import faulthandler
import json
import os
import time
from typing import Any

LOG_ENV, TIMEOUT_ENV, TRACES_ENV = "LAMA_LANE_LOG", "LAMA_LANE_TEST_TIMEOUT", "LAMA_LANE_TRACES"
_state: dict[str, Any] = {}


def _emit(event: dict[str, Any]) -> None:
    log = _state.get("log")
    if log is not None:
        log.write(json.dumps({**event, "t": round(time.time(), 3)}) + "\n")
        log.flush()
        os.fsync(log.fileno())


def _first_line(report: Any) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = str(getattr(report, "longreprtext", "") or report.longrepr or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0][1:].strip() if errors else (lines[-1] if lines else ""))[:500]


def pytest_configure(config: Any) -> None:
    if os.environ.get(LOG_ENV):
        _state["log"] = open(os.environ[LOG_ENV], "a", encoding="utf-8")
    if os.environ.get(TRACES_ENV):
        _state["traces"] = open(os.environ[TRACES_ENV], "a", encoding="utf-8")
    _state["timeout"] = float(os.environ.get(TIMEOUT_ENV, "0") or 0)


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _emit({"event": "collect_error", "nodeid": report.nodeid, "message": _first_line(report)})


def pytest_collection_finish(session: Any) -> None:
    """Every selected test, so the lane can name those a timeout left unrun."""
    _emit({"event": "collected", "nodeids": [item.nodeid for item in session.items]})


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _emit({"event": "start", "nodeid": nodeid})
    if _state.get("timeout"):
        traces = _state.get("traces")
        if traces is not None:
            traces.write(f"\n--- {nodeid}: tracebacks if it outlives {_state['timeout']:.0f} s ---\n")
            traces.flush()
        faulthandler.dump_traceback_later(_state["timeout"], exit=True, file=traces or 2)


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or report.outcome != "passed":
        _emit({"event": "report", "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
               "duration": round(report.duration, 3), "message": "" if report.passed else _first_line(report)})


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    faulthandler.cancel_dump_traceback_later()
    _emit({"event": "finish", "nodeid": nodeid})


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    _emit({"event": "session_finish", "exitstatus": int(exitstatus)})
