"""A bounded inference queue in front of N inpainters, each used by one thread at a time.

A TensorRT execution context (and its CUDA buffers) serves one request at a time, so every worker thread
owns one Inpainter while it runs: the pool holds `workers` Inpainters and a thread pool of the same size.
Admission is counted: at most `workers + queue_size` requests are admitted (running or waiting); the next
one is refused at once (HTTP 503 with Retry-After) instead of waiting unboundedly or being dropped. A
request whose time runs out while still queued is withdrawn; one already running completes and only then
frees its slot, so the count always matches the work the devices really have.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from ..images import InpaintInputError


#: Admit a request only when the queue ahead is expected through within this share of its time left: the rest
#: of the deadline is for reading, checking and encoding, and for the estimate's noise.
ADMIT_SHARE = 0.8


class PoolFull(Exception):
    """No slot left: `retry_after_s` estimates when one frees up."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"server busy, retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class PoolTimeout(Exception):
    """The request did not finish within the request timeout."""


class PoolShed(PoolFull):
    """Admission control: the queue ahead would not be through before this request's deadline."""

    def __init__(self, retry_after_s: int, expected_s: float, deadline_s: float) -> None:
        super().__init__(retry_after_s)
        self.expected_s, self.deadline_s = expected_s, deadline_s


class DeadlinePassed(Exception):
    """A queued job whose request deadline passed before a worker was free: never started."""


@dataclass
class PoolStats:
    served: int = 0
    bad_input: int = 0  # the image or mask was refused, at the door or by the runtime (HTTP 4xx)
    failed: int = 0  # anything else raised (HTTP 500)
    rejected_busy: int = 0  # refused at the door: queue full, or its expected wait over the deadline (shed)
    timed_out: int = 0
    inference_seconds: float = 0.0
    service_s: float | None = None  # recent inference time per request (moving average), for admission


class Slot:
    """One admitted request; released exactly once (by the pool when its job ends, or by the caller)."""

    def __init__(self, pool: "InferencePool") -> None:
        self._pool = pool
        self._released = False
        self.submitted = False
        self.timed_out = False  # already counted as timed_out: its late result is not also "served"

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release_slot()


class InferencePool:
    """Run `inpainter.inpaint(...)` on a dedicated inpainter per worker thread, with bounded admission."""

    def __init__(self, inpainters: Sequence[Any], queue_size: int) -> None:
        if not inpainters:
            raise ValueError("the inference pool needs at least one inpainter")
        self.inpainters = list(inpainters)
        self.workers = len(self.inpainters)
        self.capacity = self.workers + queue_size
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for inpainter in self.inpainters:
            self._idle.put(inpainter)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lama-inpaint")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._closed = False
        self.stats = PoolStats()

    # --- admission --------------------------------------------------------------------------------------

    def admit(self, time_left_s: float | None = None) -> Slot:
        """Reserve a place (running or queued) or raise `PoolFull` (`PoolShed` when the expected wait for a
        worker plus one service time exceeds `time_left_s`: the work would only be thrown away)."""
        with self._lock:
            self._refuse_locked(time_left_s)
            self._admitted += 1
        return Slot(self)

    def _refuse_locked(self, time_left_s: float | None) -> None:
        if self._closed:
            raise PoolFull(self.retry_after_s())
        if self._admitted >= self.capacity:
            self.stats.rejected_busy += 1
            raise PoolFull(self.retry_after_s())
        expected = self.expected_s()
        if time_left_s is not None and expected > ADMIT_SHARE * time_left_s:
            self.stats.rejected_busy += 1
            raise PoolShed(self.retry_after_s(), expected, time_left_s)

    def expected_s(self) -> float:
        """Measured service time x (queue position / workers + 1): when a request admitted now would finish."""
        service = self.stats.service_s
        if service is None:
            return 0.0  # nothing measured yet: admit, the request timeout still bounds it
        ahead = max(0, self._admitted - self.workers + 1)
        return service * (ahead / self.workers + 1)

    def _release_slot(self) -> None:
        with self._lock:
            self._admitted -= 1

    def refuse_if_full(self, time_left_s: float | None = None) -> None:
        """Cheap early refusal at the door (before an upload is read); `admit` is what actually reserves."""
        with self._lock:
            self._refuse_locked(time_left_s)

    def count_bad_input(self) -> None:
        """A request refused before inference (not an image, sizes differ, too large): still bad input."""
        with self._lock:
            self.stats.bad_input += 1

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained by one worker's share (at least 1)."""
        average = self.stats.inference_seconds / self.stats.served if self.stats.served else 1.0
        return max(1, math.ceil(average * max(1, self._admitted) / self.workers))

    @property
    def running(self) -> int:
        return self._running

    # --- work -------------------------------------------------------------------------------------------

    def _work(self, image: Any, mask: Any, options: Any, deadline: float | None = None) -> Any:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlinePassed()  # its client has been answered 503 already: do not start it
        inpainter = self._idle.get()  # never blocks long: one thread per inpainter
        with self._lock:
            self._running += 1
        start = time.perf_counter()
        try:
            return inpainter.inpaint(image, mask, options=options)
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._running -= 1
                self.stats.inference_seconds += elapsed
                previous = self.stats.service_s
                self.stats.service_s = elapsed if previous is None else 0.7 * previous + 0.3 * elapsed
            self._idle.put(inpainter)

    def _job_done(self, slot: Slot, future: Future) -> None:
        with self._lock:
            if future.cancelled() or slot.timed_out or isinstance(future.exception(), DeadlinePassed):
                pass
            elif future.exception() is None:
                self.stats.served += 1
            elif isinstance(future.exception(), InpaintInputError):
                self.stats.bad_input += 1
            else:
                self.stats.failed += 1
        slot.release()

    async def run(self, slot: Slot, image: Any, mask: Any, options: Any, timeout_s: float,
                  limit_s: float | None = None) -> Any:
        """Queue one inpainting job for `slot` and await its result (`PoolTimeout` after `timeout_s`, the part
        of the request's `limit_s` left after reading its body; a job still queued then never starts)."""
        future = self._executor.submit(self._work, image, mask, options, time.monotonic() + timeout_s)
        slot.submitted = True
        future.add_done_callback(lambda done: self._job_done(slot, done))
        result = asyncio.wrap_future(future)
        try:
            # shield: a timeout must not cancel a job that is already running on the device
            return await asyncio.wait_for(asyncio.shield(result), timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            future.cancel()  # withdraws the job only if it is still queued
            result.add_done_callback(_retrieve)  # nobody awaits it any more
            if isinstance(exc, asyncio.CancelledError):  # the client went away
                raise
            with self._lock:
                slot.timed_out = True
                self.stats.timed_out += 1
            raise PoolTimeout(f"request did not finish within {limit_s or timeout_s:g} s (--request-timeout)") from None

    def close(self) -> None:
        """Finish what is queued, then release every inpainter."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True)
        for inpainter in self.inpainters:
            close = getattr(inpainter, "close", None)
            if close is not None:
                close()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stats, admitted, running = self.stats, self._admitted, self._running
            return {"workers": self.workers, "capacity": self.capacity, "running": running,
                    "queued": max(0, admitted - running), "served": stats.served, "bad_input": stats.bad_input,
                    "failed": stats.failed,
                    "rejected_busy": stats.rejected_busy, "timed_out": stats.timed_out}


def _retrieve(future: "asyncio.Future[Any]") -> None:
    """Mark an abandoned job's outcome as seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
