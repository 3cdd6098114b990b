"""The thin LaMa inpainting runtime: numpy + Pillow, plus ONE of ONNX Runtime, TensorRT or PyTorch.

    from lama_deploy.runtime import Inpainter
    result = Inpainter.from_path("model.onnx").inpaint("image.png", "mask.png")

`import runtime` imports neither torch nor onnx; each backend imports its framework when it is created.
"""

from .backends import BACKENDS, Backend, BackendError, Profile, create_backend
from .images import DEFAULT_MAX_PIXELS, InpaintInputError
from .inpainter import InferenceError, Inpainter, InpaintResult
from .options import InpaintOptions
from .pipeline import Pipeline
from .strategy import DEFAULT_CONTEXT_MARGIN, STRATEGIES

__all__ = [
    "BACKENDS", "DEFAULT_CONTEXT_MARGIN", "DEFAULT_MAX_PIXELS", "STRATEGIES", "Backend", "BackendError",
    "InferenceError", "InpaintInputError", "InpaintOptions", "InpaintResult", "Inpainter", "Pipeline", "Profile",
    "create_backend",
]
