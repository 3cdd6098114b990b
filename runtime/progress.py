"""Progress lines on a terminal for one long job: what stage, how long so far; silent when piped.

    with stage("inpainting photo.jpg (6000x4000)"):   # stderr: `... inpainting photo.jpg (6000x4000)`,
        ...                                           # then `... 10 s` every 10 s, then `... done in 23.4 s`
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

HEARTBEAT_S = 10.0


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def stage(prog: str, label: str, heartbeat_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Say `label` when the stage starts, the elapsed time every `heartbeat_s`, and how long it took."""
    if not stderr_is_terminal():
        yield
        return
    stream = sys.stderr
    start = time.perf_counter()
    print(f"{prog}: {label} ...", file=stream, flush=True)
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            print(f"{prog}:   ... {time.perf_counter() - start:.0f} s", file=stream, flush=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    print(f"{prog}:   ... done in {time.perf_counter() - start:.1f} s", file=stream, flush=True)
