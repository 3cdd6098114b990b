"""When GPU tests may run: one place for the "needs an NVIDIA GPU" skip and the lane's dry run.

`tests/conftest.py` skips every test marked `gpu` when this says no CUDA (or the GPU lane runs with
`--dry-run`, which sets LAMA_GPU_DRY_RUN=1), and every test marked `tensorrt` when TensorRT is missing.
The skip is added at collection, so no fixture of a skipped test (model builds, exports) ever runs.
"""

from __future__ import annotations

import functools
import os

DRY_RUN_ENV = "LAMA_GPU_DRY_RUN"
GPU_PREFIX = "needs an NVIDIA GPU"


def is_dry_run() -> bool:
    return os.environ.get(DRY_RUN_ENV) == "1"


@functools.lru_cache(maxsize=1)
def gpu_skip_reason() -> str | None:
    """None when a CUDA GPU is usable by torch, else the skip reason (always starting "needs an NVIDIA GPU")."""
    if is_dry_run():
        return f"{GPU_PREFIX} (GPU lane dry run: {DRY_RUN_ENV}=1)"
    try:
        import torch
    except ImportError:
        return f"{GPU_PREFIX} and torch (torch is not installed)"
    if not torch.cuda.is_available():
        return f"{GPU_PREFIX} (torch.cuda.is_available() is False)"
    return None


@functools.lru_cache(maxsize=1)
def tensorrt_skip_reason() -> str | None:
    """None when a TensorRT runtime and cuda-python import, else why not."""
    try:
        from lama_deploy.runtime.trt_import import import_tensorrt

        import_tensorrt()
    except Exception as exc:  # TensorRTUnavailable or an ImportError of a broken install
        return f"needs the TensorRT runtime: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return cuda_python_skip_reason()


def cuda_python_skip_reason() -> str | None:
    try:
        from lama_deploy.runtime.backends.cuda_memory import import_cudart

        import_cudart()
    except Exception as exc:
        return f"needs the CUDA runtime library: {str(exc).splitlines()[0]}"
    return None


def apply_skips(items: list) -> None:
    """Collection hook body: skip `gpu` tests without a GPU and `tensorrt` tests without TensorRT."""
    import pytest

    for item in items:
        if item.get_closest_marker("gpu") is not None:
            reason = gpu_skip_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason), append=False)
                continue
        if item.get_closest_marker("tensorrt") is not None:
            reason = tensorrt_skip_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason), append=False)
