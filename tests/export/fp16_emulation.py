"""fp16 storage emulated on ONNX Runtime CPU, for the fp16 policy tests (test-only; no GPU here).

ONNX Runtime's CPU provider computes fp16 ops in fp32 and drops the casts between them, so an fp16 graph run
there keeps fp32 intermediates; these helpers make every fp16 tensor round to fp16 where it is produced.
"""

from __future__ import annotations

import onnx


def _tensor_as_float32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float32"), tensor.name)


def emulate_fp16_storage(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp32 copy of a mixed-precision graph that rounds every fp16 tensor to fp16 where it is produced.

    ONNX Runtime's CPU provider computes fp16 ops in fp32 and drops the casts between them, so an fp16 graph
    run there keeps fp32 intermediates. Here every node output typed fp16 gets a Cast(fp16) -> Cast(fp32)
    pair (run with graph optimisations off, so the pairs stay): compute in fp32, storage in fp16, as on
    tensor cores with fp32 accumulation; values past 65504 become inf as they would on a GPU.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    half = onnx.TensorProto.FLOAT16
    fp16 = {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == half}
    emulated = onnx.ModelProto()
    emulated.CopyFrom(model)
    graph = emulated.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == half:
            graph.initializer[i].CopyFrom(_tensor_as_float32(tensor))
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i == half:
                attr.i = onnx.TensorProto.FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == half:
                attr.t.CopyFrom(_tensor_as_float32(attr.t))
        nodes.append(node)
        for k, name in enumerate(node.output):
            if name in fp16:
                node.output[k] = f"{name}__fp32"
                nodes.append(onnx.helper.make_node("Cast", [node.output[k]], [f"{name}__fp16"], to=half))
                nodes.append(onnx.helper.make_node("Cast", [f"{name}__fp16"], [name], to=onnx.TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return emulated


def emulated_session(model: onnx.ModelProto):
    """An ONNX Runtime CPU session of `emulate_fp16_storage(model)`, optimisations off so the casts stay."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(emulate_fp16_storage(model).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
