"""The TensorRT backend's device-memory path on the REAL libcudart (ctypes, no cuda-python); only the
engine/context are faked.

The fake context reads the inputs back from device memory with cudaMemcpy (through ctypes), computes the fake engine's
`image * (1 - mask) + 0.25 * mask`, and writes the output to the device address the backend gave it, so
the backend's allocation, pinned staging, async copies, stream sync and freeing all run for real.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest

from gpu_support import cuda_python_skip_reason, gpu_skip_reason

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))
import fake_tensorrt as fake  # noqa: E402

from lama_deploy import contract as C  # noqa: E402
from lama_deploy.runtime.backends import trt_backend as tb  # noqa: E402
from lama_deploy.runtime.backends.cuda_memory import CudaStream, DeviceBuffer, PinnedBuffer, import_cudart  # noqa: E402

# Without a GPU the conftest's "needs an NVIDIA GPU" skip applies; with one, libcudart must load too.
_NO_CUDA_PYTHON = gpu_skip_reason() is None and cuda_python_skip_reason() is not None
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_NO_CUDA_PYTHON, reason=str(cuda_python_skip_reason()))]


class _PointerAttributes(ctypes.Structure):  # cudaPointerAttributes of CUDA >= 11
    _fields_ = [("type", ctypes.c_int), ("device", ctypes.c_int), ("devicePointer", ctypes.c_void_p),
                ("hostPointer", ctypes.c_void_p)]


_MEMORY_TYPES = {0: "cudaMemoryTypeUnregistered", 1: "cudaMemoryTypeHost", 2: "cudaMemoryTypeDevice",
                 3: "cudaMemoryTypeManaged"}


def _memory_type(cuda, ptr: int) -> str:
    attributes = _PointerAttributes()
    cuda.check(cuda.lib.cudaPointerGetAttributes(ctypes.byref(attributes), ctypes.c_void_p(ptr)),
               "cudaPointerGetAttributes")
    return _MEMORY_TYPES[attributes.type]


def _memcpy(cuda, dst: int, src: int, nbytes: int, kind: int, what: str) -> None:
    cuda.check(cuda.lib.cudaMemcpy(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes), kind), what)


def _read(cuda, ptr: int, shape) -> np.ndarray:
    out = np.empty(shape, np.float32)
    _memcpy(cuda, out.ctypes.data, ptr, out.nbytes, 2, "read back")
    return out


class DeviceContext(fake.TensorContext):
    """execute_async_v3 on real device pointers."""

    def __init__(self, cudart) -> None:
        super().__init__(fake.Spec())
        self.cudart = cudart
        self.memory_types: set[str] = set()

    def execute_async_v3(self, stream):
        cudart = self.cudart
        cudart.stream_synchronize(stream)
        image = _read(cudart, self.addresses[C.IMAGE], self.shapes[C.IMAGE])
        mask = _read(cudart, self.addresses[C.MASK], self.shapes[C.MASK])
        out = np.ascontiguousarray(image * (1 - mask) + 0.25 * mask, dtype=np.float32)
        _memcpy(cudart, self.addresses[C.OUTPUT], out.ctypes.data, out.nbytes, 1, "write")
        self.memory_types |= {_memory_type(cudart, ptr) for ptr in self.addresses.values()}
        return True


class DeviceEngine(fake.TensorEngine):
    def __init__(self, cudart) -> None:
        super().__init__()
        self.context = DeviceContext(cudart)

    def create_execution_context(self):
        return self.context


def test_backend_data_path_on_real_device_memory(monkeypatch, tmp_path):
    cudart = import_cudart()
    engine = DeviceEngine(cudart)
    monkeypatch.setattr("lama_deploy.runtime.trt_import.import_tensorrt", lambda flavour=None: fake.make_trt(engine))
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized")
    rng = np.random.default_rng(0)
    with tb.TensorRTBackend(path, device="cuda:0") as backend:
        for n, h, w in [(1, 16, 16), (2, 32, 48), (1, 64, 96), (1, 16, 24)]:
            image = rng.random((n, 3, h, w), dtype=np.float32)
            mask = (rng.random((n, 1, h, w)) > 0.5).astype(np.float32)
            out = backend.infer({C.IMAGE: image, C.MASK: mask})[C.OUTPUT]
            assert np.array_equal(out, image * (1 - mask) + 0.25 * mask)
        buffers = backend.buffers
        assert all(_memory_type(cudart, b.host.ptr) == "cudaMemoryTypeHost" for b in buffers.values())
        grown = buffers[C.IMAGE].nbytes
    assert engine.context.memory_types == {"cudaMemoryTypeDevice"}
    assert grown == 1 * 3 * 64 * 96 * 4  # grown to the largest shape, never shrunk
    assert all(b.ptr == 0 and b.host.ptr == 0 for b in buffers.values())  # freed on deactivate


def test_buffers_round_trip_through_pinned_staging_on_a_stream():
    cudart = import_cudart()
    stream, buffer, pinned = CudaStream(cudart), DeviceBuffer(cudart), PinnedBuffer(cudart)
    try:
        data = np.arange(3 * 40 * 50, dtype=np.float32).reshape(1, 3, 40, 50)
        buffer.upload(data, stream.handle)
        out = buffer.download(np.empty_like(data), stream.handle)
        stream.synchronize()
        assert np.array_equal(out, data)
        view = pinned.view((4, 5), np.float16)
        view[...] = 2.5
        assert _memory_type(cudart, pinned.ptr) == "cudaMemoryTypeHost" and float(view.sum()) == 50.0
    finally:
        buffer.free()
        pinned.free()
        stream.destroy()
    assert buffer.ptr == 0 and pinned.ptr == 0 and stream.handle is None


def test_cuda_errors_are_one_line():
    cudart = import_cudart()
    buffer = DeviceBuffer(cudart)
    with pytest.raises(RuntimeError, match=r"CUDA error during cudaMalloc\(\d+\): cudaError") as excinfo:
        buffer.ensure(1 << 55)  # 32 PiB
    assert "\n" not in str(excinfo.value) and buffer.ptr == 0
