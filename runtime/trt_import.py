"""Import TensorRT lazily: `tensorrt` (TensorRT 8.6 / 10.x / 11.x) or `tensorrt_rtx` (TensorRT-RTX).

Both expose the same Python API for what this project uses (Logger, Builder, OnnxParser, Runtime,
ICudaEngine, IExecutionContext), so builder and runtime code is written once against `trt`.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

FLAVOURS = ("tensorrt", "tensorrt_rtx")
_INSTALL = "pip install tensorrt (NVIDIA GPU machines, JetPack ships it) or pip install tensorrt-rtx-cu13"


class TensorRTUnavailable(ImportError):
    """Neither TensorRT flavour can be imported."""


def import_tensorrt(flavour: str | None = None) -> ModuleType:
    """The first importable flavour (`LAMA_TRT_FLAVOUR` or `flavour` picks one)."""
    wanted = flavour or os.environ.get("LAMA_TRT_FLAVOUR") or None
    candidates = (wanted,) if wanted else FLAVOURS
    errors = []
    for name in candidates:
        if name not in FLAVOURS:
            raise TensorRTUnavailable(f"unknown TensorRT flavour {name!r}; use one of {FLAVOURS}")
        try:
            return importlib.import_module(name)
        except Exception as exc:  # a broken install raises OSError/RuntimeError, not only ImportError
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise TensorRTUnavailable(f"TensorRT is not available ({'; '.join(errors)}); install it with `{_INSTALL}`")


def flavour_of(trt: ModuleType) -> str:
    return trt.__name__.split(".")[0]


def version_of(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def major_version(trt: ModuleType) -> int:
    try:
        return int(version_of(trt).split(".")[0])
    except ValueError:
        return 0


def make_logger(trt: ModuleType):
    """The one TensorRT logger of builder and runtime: keeps errors and warnings (for one-line messages)
    instead of printing them."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg) -> None:  # noqa: D401 - TensorRT callback
            if int(severity) <= int(trt.ILogger.Severity.ERROR):   # INTERNAL_ERROR = 0, ERROR = 1
                self.errors.append(" ".join(str(msg).split()))
            elif int(severity) == int(trt.ILogger.Severity.WARNING):
                self.warnings.append(" ".join(str(msg).split()))

    return CapturingLogger()
