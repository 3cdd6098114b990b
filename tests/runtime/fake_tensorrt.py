"""CPU stand-ins for TensorRT (one per API generation) and for libcudart, so the TensorRT backend's data path
is tested without a GPU, without cuda-python, and under Python 3.8 (this file must stay 3.8-compatible).

"Device" memory comes from `fake_cudart.c` (compiled here with gcc: malloc/memcpy behind CUDA's C ABI), so
the backend's real ctypes binding runs. The fake engine computes `image * (1 - mask) + 0.25 * mask` from the
bytes the backend uploaded and writes the output where the backend told it to.

API generations, each with what it LACKS (the backend must run on all three):
- "8.5" (JetPack 5, also 8.6 of JetPack 6.0): the name-based tensor API (introduced in 8.5) AND the older
  bindings API (`num_bindings`, `get_binding_*`, `execute_async_v2`); `device_memory_size` only.
- "10": bindings API removed; `device_memory_size` deprecated, `device_memory_size_v2` added.
- "11": no bindings API, no `device_memory_size`, no `trt.nptype` helper (treated as gone: the backend maps
  dtypes itself).
A serialized fake engine is `MAGIC` + JSON, so engine files (with or without a sidecar, as `trtexec` writes
them) can be made on the host and read in another process by a fake `tensorrt` package (`write_fake_package`).
"""

from __future__ import annotations

import ctypes
import enum
import json
import shutil
import subprocess
import types
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from lama_deploy import contract as C

IMAGE, MASK, OUTPUT = C.IMAGE, C.MASK, C.OUTPUT
CHANNELS = {IMAGE: 3, MASK: 1, OUTPUT: 3}
NAMES = (IMAGE, MASK, OUTPUT)
PROFILE = [(1, 3, 16, 16), (1, 3, 64, 64), (4, 3, 64, 96)]  # min, opt, max of the image input
MAGIC = b"FAKETRT1"
GENERATIONS = {"8.5": "8.5.2.2", "10": "10.13.0.35", "11": "11.0.0.1"}
FAKE_CUDART_SOURCE = Path(__file__).with_name("fake_cudart.c")
STATS = ("mallocs", "live", "host_mallocs", "host_live", "copies", "streams", "events", "device", "last_malloc_bytes")


# ----------------------------------------------------------------------------------------------- libcudart
def build_fake_cudart(folder: Path) -> Path:
    """Compile fake_cudart.c into `folder/libcudart.so` (gcc); returns its path."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc) to build the stand-in libcudart")
    out = Path(folder) / "libcudart.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(out), str(FAKE_CUDART_SOURCE)], check=True)
    return out


def cuda_stats(lib_path: Path) -> Dict[str, int]:
    """The stand-in library's counters (same process: ctypes returns the already loaded library)."""
    lib = ctypes.CDLL(str(lib_path))
    lib.fake_stat.restype = ctypes.c_long
    return {name: int(lib.fake_stat(i)) for i, name in enumerate(STATS)}


def fail_next_malloc(lib_path: Path) -> None:
    ctypes.CDLL(str(lib_path)).fake_fail_next_malloc()


# ----------------------------------------------------------------------------------------------- the engine
def _array(ptr: int, shape: tuple, dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
          DataType.BOOL: np.bool_}


class Spec:
    """What a fake engine is: I/O names, image profile, dtypes, device memory, the generation that built it."""

    def __init__(self, names=NAMES, profile=None, dtypes=None, generation: str = "10",
                 device_memory: int = 3 << 20, output_offset: float = 0.0) -> None:
        self.names = tuple(names)
        self.profile = [tuple(s) for s in (profile or PROFILE)]
        self.dtypes = dict(dtypes or {})
        self.generation = generation
        self.device_memory = device_memory
        self.output_offset = output_offset  # > 0 makes a "wrong" engine for FAILED verdicts

    def serialize(self) -> bytes:
        return MAGIC + json.dumps({"names": self.names, "profile": self.profile, "dtypes": self.dtypes,
                                   "generation": self.generation, "device_memory": self.device_memory,
                                   "output_offset": self.output_offset}).encode()

    @classmethod
    def parse(cls, data: bytes) -> "Spec":
        return cls(**json.loads(data[len(MAGIC):].decode()))

    def dtype(self, name: str) -> DataType:
        return DataType[self.dtypes.get(name, "FLOAT")]


class TensorContext:
    """The name-based execution context (TensorRT >= 8.5)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.shapes: Dict[str, tuple] = {}
        self.addresses: Dict[str, int] = {}

    def _in_profile(self, shape: tuple) -> bool:
        low, _, high = self.spec.profile
        return len(shape) == 4 and all(low[i] <= shape[i] <= high[i] for i in (0, 2, 3))

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return self._in_profile(tuple(shape))

    def get_tensor_shape(self, name):
        n, _, h, w = self.shapes[IMAGE]
        return (n, CHANNELS.get(name, 3), h, w)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def _run(self) -> bool:
        if set(self.addresses) != set(self.spec.names):
            return False  # TensorRT refuses to enqueue with an I/O tensor's address unset
        dt = {n: _NUMPY[self.spec.dtype(n)] for n in self.spec.names}
        image = _array(self.addresses[IMAGE], self.shapes[IMAGE], dt[IMAGE]).astype(np.float32)
        mask = _array(self.addresses[MASK], self.shapes[MASK], dt[MASK]).astype(np.float32)
        out = image * (1 - mask) + 0.25 * mask + self.spec.output_offset
        _array(self.addresses[OUTPUT], self.shapes[IMAGE], dt[OUTPUT])[...] = out
        return True

    def execute_async_v3(self, stream_handle):
        assert isinstance(stream_handle, int)
        return self._run()


class BindingsContext(TensorContext):
    """8.x adds the bindings API: positional device pointers."""

    def set_binding_shape(self, index, shape):
        return self.set_input_shape(self.spec.names[index], shape)

    def execute_async_v2(self, bindings, stream_handle):
        for name, ptr in zip(self.spec.names, bindings):
            self.addresses[name] = int(ptr)
        return self._run()


class TensorEngine:
    """The name-based engine API every generation has."""

    context_class = TensorContext

    def __init__(self, spec: Optional[Spec] = None, names=None) -> None:
        self.spec = spec or Spec(names=names or NAMES)
        self.num_io_tensors = len(self.spec.names)
        self.num_optimization_profiles = 1

    def get_tensor_name(self, i):
        return self.spec.names[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.OUTPUT if name == self.spec.names[-1] else TensorIOMode.INPUT

    def get_tensor_dtype(self, name):
        return self.spec.dtype(name)

    def get_tensor_shape(self, name):
        return (-1, CHANNELS.get(name, 3), -1, -1)

    def get_tensor_profile_shape(self, name, index):
        return [(s[0], CHANNELS.get(name, 3), s[2], s[3]) for s in self.spec.profile]

    def create_execution_context(self):
        return self.context_class(self.spec)


class Engine85(TensorEngine):
    context_class = BindingsContext

    @property
    def num_bindings(self):
        return self.num_io_tensors

    def get_binding_name(self, index):
        return self.spec.names[index]

    def binding_is_input(self, index):
        return index < len(self.spec.names) - 1

    def get_binding_shape(self, index):
        return self.get_tensor_shape(self.spec.names[index])

    def get_binding_dtype(self, index):
        return self.get_tensor_dtype(self.spec.names[index])

    @property
    def device_memory_size(self):
        return self.spec.device_memory


class Engine10(TensorEngine):
    @property
    def device_memory_size(self):  # deprecated in 10.x
        return self.spec.device_memory

    @property
    def device_memory_size_v2(self):
        return self.spec.device_memory


class Engine11(TensorEngine):
    @property
    def device_memory_size_v2(self):
        return self.spec.device_memory


ENGINES = {"8.5": Engine85, "10": Engine10, "11": Engine11}
# Kept under its old name: tests written before the generations build a 10.x engine from names.
class_for = ENGINES.get


class _Logger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


def make_trt(engine=None, generation: str = "10") -> types.ModuleType:
    """A module with one generation's API. `engine`: what every deserialization returns (None = a corrupt
    file); without it, engine bytes are parsed (fake engines of another generation are refused)."""
    module = types.ModuleType("tensorrt")
    module.__version__ = GENERATIONS[generation]
    fixed = engine

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            found = fixed
            if found is None and bytes(data[:len(MAGIC)]) == MAGIC:
                spec = Spec.parse(bytes(data))
                if spec.generation == generation:
                    found = ENGINES[generation](spec)
            if found is None:
                self.logger.log(_Logger.Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                                        "(Serialization assertion magicTag failed)")
            return found

    module.ILogger, module.Runtime, module.TensorIOMode, module.DataType = _Logger, Runtime, TensorIOMode, DataType
    if generation != "11":
        module.nptype = lambda dtype: _NUMPY[DataType(int(dtype))]
    return module


def write_fake_package(folder: Path, generation: str) -> Path:
    """A `tensorrt` package in `folder` that is this fake (for subprocesses: put `folder` on PYTHONPATH)."""
    package = Path(folder) / "tensorrt"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import fake_tensorrt as _fake\n"
        f"_module = _fake.make_trt(generation={generation!r})\n"
        "globals().update({k: v for k, v in vars(_module).items() if not k.startswith('__')})\n"
        "__version__ = _module.__version__\n")
    return package
