"""The real server (uvicorn, the same connection options as `lama-deploy serve`) around stub inpainters with a
fixed service time, so load tests measure the server and not the CPU. Run: python stub_server.py PORT DELAY WORKERS
QUEUE TIMEOUT."""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from PIL import Image  # noqa: E402

from lama_deploy.runtime import InpaintResult  # noqa: E402
from lama_deploy.runtime.server.app import create_app, uvicorn_options  # noqa: E402
from lama_deploy.runtime.server.limits import ServerLimits  # noqa: E402


class FixedTimeInpainter:
    """Echoes the image after `delay` seconds of sleep (no CPU used)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def info(self) -> dict:
        return {"backend": "stub", "model": "stub.onnx", "weights": "stub weights"}

    def inpaint(self, image: bytes, mask: bytes, threshold: float | None = None, options: object = None) -> InpaintResult:
        time.sleep(self.delay)
        return InpaintResult(Image.open(io.BytesIO(image)).convert("RGB"), "stub", "stub", self.delay, [])


def main() -> None:
    import uvicorn

    port, delay, workers, queue, timeout = (int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                                            int(sys.argv[4]), float(sys.argv[5]))
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lama_deploy.server").setLevel("INFO")  # the access log would cost the test's CPU
    limits = ServerLimits(queue_size=queue, request_timeout_s=timeout)
    app = create_app([FixedTimeInpainter(delay) for _ in range(workers)], limits)
    uvicorn.run(app, **uvicorn_options(limits), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
