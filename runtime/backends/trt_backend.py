"""TensorRT backend: a serialized engine (`.engine` / `.plan`) run with one CUDA stream.

Works with `tensorrt` 8.6 / 10.x / 11.x and `tensorrt_rtx` (picked by `lama_deploy.runtime.trt_import`) through
the name-based tensor API that TensorRT 8.5 introduced and 10.x kept alone: `set_input_shape` /
`set_tensor_address` / `execute_async_v3` (the project supports nothing older than 8.5, JetPack 5; the bindings
API of 8.x is never used). Nothing else version-specific is assumed: dtypes are mapped here (no `trt.nptype`),
device memory size is read as `device_memory_size_v2` (10.x+) or `device_memory_size` (8.x). Device memory
comes from the CUDA runtime library through ctypes (`cuda_memory`, no cuda-python); buffers are allocated
once and grown only when a larger shape comes. Everything is imported on activation.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from lama_deploy import contract as C
from lama_deploy.engine_sidecar import (
    K_COMPUTE_CAPABILITY, K_PRECISION, read_sidecar, sidecar_flavour, sidecar_metadata, sidecar_tensorrt, sidecar_weights,
)
from lama_deploy.errors import InputNotFound, UserError
from lama_deploy.model_facts import ModelFacts, facts_from_io

from .base import Backend, BackendError, Profile
from .cuda_memory import CudaStream, DeviceBuffer, load_cuda_runtime, set_device

ENGINE_SUFFIXES = (".engine", ".plan")
# The calls this backend makes, by object: checked on load (and against the real tensorrt_rtx in the tests).
ENGINE_CALLS = ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                "get_tensor_profile_shape", "create_execution_context")
CONTEXT_CALLS = ("set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3")
# TensorRT DataType names -> numpy (what the runtime's I/O can be; bf16/fp8 never reach the I/O here).
NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                "BOOL": np.bool_, "UINT8": np.uint8}
REBUILD_HINT = "rebuild it on this machine with `lama-deploy build`"


def explain_load_failure(messages: list[str]) -> str:
    """One readable reason from TensorRT's error log of a failed deserialization."""
    text = " ".join(messages)
    lowered = text.lower()
    if "magic" in lowered or "serialization version" in lowered or "serialization (" in lowered:
        return f"it is not a TensorRT engine, or was built by another TensorRT version/flavour; {REBUILD_HINT}"
    if any(sign in lowered for sign in ("cudaerror 35", "cudaerror 100", "cuda driver", "no cuda-capable device")):
        return "no usable NVIDIA GPU/driver here: TensorRT engines need an NVIDIA GPU and TensorRT runtime"
    if "compute capability" in lowered or "incompatible device" in lowered:
        return f"it was built for another GPU; {REBUILD_HINT}"
    first = messages[0].strip() if messages else "TensorRT gave no reason"
    return f"{first[:200]}; {REBUILD_HINT}"


def deserialize_engine(trt: ModuleType, path: Path, logger: Any) -> tuple[Any, Any]:
    """(runtime, engine) or BackendError with the reason in one line."""
    data = path.read_bytes()
    if not data:
        raise BackendError(f"TensorRT engine {path} is empty; {REBUILD_HINT}")
    runtime = trt.Runtime(logger)
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # some versions raise instead of returning None
        logger.errors.append(str(exc))
        engine = None
    if engine is None:
        raise BackendError(f"cannot load TensorRT engine {path}: {explain_load_failure(logger.errors)}")
    return runtime, engine


def numpy_dtype(trt_dtype: Any) -> Any:
    """numpy type of a TensorRT DataType, by name (`DataType.HALF` -> float16), on every TensorRT version."""
    name = str(getattr(trt_dtype, "name", trt_dtype)).split(".")[-1].upper()
    if name not in NUMPY_DTYPES:
        raise BackendError(f"the engine has an I/O tensor of type {name}, which this runtime cannot feed; "
                           f"rebuild it from a lama-deploy ONNX")
    return NUMPY_DTYPES[name]


def missing_calls(engine: Any) -> list[str]:
    """The name-based calls this engine object lacks (a TensorRT older than 8.5)."""
    return [call for call in ENGINE_CALLS if not hasattr(engine, call)]


def device_memory_bytes(engine: Any) -> int | None:
    """Scratch memory an execution context needs, as the engine reports it (None when it does not)."""
    for attribute in ("device_memory_size_v2", "device_memory_size"):
        value = getattr(engine, attribute, None)
        if value is not None:
            return int(value)
    return None


def engine_facts(trt: ModuleType, engine: Any, name: str) -> ModelFacts:
    """Names, dims and dtypes of a deserialized engine's I/O tensors."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    dims = {n: tuple(engine.get_tensor_shape(n)) for n in names}
    dtypes = {n: _dtype_word(engine.get_tensor_dtype(n)) for n in names}
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return facts_from_io(name, "engine", {n: dims[n] for n in inputs},
                         {n: dims[n] for n in names if n not in inputs}, dtypes)


def _dtype_word(trt_dtype: Any) -> str:
    """"float"/"half"/... as model facts spell dtypes."""
    return {"FLOAT": "float", "HALF": "half"}.get(str(getattr(trt_dtype, "name", trt_dtype)).split(".")[-1].upper(),
                                                  "other")


def engine_profile(engine: Any) -> Profile:
    """The image input's range in optimisation profile 0 (a static engine: its one shape)."""
    static = tuple(engine.get_tensor_shape(C.IMAGE))
    if all(d > 0 for d in static):
        return Profile.from_shapes(static, static, static)
    low, opt, high = (tuple(s) for s in engine.get_tensor_profile_shape(C.IMAGE, 0))
    return Profile.from_shapes(low, high, opt)


class TensorRTBackend(Backend):
    """A deserialized engine, one execution context, one stream, growable device buffers."""

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str | None = None, flavour: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputNotFound(f"engine {self.path} does not exist; build one with `lama-deploy build`")
        if device is not None and not device.startswith("cuda"):
            raise BackendError(f"TensorRT runs on NVIDIA GPUs only; use --device cuda[:N], not {device!r}")
        self.device = device
        self.sidecar = read_sidecar(self.path)
        self.flavour = flavour or sidecar_flavour(self.sidecar)
        self.trt: ModuleType | None = None
        self.engine = self.context = self.runtime = self.stream = None
        self.buffers: dict[str, DeviceBuffer] = {}
        self._profile = Profile()

    def load_engine(self) -> None:
        """Deserialize and check the engine (no CUDA buffers yet): the part that fails on a bad file."""
        from lama_deploy.runtime.trt_import import TensorRTUnavailable, import_tensorrt, make_logger, version_of

        try:
            self.trt = import_tensorrt(self.flavour)
        except TensorRTUnavailable as exc:
            raise BackendError(f"cannot run TensorRT engine {self.path.name}: {exc}") from None
        self.logger = make_logger(self.trt)
        self.runtime, self.engine = deserialize_engine(self.trt, self.path, self.logger)
        missing = missing_calls(self.engine)
        if missing:
            raise BackendError(f"TensorRT {version_of(self.trt)} lacks the name-based tensor API "
                               f"({', '.join(missing)}); this runtime needs TensorRT 8.5 or newer")
        problem = C.io_problem(engine_facts(self.trt, self.engine, self.path.name))
        if problem:
            raise BackendError(problem)
        self._profile = engine_profile(self.engine)

    def activate_impl(self) -> None:
        cudart, device_error = None, None
        try:
            cudart = load_cuda_runtime()
            set_device(cudart, self.device)
        except Exception as exc:  # no cuda-python or no usable GPU: a bad engine file is reported first
            device_error = exc
        self.load_engine()
        if isinstance(device_error, UserError):
            raise device_error
        if device_error is not None:
            raise BackendError(f"cannot use {self.device or 'cuda:0'} for TensorRT: {device_error}")
        self.cudart = cudart
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"TensorRT could not create an execution context for {self.path}: "
                               f"{explain_load_failure(self.logger.errors)}")
        self.stream = CudaStream(cudart)
        self.buffers = {name: DeviceBuffer(cudart) for name in C.INPUT_NAMES + C.OUTPUT_NAMES}
        self.dtypes = {name: numpy_dtype(self.engine.get_tensor_dtype(name)) for name in C.INPUT_NAMES + C.OUTPUT_NAMES}

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {name: np.ascontiguousarray(feed[name], dtype=self.dtypes[name]) for name in C.INPUT_NAMES}
        return {C.OUTPUT: self._infer_tensors(inputs).astype(np.float32, copy=False)}

    def _infer_tensors(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ctx, stream = self.context, self.stream.handle
        for name, array in inputs.items():
            if not ctx.set_input_shape(name, array.shape):
                raise BackendError(f"shape {array.shape} of {name} is outside the engine's profile "
                                   f"{self._profile.as_dict()}")
            ctx.set_tensor_address(name, self.buffers[name].upload(array, stream))
        output = np.empty(tuple(ctx.get_tensor_shape(C.OUTPUT)), dtype=self.dtypes[C.OUTPUT])
        ctx.set_tensor_address(C.OUTPUT, self.buffers[C.OUTPUT].ensure(output.nbytes))
        if not ctx.execute_async_v3(self.stream.ptr()):
            raise RuntimeError(f"TensorRT inference failed: {self._last_error()}")
        self.buffers[C.OUTPUT].download(output, stream)
        self.stream.synchronize()
        return output

    def _last_error(self) -> str:
        return self.logger.errors[-1].strip() if self.logger.errors else "TensorRT gave no reason"

    def deactivate_impl(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        if self.stream is not None:
            self.stream.destroy()
        # The context must go before the engine, the engine before the runtime.
        self.context = None
        self.engine = None
        self.runtime = None
        self.buffers, self.stream = {}, None

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def weights(self) -> str | None:
        return sidecar_weights(self.sidecar) or None

    def describe(self) -> dict[str, Any]:
        from lama_deploy.runtime.trt_import import flavour_of, version_of

        facts: dict[str, Any] = {"device": self.device or "cuda:0"}
        if self.trt is not None and self.engine is not None:
            facts.update(flavour=flavour_of(self.trt), tensorrt=version_of(self.trt), api="tensors (execute_async_v3)",
                         device_memory_bytes=device_memory_bytes(self.engine))
        if self.sidecar:
            facts.update(precision=self.sidecar.get(K_PRECISION), built_with=sidecar_tensorrt(self.sidecar),
                         config=sidecar_metadata(self.sidecar).get(C.META_CONFIG),
                         compute_capability=self.sidecar.get(K_COMPUTE_CAPABILITY))
        return facts
