"""`lama-deploy serve`: the real server (uvicorn subprocess, tiny ONNX model on ONNX Runtime CPU) and the app
factory with stub inpainters for the load and failure paths. Loopback addresses only.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server needs fastapi (pip install 'lama-deploy[server]')")
pytest.importorskip("uvicorn", reason="the server needs uvicorn (pip install 'lama-deploy[server]')")
httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")

from lama_deploy import contract as C  # noqa: E402
from lama_deploy.runtime import InpaintResult  # noqa: E402
from lama_deploy.runtime.server import app as server, limits as server_limits  # noqa: E402
from lama_deploy.scripts.commands import serve as serve_command  # noqa: E402

MAX_BODY_MB = 1
MAX_PIXELS = 4_000_000

from server_support import HOST, RunningServer, Sample, _check_inpainted, _png, _sample, _start_server  # noqa: E402

@pytest.fixture(scope="module")
def live(tiny_onnx: Path, tmp_path_factory) -> RunningServer:
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = _start_server(tiny_onnx, log, "--max-body-mb", str(MAX_BODY_MB), "--max-pixels", str(MAX_PIXELS),
                            "--workers-per-model", "2", "--queue-size", "64")
    yield running
    running.stop()


def _bomb_png(side: int = 20_000) -> bytes:
    """A 1-bit side x side PNG of zeros: ~50 KB on disk, side**2 pixels once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + side // 8)  # filter byte + packed bits
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# --- the real server ----------------------------------------------------------------------------------------

def test_health_describes_model_and_limits(live: RunningServer, tiny_onnx: Path) -> None:
    health = httpx.get(f"{live.url}/health").json()
    assert health["status"] == "ok" and health["backend"] == "onnxruntime"
    assert health["model"] == tiny_onnx.name and str(tiny_onnx.parent) not in str(health)  # no paths
    assert health["weights"] and health["size_rule"] == C.SIZE_RULE and health["size_multiple"] == C.SIZE_MULTIPLE
    assert health["profile"]["min"]["H"] == C.MIN_SIDE
    assert health["limits"]["max_body_bytes"] == MAX_BODY_MB * 1024 * 1024 and health["limits"]["max_pixels"] == MAX_PIXELS
    assert health["requests"]["workers"] == 2 and health["requests"]["capacity"] == 2 + 64
    assert health["uptime_s"] >= 0


def test_one_request_returns_the_inpainted_png(live: RunningServer) -> None:
    sample = _sample(61, 93, seed=1)  # not a multiple of 8: the runtime pads and crops back
    response = httpx.post(f"{live.url}/inpaint", files=sample.files, data={"threshold": "127"}, timeout=30)
    out = _check_inpainted(response, sample)
    hole = sample.mask > 0
    assert not np.array_equal(out[hole], sample.image[hole])  # the hole was actually filled
    assert response.headers["x-inpaint-backend"] == "onnxruntime"
    assert response.headers["x-inpaint-strategy"] == "direct"
    assert float(response.headers["x-inpaint-seconds"]) > 0
    assert Image.open(io.BytesIO(response.content)).text[C.META_WEIGHTS] == response.headers["x-inpaint-weights"]


def test_body_over_limit_is_413(live: RunningServer) -> None:
    too_big = os.urandom(MAX_BODY_MB * 1024 * 1024 + 100_000)
    response = httpx.post(f"{live.url}/inpaint", files={C.IMAGE: ("a.png", too_big), C.MASK: ("m.png", b"x")},
                          timeout=30)
    assert response.status_code == 413
    assert "larger than the server limit of 1 MiB" in response.json()["error"]


def test_chunked_body_over_limit_is_413_while_reading(live: RunningServer) -> None:
    """No Content-Length to trust: the byte count during the upload is what stops it."""
    boundary = "lamaboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    sent = []

    def body():
        yield head
        for _ in range(64):  # 64 x 64 KiB = 4 MiB, four times the limit
            sent.append(1)
            yield bytes(64 * 1024)

    response = httpx.post(f"{live.url}/inpaint", content=body(), timeout=30,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text


def _garble(files: dict, data: dict, case: str) -> None:
    """Break a good request the way `case` says."""
    if case == "size_mismatch":
        files[C.MASK] = ("m.png", _png(np.zeros((32, 40), np.uint8)), "image/png")
    elif case in ("garbage_image", "truncated_png"):
        files[C.IMAGE] = ("a.png", b"\x00garbage" * 100 if case == "garbage_image" else files[C.IMAGE][1][:300])
    elif case == "empty_mask":
        files[C.MASK] = ("m.png", b"", "image/png")
    elif case in ("missing_mask", "text_image"):
        del files[C.MASK if case == "missing_mask" else C.IMAGE]
        data.update({C.IMAGE: "not a file"} if case == "text_image" else {})
    elif case == "bad_threshold":
        data["threshold"] = "400"


@pytest.mark.parametrize("case, status, message", [
    ("size_mismatch", 400, "mask is 40x32 but image is 48x40"),
    ("garbage_image", 415, "cannot read form file 'image': not a PNG, JPEG, WebP, BMP or TIFF file"),
    ("empty_mask", 400, "form file 'mask' is empty"),
    ("truncated_png", 400, "truncated"),  # the header is fine: the runtime's decoder finds it, in the worker
    ("missing_mask", 422, "missing form file 'mask'"),
    ("text_image", 422, "'image' must be a file upload"),
    ("bad_threshold", 422, "threshold"),
    ("not_multipart", 415, "multipart/form-data"),
])
def test_bad_requests_get_one_line_errors(live: RunningServer, case: str, status: int, message: str) -> None:
    files, data = _sample(40, 48, seed=2).files, {}
    _garble(files, data, case)
    if case == "not_multipart":
        response = httpx.post(f"{live.url}/inpaint", json={"image": "x"}, timeout=30)
    else:
        response = httpx.post(f"{live.url}/inpaint", files=files, data=data, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error


def test_decompression_bomb_is_refused_by_its_header(live: RunningServer) -> None:
    bomb = _bomb_png()
    assert len(bomb) < 200_000  # tiny on the wire
    files = {C.IMAGE: ("bomb.png", bomb, "image/png"), C.MASK: ("mask.png", bomb, "image/png")}
    response = httpx.post(f"{live.url}/inpaint", files=files, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"].startswith(f"image is 20000x20000 = 400000000 pixels, over the server limit of "
                                               f"{MAX_PIXELS}")
    assert httpx.get(f"{live.url}/health").json()["status"] == "ok"


def test_32_concurrent_requests_all_answered(live: RunningServer) -> None:
    sizes = [(48, 64), (61, 93), (100, 80), (72, 72)]
    samples = [_sample(*sizes[i % len(sizes)], seed=100 + i) for i in range(32)]
    before = httpx.get(f"{live.url}/health").json()["requests"]
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=32)) as client:
        with ThreadPoolExecutor(max_workers=32) as pool:
            responses = list(pool.map(lambda s: client.post(f"{live.url}/inpaint", files=s.files), samples))
    assert len(responses) == 32
    assert [r.status_code for r in responses] == [200] * 32
    for response, sample in zip(responses, samples):
        _check_inpainted(response, sample)
    requests = httpx.get(f"{live.url}/health").json()["requests"]
    assert requests["served"] - before["served"] == 32
    assert (requests["queued"], requests["running"], requests["failed"] - before["failed"]) == (0, 0, 0)


# --- the app factory with stubs -----------------------------------------------------------------------------

class StubInpainter:
    """Echoes the image after `delay` seconds, or raises `error`."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None) -> None:
        self.delay, self.error = delay, error
        self.calls = 0
        self.closed = False

    def info(self) -> dict:
        return {"backend": "stub", "model": None, "weights": "stub weights", "profile": {"min": {"H": 16}}}

    def inpaint(self, image: bytes, mask: bytes, threshold: float | None = None, options: object = None) -> InpaintResult:
        self.calls += 1
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return InpaintResult(Image.open(io.BytesIO(image)).convert("RGB"), "stub", "stub", self.delay, [])

    def close(self) -> None:
        self.closed = True


async def _post_many(app, count: int, sample: Sample) -> list:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
        return await asyncio.gather(*[client.post("/inpaint", files=sample.files) for _ in range(count)])


def test_full_queue_answers_503_with_retry_after() -> None:
    stub = StubInpainter(delay=0.5)
    app = server.create_app(stub, server_limits.ServerLimits(queue_size=2))
    sample = _sample(32, 32, seed=3)
    responses = asyncio.run(_post_many(app, 10, sample))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [503] * 7  # 1 running + 2 queued; the rest refused, none dropped
    for response in responses:
        if response.status_code == 200:
            _check_inpainted(response, sample)
        else:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"].startswith("server busy: 3 requests already running or queued")
    assert stub.calls == 3
    snapshot = app.state.lama.pool.snapshot()
    assert (snapshot["served"], snapshot["rejected_busy"], snapshot["queued"], snapshot["running"]) == (3, 7, 0, 0)
    assert [r.status_code for r in asyncio.run(_post_many(app, 1, sample))] == [200]  # every slot came back


def test_every_request_within_capacity_is_served_and_shutdown_closes_models() -> None:
    stubs = [StubInpainter(delay=0.05), StubInpainter(delay=0.05)]
    app = server.create_app(stubs, server_limits.ServerLimits(queue_size=10))

    async def serve_then_shut_down() -> list:
        async with app.router.lifespan_context(app):
            return await _post_many(app, 12, _sample(24, 40, seed=4))

    responses = asyncio.run(serve_then_shut_down())
    assert [r.status_code for r in responses] == [200] * 12
    assert sum(stub.calls for stub in stubs) == 12 and min(stub.calls for stub in stubs) > 0  # both workers ran
    assert all(stub.closed for stub in stubs)


def test_request_timeout_is_503_and_frees_the_slot() -> None:
    stub = StubInpainter(delay=1.0)
    app = server.create_app(stub, server_limits.ServerLimits(queue_size=4, request_timeout_s=0.2))
    responses = asyncio.run(_post_many(app, 2, _sample(32, 32, seed=5)))
    assert [r.status_code for r in responses] == [503, 503]
    assert all("did not finish within 0.2 s" in r.json()["error"] for r in responses)
    pool = app.state.lama.pool
    deadline = time.monotonic() + 5
    while pool.snapshot()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    snapshot = pool.snapshot()
    assert (snapshot["running"], snapshot["queued"], snapshot["timed_out"]) == (0, 0, 2)
    assert stub.calls == 1  # the queued one was withdrawn, not run after its client gave up


def test_unexpected_failure_is_500_without_internals(caplog) -> None:
    app = server.create_app(StubInpainter(error=RuntimeError("secret path /opt/x")), server_limits.ServerLimits())
    with caplog.at_level("ERROR", logger="lama_deploy.server"):
        (response,) = asyncio.run(_post_many(app, 1, _sample(32, 32, seed=6)))
    assert response.status_code == 500
    assert response.json() == {"error": "inpainting failed on the server (internal error); the details are in the "
                                        "server log"}
    assert any(record.exc_info and "secret path" in str(record.exc_info[1]) for record in caplog.records)


# --- the limits on their own --------------------------------------------------------------------------------

def test_limited_receive_stops_at_the_limit() -> None:
    consumed = []

    async def receive():
        consumed.append(1)
        return {"type": "http.request", "body": bytes(100), "more_body": True}

    async def drain():
        limited = server_limits.limited_receive(receive, 350)
        for _ in range(10):
            await limited()

    with pytest.raises(server_limits.BodyTooLarge):
        asyncio.run(drain())
    assert len(consumed) == 4  # 400 bytes > 350: refused on the 4th chunk, nothing more read
    with pytest.raises(server_limits.BodyTooLarge):
        server_limits.check_content_length({"content-length": "351"}, 350)
    server_limits.check_content_length({"content-length": "350"}, 350)


def test_size_check_never_decodes_pixels(monkeypatch) -> None:
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(server_limits.RequestRejected) as refused:
        server_limits.checked_size(_bomb_png(), "image", MAX_PIXELS)
    assert refused.value.status == 413
    assert server_limits.checked_size(_png(np.zeros((30, 50, 3), np.uint8)), "image", MAX_PIXELS) == (50, 30)


# --- CLI ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--workers-per-model", "0"], "--workers-per-model must be >= 1"),
    (["--max-body-mb", "0"], "--max-body-mb is too small"),
    (["--port", "70000"], "--port must be in 1..65535"),
])
def test_cli_option_errors(argv: list[str], message: str, capsys) -> None:
    assert serve_command.main(["--model", "m.onnx", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lama-deploy serve: error: ") and message in err and "\n" not in err


def test_cli_refuses_a_busy_port_before_loading_the_model(capsys) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert serve_command.main(["--model", "never-loaded.onnx", "--host", HOST, "--port", str(port)]) == 2
    assert f"cannot listen on {HOST}:{port}" in capsys.readouterr().err


def test_cli_names_the_install_when_fastapi_is_missing(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert serve_command.main(["--model", "m.onnx"]) == 2
    assert capsys.readouterr().err.strip() == ("lama-deploy serve: error: fastapi is not installed; install it with "
                                               "`pip install 'lama-deploy[server]'`")


def _post_in_flight(running: RunningServer, sample: Sample) -> tuple[dict, threading.Thread]:
    """POST `sample` from a thread and return once the server runs it: (where the response lands, the thread)."""
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "response", httpx.post(f"{running.url}/inpaint", files=sample.files, timeout=120)))
    worker.start()
    deadline = time.monotonic() + 60
    while httpx.get(f"{running.url}/health").json()["requests"]["running"] == 0:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.02)
    return result, worker


def test_graceful_shutdown_finishes_the_request_in_flight(tiny_onnx: Path, tmp_path: Path) -> None:
    running = _start_server(tiny_onnx, tmp_path / "server.log")
    sample = _sample(768, 768, seed=8)  # ~1 s on the tiny model: long enough to signal mid-request
    result, worker = _post_in_flight(running, sample)
    try:
        code = running.stop(signal.SIGTERM)
    finally:
        worker.join(60)
        running.stop(signal.SIGKILL)
    _check_inpainted(result["response"], sample)
    log = running.log_text()
    assert code in (0, -signal.SIGTERM), log  # uvicorn re-raises the signal once it has drained
    assert "shut down after 1 requests" in log
    request_lines = [line for line in log.splitlines() if f"{HOST} POST /inpaint " in line]
    assert len(request_lines) == 1 and " 200 " in request_lines[0]


def test_ctrl_c_stops_the_inference_in_flight_within_seconds(tiny_onnx: Path, tmp_path: Path) -> None:
    """SIGTERM drains (above); Ctrl-C (SIGINT) stops the running inference: its client gets a 503 in one line
    and the process ends within seconds, not after the inference (here ~10 s: a 3000x2000 whole-image run)."""
    running = _start_server(tiny_onnx, tmp_path / "server.log", "--strategy", "whole", "--max-memory", "none")
    sample = _sample(2000, 3000, seed=9)
    result, worker = _post_in_flight(running, sample)
    try:
        time.sleep(1.0)  # well inside the inference
        signalled = time.monotonic()
        code = running.stop(signal.SIGINT, timeout=30)
        stopped_s = time.monotonic() - signalled
    finally:
        worker.join(60)
        running.stop(signal.SIGKILL)
    log = running.log_text()
    assert stopped_s < 5, (stopped_s, log[-2000:])
    assert code == 130, log[-2000:]  # interrupted, as every command
    response = result.get("response")
    assert response is not None and response.status_code == 503, log[-2000:]
    assert "shutting down" in response.json()["error"]
