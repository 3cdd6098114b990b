"""One reader of model facts - inputs, outputs, dims, dtypes, `lama.*` metadata - for an ONNX file or an
engine (through its sidecar). Every command asks it "what is this file?" and `contract.io_problem` whether
it is our model.

Lazy: `onnx` is imported only to read an ONNX file (ONNX Runtime's session is the fallback on an edge box
without `onnx`); an engine is described by its JSON sidecar, so no TensorRT is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contract as C
from .engine_sidecar import sidecar_io, sidecar_metadata, verify_sidecar
from .errors import InputNotFound, UserError, missing_dependency

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: dtype names as the readers report them -> one spelling.
_DTYPES = {"FLOAT": "float32", "FLOAT16": "float16", "float": "float32", "half": "float16",
           "tensor(float)": "float32", "tensor(float16)": "float16", "DOUBLE": "float64", "tensor(double)": "float64"}


@dataclass(frozen=True)
class TensorFacts:
    dims: tuple[Any, ...]   # ints for fixed dims; a name (ONNX) or None/-1 for dynamic ones
    dtype: str              # "float32", "float16", or the reader's own name for anything else

    @property
    def fixed_batch(self) -> int | None:
        n = self.dims[0] if self.dims else None
        return n if isinstance(n, int) and n > 0 else None


@dataclass
class ModelFacts:
    name: str                                   # the file name, as messages show it
    kind: str                                   # "onnx" or "engine"
    inputs: dict[str, TensorFacts]
    outputs: dict[str, TensorFacts]
    metadata: dict[str, str] = field(default_factory=dict)   # lama.* keys (ONNX metadata / sidecar's copy)
    sidecar: dict[str, Any] = field(default_factory=dict)    # engines only
    external_data: bool = False                              # ONNX weights in side files

    def check(self) -> "ModelFacts":
        """Self, or UserError with `contract.io_problem`'s one line."""
        problem = C.io_problem(self)
        if problem:
            raise UserError(problem)
        return self


def dtype_name(raw: Any) -> str:
    return _DTYPES.get(str(raw), str(raw))


def read_model_facts(path: str | Path) -> ModelFacts:
    """Facts of an `.onnx` file or an engine (`.engine`/`.plan`/`.trt`, from its verified sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"model {path} not found")
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return engine_facts(path)
    if suffix in ONNX_SUFFIXES:
        return onnx_facts(path)
    raise UserError(f"cannot tell what {path.name} is from its extension; pass an ONNX model (.onnx) or a "
                    f"TensorRT engine ({'/'.join(ENGINE_SUFFIXES)}) with its .json sidecar")


def onnx_facts(path: Path) -> ModelFacts:
    try:
        import onnx
    except ImportError:
        return _onnx_facts_from_onnxruntime(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it "
                        f"with `lama-deploy export`") from None
    return facts_from_proto(model, path.name)


def facts_from_proto(model: Any, name: str) -> ModelFacts:
    """Facts of an in-memory `onnx.ModelProto` (the exporter's post-check reads its fresh graph this way)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    graph = model.graph
    initializers = {init.name for init in graph.initializer}  # old IR lists weights among the inputs

    def tensor(value: Any) -> TensorFacts:
        dims = tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                     for d in value.type.tensor_type.shape.dim)
        return TensorFacts(dims, dtype_name(onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)))

    return ModelFacts(
        name=name, kind="onnx",
        inputs={v.name: tensor(v) for v in graph.input if v.name not in initializers},
        outputs={v.name: tensor(v) for v in graph.output},
        metadata={p.key: p.value for p in model.metadata_props},
        external_data=any(uses_external_data(init) for init in graph.initializer),
    )


def _onnx_facts_from_onnxruntime(path: Path) -> ModelFacts:
    try:
        import onnxruntime
    except ImportError:
        raise missing_dependency("onnx", "pip install onnx (or onnxruntime)") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
        raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it "
                        f"with `lama-deploy export`") from None
    return facts_from_session(session, path.name)


def facts_from_session(session: Any, name: str) -> ModelFacts:
    """Facts of an `onnxruntime.InferenceSession` (the ONNX Runtime backend checks what it loaded)."""
    def tensors(args: Any) -> dict[str, TensorFacts]:
        return {a.name: TensorFacts(tuple(a.shape), dtype_name(a.type)) for a in args}

    return ModelFacts(name=name, kind="onnx", inputs=tensors(session.get_inputs()),
                      outputs=tensors(session.get_outputs()),
                      metadata=dict(session.get_modelmeta().custom_metadata_map))


def engine_facts(path: Path, sidecar: dict[str, Any] | None = None) -> ModelFacts:
    """Facts of an engine from its sidecar (verified against the engine file unless given)."""
    sidecar = verify_sidecar(path) if sidecar is None else sidecar
    inputs: dict[str, TensorFacts] = {}
    outputs: dict[str, TensorFacts] = {}
    for tensor_name, info in sidecar_io(sidecar).items():
        # Sidecars before the "mode" key: the contract's input names are the inputs.
        is_input = info.get("mode", "input" if tensor_name in C.INPUT_NAMES else "output") == "input"
        target = inputs if is_input else outputs
        target[tensor_name] = TensorFacts(tuple(info.get("shape") or ()), dtype_name(info.get("dtype")))
    return ModelFacts(name=path.name, kind="engine", inputs=inputs, outputs=outputs,
                      metadata=sidecar_metadata(sidecar), sidecar=sidecar)


def facts_from_io(name: str, kind: str, inputs: dict[str, tuple[Any, ...]], outputs: dict[str, tuple[Any, ...]],
                  dtypes: dict[str, str] | None = None) -> ModelFacts:
    """Facts from names and dims a framework reports (a parsed TensorRT network, a deserialized engine)."""
    dtypes = dtypes or {}
    return ModelFacts(name=name, kind=kind,
                      inputs={n: TensorFacts(tuple(d), dtype_name(dtypes.get(n, "float"))) for n, d in inputs.items()},
                      outputs={n: TensorFacts(tuple(d), dtype_name(dtypes.get(n, "float"))) for n, d in outputs.items()})
