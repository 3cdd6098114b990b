"""What TensorRT 8.5 and later (JetPack 5 / 6) accept, checked on an ONNX graph.

Rules (sources in shared notes, tensorrt-onnx-facts.md sections 1-2):
- no `DFT` / `STFT` (TensorRT < 11.2 has no importer for them: "Plugin not found");
- no complex tensors anywhere;
- default-domain opset <= 17 (TensorRT 8.5/8.6 import up to 17); no ops from custom domains;
- no `Shape` with `start`/`end` attributes (TensorRT < 10 ignores them and returns the whole shape);
- `Range` on int32 or float only (the 8.x importer rejects int64);
- no `Einsum` (8.x: no broadcasting, no ellipsis);
- no int64 network inputs or outputs (8.x casts them down; 9+ needs int64 bindings).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from lama_deploy import contract as C

FORBIDDEN_OPS = {"DFT": "ONNX DFT (TensorRT parses it only from 11.2)", "STFT": "ONNX STFT",
                 "Einsum": "Einsum (TensorRT 8.x: no broadcasting/ellipsis)"}
COMPLEX_TYPES = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}
RANGE_TYPES = {TensorProto.FLOAT, TensorProto.INT32, TensorProto.FLOAT16}


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    types = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def tensorrt_violations(model: onnx.ModelProto, max_opset: int = C.MAX_TRT8_OPSET) -> list[str]:
    """Every rule the graph breaks, one readable line each (empty: TensorRT 8.5+ can parse it)."""
    problems: list[str] = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > max_opset:
            problems.append(f"opset {opset.version} > {max_opset} (TensorRT 8.5/8.6 import up to {max_opset})")
    types = _value_types(model)
    for value in list(model.graph.input) + list(model.graph.output):
        elem = value.type.tensor_type.elem_type
        if elem == TensorProto.INT64:
            problems.append(f"network I/O '{value.name}' is int64")
    for name, elem in types.items():
        if elem in COMPLEX_TYPES:
            problems.append(f"complex tensor '{name}'")
    for node in model.graph.node:
        label = f"{node.op_type} '{node.name or node.output[0]}'"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label} is from custom domain '{node.domain}' (needs a plugin)")
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f"{label}: {FORBIDDEN_OPS[node.op_type]}")
        if node.op_type == "Shape" and any(a.name in ("start", "end") for a in node.attribute):
            problems.append(f"{label} has start/end attributes (TensorRT < 10 ignores them)")
        if node.op_type == "Range":
            bad = [types.get(i) for i in node.input if types.get(i) not in RANGE_TYPES]
            if bad:
                problems.append(f"{label} has input types {bad} (TensorRT 8.x: int32 or float only)")
    return problems


def check_tensorrt_compatible(model: onnx.ModelProto, max_opset: int = C.MAX_TRT8_OPSET) -> None:
    problems = tensorrt_violations(model, max_opset)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError("graph breaks TensorRT 8.5+ rules: " + "; ".join(problems[:3]) + more)
