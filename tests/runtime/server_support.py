"""Helpers of the server tests: sample requests, the real server in a subprocess on a free loopback port."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from lama_deploy import contract as C

HOST = "127.0.0.1"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Sample:
    image: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray  # H x W uint8, 255 = hole

    @property
    def files(self) -> dict:
        return {C.IMAGE: ("image.png", _png(self.image), "image/png"), C.MASK: ("mask.png", _png(self.mask), "image/png")}


def _sample(height: int, width: int, seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    mask[top:top + height // 3, left:left + width // 3] = 255
    return Sample(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mask)


def _check_inpainted(response, sample: Sample) -> np.ndarray:
    """A 200 PNG of the input's size whose pixels outside the hole are the input's, bit for bit."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert out.shape == sample.image.shape
    keep = sample.mask == 0
    assert np.array_equal(out[keep], sample.image[keep])
    return out


@dataclass
class RunningServer:
    url: str
    proc: subprocess.Popen
    log: Path
    handle: io.TextIOBase

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.handle.close()
        return code


def _start_server(model: Path, log: Path, *extra: str) -> RunningServer:
    with socket.socket() as sock:  # a free loopback port
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "lama_deploy.scripts.cli", "serve", "--model", str(model), "--host", HOST,
           "--port", str(port), "--device", "cpu", *extra]
    handle = log.open("w")
    proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    running = RunningServer(f"http://{HOST}:{port}", proc, log, handle)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{running.log_text()}")
        try:
            if httpx.get(f"{running.url}/health", timeout=1).status_code == 200:
                return running
        except httpx.TransportError:
            time.sleep(0.1)
    running.stop(signal.SIGKILL)
    pytest.fail(f"server did not answer /health within 60 s:\n{running.log_text()}")


