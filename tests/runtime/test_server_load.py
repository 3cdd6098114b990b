"""The server under hostile load (issue 24), loopback only, bounded in count and time (~30 s): a flood of empty
connections from another address does not crowd out real requests, and under 4x its capacity the server sheds
the excess at the door (503 + Retry-After within 1 s) while completing work at its unloaded rate. The
inpainters are stubs with a fixed service time (tests/runtime/stub_server.py), so the numbers measure the
server, not this machine's CPU.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")
pytest.importorskip("uvicorn", reason="the server needs uvicorn (pip install 'lama-deploy[server]')")

from server_support import HOST, _png  # noqa: E402

from lama_deploy import contract as C  # noqa: E402

ATTACKER = "127.0.0.2"  # another loopback address: the idle cap is per client address
FILES = {C.IMAGE: ("i.png", _png(np.zeros((32, 32, 3), np.uint8)), "image/png"),
         C.MASK: ("m.png", _png(np.zeros((32, 32), np.uint8)), "image/png")}


class StubServer:
    def __init__(self, tmp_path: Path, delay: float, workers: int, queue: int, timeout: float) -> None:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.log = tmp_path / "stub_server.log"
        self.handle = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("stub_server.py")), str(self.port),
                                      str(delay), str(workers), str(queue), str(timeout)],
                                     stdout=self.handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"stub server did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.handle.close()


def _post(url: str, client: "httpx.Client | None" = None) -> tuple[int | str, float, str | None]:
    """(status or the transport error's name, seconds, Retry-After) of one request (on its own connection
    unless a shared `client` is given)."""
    start = time.monotonic()
    try:
        response = (client or httpx).post(f"{url}/inpaint", files=FILES, timeout=30)
        return response.status_code, time.monotonic() - start, response.headers.get("retry-after")
    except httpx.TransportError as exc:
        return type(exc).__name__, time.monotonic() - start, None


class IdleFlood:
    """Opens `rate` empty connections a second from ATTACKER and never sends a byte; counts the ones closed."""

    def __init__(self, port: int, rate: int) -> None:
        self.port, self.rate = port, rate
        self.sockets: list[socket.socket] = []
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.opened < due:
                sock = socket.socket()
                sock.bind((ATTACKER, 0))
                sock.settimeout(2)
                try:
                    sock.connect((HOST, self.port))
                except OSError:
                    sock.close()
                else:
                    sock.setblocking(False)
                    self.sockets.append(sock)
                self.opened += 1
            time.sleep(0.005)

    def closed_by_server(self) -> int:
        closed = 0
        for sock in self.sockets:
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed

    def __enter__(self) -> "IdleFlood":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def test_64_concurrent_requests_answered_while_idle_connections_flood_in(tmp_path: Path) -> None:
    try:
        with socket.socket() as probe:
            probe.bind((ATTACKER, 0))
    except OSError:
        pytest.skip(f"cannot bind {ATTACKER} (loopback has only 127.0.0.1 here)")
    server = StubServer(tmp_path, delay=0.05, workers=4, queue=64, timeout=30)
    try:
        with IdleFlood(server.port, rate=400) as flood:
            time.sleep(1.5)  # the flood is past the minimum idle time: evictions are under way
            with ThreadPoolExecutor(max_workers=64) as pool:
                results = list(pool.map(lambda _: _post(server.url), range(64)))
            time.sleep(0.5)
            opened, closed = flood.opened, flood.closed_by_server()
        statuses = [status for status, _, _ in results]
        assert statuses == [200] * 64, {status: statuses.count(status) for status in set(statuses)}
        assert opened >= 400 * 1.5, f"the flood opened only {opened} connections"
        assert closed > opened // 4, f"the server closed {closed} of {opened} idle connections"
    finally:
        server.stop()


def _offer(url: str, rate: float, seconds: float) -> list[tuple[int | str, float, str | None]]:
    """Open-loop load: one request every 1/rate s for `seconds`, each on its own thread (one shared client with
    keep-alive connections, so this 2-core machine's client side stays cheap)."""
    count = int(rate * seconds)
    with httpx.Client(limits=httpx.Limits(max_connections=96, max_keepalive_connections=96)) as client, \
            ThreadPoolExecutor(max_workers=96) as pool:
        start, futures = time.monotonic(), []
        for index in range(count):
            time.sleep(max(0.0, start + index / rate - time.monotonic()))
            futures.append(pool.submit(_post, url, client))
        return [future.result() for future in futures]


def test_overload_is_shed_at_the_door_and_throughput_holds(tmp_path: Path) -> None:
    delay, timeout, seconds = 0.2, 2.0, 8.0  # one worker: capacity 5 requests/s, deadline 2 s
    server = StubServer(tmp_path, delay=delay, workers=1, queue=64, timeout=timeout)
    try:
        unloaded = _offer(server.url, rate=0.8 / delay, seconds=4.0)  # 80 % of capacity: nothing queues for long
        unloaded_rate = sum(status == 200 for status, _, _ in unloaded) / 4.0
        start = time.monotonic()
        loaded = _offer(server.url, rate=4 / delay, seconds=seconds)  # 4x capacity
        elapsed = time.monotonic() - start
    finally:
        server.stop()
    statuses = [status for status, _, _ in loaded]
    assert set(statuses) <= {200, 503}, {status: statuses.count(status) for status in set(statuses)}
    shed = [(took, retry) for status, took, retry in loaded if status == 503]
    assert len(shed) >= len(loaded) // 2, f"only {len(shed)} of {len(loaded)} shed at 4x capacity"
    slowest = max(took for took, _ in shed)
    assert slowest < 1.0, f"a 503 took {slowest:.2f} s"
    assert all(retry is not None and int(retry) >= 1 for _, retry in shed)
    completed_rate = statuses.count(200) / elapsed
    assert completed_rate >= 0.8 * unloaded_rate, (f"{completed_rate * 60:.0f} completed/min under 4x load vs "
                                                    f"{unloaded_rate * 60:.0f}/min unloaded")
