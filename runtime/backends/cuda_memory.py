"""Device memory and a CUDA stream through NVIDIA's `cuda-python` (no pycuda, no torch).

`cuda-python` moved its runtime module from `cuda.cudart` to `cuda.bindings.runtime` (12.6+); both are
accepted. Every call returns `(err, *values)`; `check` turns a non-success code into one error line.
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np

from lama_deploy.errors import missing_dependency

_INSTALL = "pip install cuda-python (the version matching your CUDA driver, e.g. cuda-python==12.*)"


def import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise missing_dependency("cuda-python", _INSTALL) from None
    return cudart


def check(cudart: ModuleType, result: Any, what: str) -> Any:
    """Unpack a cuda-python `(err, *values)` tuple, raising on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        _, name = cudart.cudaGetErrorName(err)
        raise RuntimeError(f"CUDA error during {what}: {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) that only grows: async copies from/to it really overlap."""

    def __init__(self, cudart: ModuleType) -> None:
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(check(self.cudart, self.cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
            self.nbytes = nbytes
        return self.ptr

    def view(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A numpy array over the pinned memory (valid until the buffer grows or is freed)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        raw = (ctypes.c_byte * nbytes).from_address(self.ensure(nbytes))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            check(self.cudart, self.cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
        self.ptr, self.nbytes = 0, 0


class DeviceBuffer:
    """A device allocation that is reused and only grows, staged through its own pinned host buffer."""

    def __init__(self, cudart: ModuleType) -> None:
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0
        self.host = PinnedBuffer(cudart)

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free_device()
            self.ptr = int(check(self.cudart, self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self.nbytes = nbytes
        return self.ptr

    def upload(self, array: np.ndarray, stream: Any) -> int:
        """Copy `array` into pinned staging, then start an async host-to-device copy on `stream`."""
        staged = self.host.view(array.shape, array.dtype)
        staged[...] = array
        ptr = self.ensure(array.nbytes)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.cudart, self.cudart.cudaMemcpyAsync(ptr, staged.ctypes.data, array.nbytes, kind, stream), "upload")
        return ptr

    def download(self, out: np.ndarray, stream: Any) -> np.ndarray:
        """Async device-to-host copy into pinned staging, wait for `stream`, then fill `out`."""
        staged = self.host.view(out.shape, out.dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.cudart, self.cudart.cudaMemcpyAsync(staged.ctypes.data, self.ptr, out.nbytes, kind, stream), "download")
        check(self.cudart, self.cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        out[...] = staged
        return out

    def free_device(self) -> None:
        if self.ptr:
            check(self.cudart, self.cudart.cudaFree(self.ptr), "cudaFree")
        self.ptr, self.nbytes = 0, 0

    def free(self) -> None:
        self.free_device()
        self.host.free()


class CudaStream:
    def __init__(self, cudart: ModuleType) -> None:
        self.cudart = cudart
        self.handle = check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

    def synchronize(self) -> None:
        check(self.cudart, self.cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def ptr(self) -> int:
        return int(self.handle)

    def destroy(self) -> None:
        if self.handle is not None:
            check(self.cudart, self.cudart.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


def set_device(cudart: ModuleType, device: str | None) -> int:
    """Select "cuda:i" (default 0); returns the index."""
    index = int(device.partition(":")[2] or 0) if device else 0
    check(cudart, cudart.cudaSetDevice(index), f"cudaSetDevice({index})")
    return index
