"""CPU stand-ins for TensorRT and cuda-python, so the TensorRT backend's data path is tested without a GPU.

"Device" memory is host memory from ctypes; the fake engine computes `image * (1 - mask) + 0.25 * mask`
from the bytes the backend uploaded and writes the output where the backend told it to. Two engine
flavours mirror the two TensorRT APIs: name-based tensors (8.5+, 10.x, RTX) and bindings (older 8.x).
"""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace

import numpy as np

from lama_deploy import contract as C

NAMES = (C.IMAGE, C.MASK, C.OUTPUT)
PROFILE = [(1, 3, 16, 16), (1, 3, 64, 64), (4, 3, 64, 96)]  # min, opt, max of the image input


class FakeCudart:
    class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's name
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.allocations: dict[int, ctypes.Array] = {}
        self.mallocs: list[int] = []
        self.freed: list[int] = []
        self.host_mallocs: list[int] = []
        self.host_freed: list[int] = []
        self.device = None

    def cudaMalloc(self, nbytes):  # noqa: N802
        buffer = ctypes.create_string_buffer(nbytes)
        self.allocations[ctypes.addressof(buffer)] = buffer
        self.mallocs.append(nbytes)
        return self.cudaError_t.cudaSuccess, ctypes.addressof(buffer)

    def cudaFree(self, ptr):  # noqa: N802
        self.allocations.pop(ptr)
        self.freed.append(ptr)
        return (self.cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, nbytes):  # noqa: N802
        buffer = ctypes.create_string_buffer(nbytes)
        self.allocations[ctypes.addressof(buffer)] = buffer
        self.host_mallocs.append(nbytes)
        return self.cudaError_t.cudaSuccess, ctypes.addressof(buffer)

    def cudaFreeHost(self, ptr):  # noqa: N802
        self.allocations.pop(ptr)
        self.host_freed.append(ptr)
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        ctypes.memmove(dst, src, nbytes)
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):  # noqa: N802
        return self.cudaError_t.cudaSuccess, 77

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaSetDevice(self, index):  # noqa: N802
        self.device = index
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetErrorName(self, err):  # noqa: N802
        return self.cudaError_t.cudaSuccess, self.cudaError_t(err).name.encode()


def _array(ptr: int, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(ptr)).reshape(shape)


def _run(shapes: dict[str, tuple], addresses: dict[str, int]) -> None:
    image, mask = _array(addresses[C.IMAGE], shapes[C.IMAGE]), _array(addresses[C.MASK], shapes[C.MASK])
    _array(addresses[C.OUTPUT], shapes[C.IMAGE])[...] = image * (1 - mask) + 0.25 * mask


def _in_profile(shape: tuple[int, ...]) -> bool:
    low, _, high = PROFILE
    return all(low[i] <= shape[i] <= high[i] for i in (0, 2, 3))  # N, H, W


class TensorContext:
    def __init__(self) -> None:
        self.shapes, self.addresses = {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return _in_profile(tuple(shape))

    def get_tensor_shape(self, name):
        return self.shapes[C.IMAGE]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        _run(self.shapes, self.addresses)
        return True


class TensorEngine:
    """TensorRT >= 8.5 / 10.x / RTX: name-based tensor API."""

    def __init__(self, names=NAMES) -> None:
        self.names = names
        self.num_io_tensors = len(names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.OUTPUT if name == self.names[-1] else TensorIOMode.INPUT

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_shape(self, name):
        return (-1, C.CHANNELS.get(name, 3), -1, -1)

    def get_tensor_profile_shape(self, name, index):
        return PROFILE

    def create_execution_context(self):
        return TensorContext()


class TensorIOMode(enum.Enum):
    INPUT = 0
    OUTPUT = 1


class _Logger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3

    def __init__(self) -> None:
        pass


def make_trt(engine) -> SimpleNamespace:
    """A module-like object with what the backend uses; `engine` is returned by deserialization (None = failure)."""

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            if engine is None:
                self.logger.log(_Logger.Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                                        "(Serialization assertion magicTag failed)")
            return engine

    return SimpleNamespace(__name__="tensorrt", __version__="10.0.fake", ILogger=_Logger, Runtime=Runtime,
                           TensorIOMode=TensorIOMode, nptype=lambda dtype: np.dtype(dtype).type)
