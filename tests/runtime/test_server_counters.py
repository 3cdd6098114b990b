"""`GET /health` request counters count what they say: each answered request once, under its outcome."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")
pytest.importorskip("fastapi", reason="the server needs fastapi (pip install 'lama-deploy[server]')")

from lama_deploy.runtime.server import app as server, limits as server_limits  # noqa: E402
from lama_deploy.scripts.commands import serve as serve_command  # noqa: E402
from lama_deploy.runtime.inpainter import InpaintResult  # noqa: E402


class SlowEcho:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def info(self) -> dict:
        return {"backend": "stub", "model": None, "weights": "stub weights", "profile": {"min": {"H": 16}}}

    def inpaint(self, image: bytes, mask: bytes, threshold: float | None = None, options: object = None) -> InpaintResult:
        time.sleep(self.delay)
        return InpaintResult(Image.open(io.BytesIO(image)).convert("RGB"), "stub", "stub", self.delay, [])


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


async def _post(app, files_list: list[dict]) -> list:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
        return [await client.post("/inpaint", files=files) for files in files_list]


def _requests(app) -> dict:
    async def get() -> dict:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.get("/health")).json()["requests"]

    return asyncio.run(get())


GOOD = {"image": ("i.png", _png(np.zeros((32, 32, 3), np.uint8))), "mask": ("m.png", _png(np.zeros((32, 32), np.uint8)))}


def test_requests_refused_at_the_door_count_as_bad_input() -> None:
    app = server.create_app(SlowEcho(0.0), server_limits.ServerLimits())
    not_an_image = {"image": ("i.png", b"hello"), "mask": GOOD["mask"]}
    other_size = {"image": GOOD["image"], "mask": ("m.png", _png(np.zeros((16, 16), np.uint8)))}
    statuses = [r.status_code for r in asyncio.run(_post(app, [GOOD, not_an_image, other_size]))]
    assert statuses == [200, 415, 400]  # not one of the accepted formats: 415
    counts = _requests(app)
    assert (counts["served"], counts["bad_input"], counts["failed"]) == (1, 2, 0)


def test_a_timed_out_request_is_not_also_served() -> None:
    app = server.create_app(SlowEcho(0.6), server_limits.ServerLimits(request_timeout_s=0.1))
    assert [r.status_code for r in asyncio.run(_post(app, [GOOD]))] == [503]
    pool = app.state.lama.pool
    deadline = time.monotonic() + 5
    while pool.snapshot()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # the job's done-callback runs just after it leaves the worker
    counts = _requests(app)
    assert (counts["timed_out"], counts["served"], counts["running"]) == (1, 0, 0)
