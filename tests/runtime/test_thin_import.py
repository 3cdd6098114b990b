"""The edge runtime stays thin: ONNX Runtime inference imports neither torch, onnx, export nor lama_model."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnx", "lama_deploy.export", "lama_model", "tensorrt", "tensorrt_rtx")

SCRIPT = """
import sys
import numpy as np
import lama_deploy.runtime, lama_deploy.runtime.inpainter, lama_deploy.scripts.commands.inpaint, lama_deploy.runtime.backends.trt_backend, lama_deploy.runtime.backends.ort_backend
from lama_deploy.runtime import Inpainter
rgb = np.full((24, 40, 3), 120, np.uint8)
mask = np.zeros((24, 40), np.uint8)
mask[4:12, 8:20] = 255
with Inpainter.from_path(sys.argv[1]) as inpainter:
    result = inpainter.inpaint(rgb, mask)
assert result.strategy == "direct" and result.image.size == (40, 24)
print(" ".join(sorted(name for name in {heavy!r} if name in sys.modules)) or "-")
""".format(heavy=HEAVY)


def test_onnxruntime_inference_imports_no_heavy_module(tiny_onnx):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_onnx)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "-", f"imported: {proc.stdout.strip()}"

