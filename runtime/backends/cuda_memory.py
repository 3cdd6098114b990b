"""Device memory, pinned host staging, streams and events through `ctypes` on the CUDA runtime library.

No cuda-python, no pycuda, no torch: every CUDA install has `libcudart` (the toolkit's, JetPack's, an
`nvidia-cuda-runtime` wheel's, or the copy TensorRT/PyTorch wheels ship), and the few calls the TensorRT
backend needs have a stable C ABI since CUDA 10. `LAMA_CUDART=/path/to/libcudart.so` picks one explicitly.
Every call returns a `cudaError_t`; `CudaRuntime.check` turns a non-zero code into one error line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from lama_deploy.errors import UserError

ENV_CUDART = "LAMA_CUDART"
# Newest first: a CUDA 13 driver also runs 12.x/11.x runtimes, never the other way round.
SONAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2")
SYSTEM_DIRS = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib",
               "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu")
# Where pip wheels keep a libcudart, relative to a site-packages folder.
WHEEL_DIRS = ("nvidia/cuda_runtime/lib", "nvidia/cu13/lib", "nvidia/cu12/lib", "tensorrt_libs", "tensorrt_rtx_libs",
              "torch/lib")
_INSTALL = ("the CUDA runtime library (libcudart) was not found; install CUDA/JetPack, or "
            "`pip install nvidia-cuda-runtime-cu12`, or set LAMA_CUDART=/path/to/libcudart.so")

HOST_TO_DEVICE = 1  # cudaMemcpyKind
DEVICE_TO_HOST = 2
_LOADED: dict = {}


class CudaUnavailable(UserError):
    """No CUDA runtime library could be loaded (a missing install the user can fix)."""


def candidate_paths() -> Iterator[str]:
    """Where libcudart may be, in the order tried (an explicit LAMA_CUDART first)."""
    explicit = os.environ.get(ENV_CUDART)
    if explicit:
        yield explicit
        return
    found = ctypes.util.find_library("cudart")
    if found:
        yield found
    for folder in _site_folders():
        for sub in WHEEL_DIRS:
            directory = Path(folder) / sub
            if directory.is_dir():
                yield from (str(p) for p in sorted(directory.glob("libcudart.so*"), reverse=True))
    for directory in SYSTEM_DIRS:
        for soname in SONAMES:
            yield os.path.join(directory, soname)
    yield from SONAMES  # the loader's own search path (LD_LIBRARY_PATH, ld.so.cache)


def _site_folders() -> List[str]:
    return [p for p in sys.path if p.endswith("site-packages") or p.endswith("dist-packages")]


def load_cuda_runtime() -> "CudaRuntime":
    """The process-wide CUDA runtime (loaded once); CudaUnavailable in one line when there is none."""
    key = os.environ.get(ENV_CUDART, "")
    if key not in _LOADED:
        tried = []
        for path in candidate_paths():
            try:
                _LOADED[key] = CudaRuntime(ctypes.CDLL(path), path)
                break
            except OSError:
                tried.append(path)
        else:
            where = f" ({ENV_CUDART}={key} cannot be loaded)" if key else ""
            raise CudaUnavailable(_INSTALL + where)
    return _LOADED[key]


# Kept for callers written against the cuda-python version of this module.
import_cudart = load_cuda_runtime


class CudaRuntime:
    """The handful of CUDA runtime calls the TensorRT backend uses, with argument types declared once."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.lib, self.path = lib, path
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        signatures = {
            "cudaSetDevice": [ctypes.c_int], "cudaMalloc": [ctypes.POINTER(vp), sz], "cudaFree": [vp],
            "cudaMallocHost": [ctypes.POINTER(vp), sz], "cudaFreeHost": [vp],
            "cudaMemcpyAsync": [vp, vp, sz, ctypes.c_int, vp], "cudaStreamCreate": [ctypes.POINTER(vp)],
            "cudaStreamSynchronize": [vp], "cudaStreamDestroy": [vp], "cudaEventCreate": [ctypes.POINTER(vp)],
            "cudaEventRecord": [vp, vp], "cudaEventSynchronize": [vp], "cudaEventDestroy": [vp],
            "cudaMemGetInfo": [ctypes.POINTER(sz), ctypes.POINTER(sz)], "cudaRuntimeGetVersion": [ctypes.POINTER(ctypes.c_int)],
        }
        for name, argtypes in signatures.items():
            func = getattr(lib, name)
            func.argtypes, func.restype = argtypes, ctypes.c_int
        lib.cudaGetErrorName.argtypes, lib.cudaGetErrorName.restype = [ctypes.c_int], ctypes.c_char_p

    def check(self, err: int, what: str) -> None:
        if err != 0:
            name = self.lib.cudaGetErrorName(err)
            raise RuntimeError(f"CUDA error during {what}: {name.decode() if name else err} ({err})")

    def _pointer(self, call: str, *args: Any) -> int:
        out = ctypes.c_void_p()
        self.check(getattr(self.lib, call)(ctypes.byref(out), *args), f"{call}({', '.join(map(str, args))})")
        return int(out.value or 0)

    def version(self) -> int:
        """The runtime's version as CUDA encodes it (11040 = 11.4)."""
        out = ctypes.c_int()
        self.check(self.lib.cudaRuntimeGetVersion(ctypes.byref(out)), "cudaRuntimeGetVersion")
        return out.value

    def set_device(self, index: int) -> None:
        self.check(self.lib.cudaSetDevice(index), f"cudaSetDevice({index})")

    def malloc(self, nbytes: int) -> int:
        return self._pointer("cudaMalloc", nbytes)

    def free(self, ptr: int) -> None:
        self.check(self.lib.cudaFree(ptr), "cudaFree")

    def malloc_host(self, nbytes: int) -> int:
        return self._pointer("cudaMallocHost", nbytes)

    def free_host(self, ptr: int) -> None:
        self.check(self.lib.cudaFreeHost(ptr), "cudaFreeHost")

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int, what: str) -> None:
        self.check(self.lib.cudaMemcpyAsync(dst, src, nbytes, kind, stream), what)

    def stream_create(self) -> int:
        return self._pointer("cudaStreamCreate")

    def stream_synchronize(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: int) -> None:
        self.check(self.lib.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def event_create(self) -> int:
        return self._pointer("cudaEventCreate")

    def event_record(self, event: int, stream: int) -> None:
        self.check(self.lib.cudaEventRecord(event, stream), "cudaEventRecord")

    def event_synchronize(self, event: int) -> None:
        self.check(self.lib.cudaEventSynchronize(event), "cudaEventSynchronize")

    def event_destroy(self, event: int) -> None:
        self.check(self.lib.cudaEventDestroy(event), "cudaEventDestroy")

    def mem_get_info(self) -> Tuple[int, int]:
        """(free, total) bytes of the current device."""
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return free.value, total.value


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) that only grows: async copies from/to it really overlap."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self.cuda = cuda
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = self.cuda.malloc_host(nbytes)
            self.nbytes = nbytes
        return self.ptr

    def view(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        """A numpy array over the pinned memory (valid until the buffer grows or is freed)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        raw = (ctypes.c_byte * nbytes).from_address(self.ensure(nbytes))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.cuda.free_host(self.ptr)
        self.ptr, self.nbytes = 0, 0


class DeviceBuffer:
    """A device allocation that is reused and only grows, staged through its own pinned host buffer."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self.cuda = cuda
        self.ptr = 0
        self.nbytes = 0
        self.host = PinnedBuffer(cuda)

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free_device()
            self.ptr = self.cuda.malloc(nbytes)
            self.nbytes = nbytes
        return self.ptr

    def upload(self, array: np.ndarray, stream: int) -> int:
        """Copy `array` into pinned staging, then start an async host-to-device copy on `stream`."""
        staged = self.host.view(array.shape, array.dtype)
        staged[...] = array
        ptr = self.ensure(array.nbytes)
        self.cuda.memcpy_async(ptr, staged.ctypes.data, array.nbytes, HOST_TO_DEVICE, stream, "upload")
        return ptr

    def download(self, out: np.ndarray, stream: int) -> np.ndarray:
        """Async device-to-host copy into pinned staging, wait for `stream`, then fill `out`."""
        staged = self.host.view(out.shape, out.dtype)
        self.cuda.memcpy_async(staged.ctypes.data, self.ptr, out.nbytes, DEVICE_TO_HOST, stream, "download")
        self.cuda.stream_synchronize(stream)
        out[...] = staged
        return out

    def free_device(self) -> None:
        if self.ptr:
            self.cuda.free(self.ptr)
        self.ptr, self.nbytes = 0, 0

    def free(self) -> None:
        self.free_device()
        self.host.free()


class CudaStream:
    def __init__(self, cuda: CudaRuntime) -> None:
        self.cuda = cuda
        self.handle: Optional[int] = cuda.stream_create()

    def synchronize(self) -> None:
        self.cuda.stream_synchronize(self.handle or 0)

    def ptr(self) -> int:
        return int(self.handle or 0)

    def destroy(self) -> None:
        if self.handle is not None:
            self.cuda.stream_destroy(self.handle)
            self.handle = None


class CudaEvent:
    """Marks a point on a stream (e.g. "inputs consumed") that the host can wait for."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self.cuda = cuda
        self.handle: Optional[int] = cuda.event_create()

    def record(self, stream: CudaStream) -> None:
        self.cuda.event_record(self.handle or 0, stream.ptr())

    def synchronize(self) -> None:
        self.cuda.event_synchronize(self.handle or 0)

    def destroy(self) -> None:
        if self.handle is not None:
            self.cuda.event_destroy(self.handle)
            self.handle = None


def set_device(cuda: CudaRuntime, device: Optional[str]) -> int:
    """Select "cuda:i" (default 0); returns the index."""
    index = int(device.partition(":")[2] or 0) if device else 0
    cuda.set_device(index)
    return index
