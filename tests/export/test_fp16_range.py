"""fp16 range: every fp16 tensor of the mixed-precision graph stays finite on trained-like magnitudes.

ONNX Runtime's CPU provider computes most fp16 ops in fp32 and may drop casts between them, so an fp16 graph
that "runs" there proves little about a GPU. Exposing every fp16-typed intermediate as a graph output makes
ONNX Runtime materialise each one in fp16: an overflow then shows as inf, as it would on TensorRT. The naive
conversion (no fp32 islands) is the control that shows the check can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx
from lama_deploy import contract as C
from lama_model.synthetic import sample_batch
from lama_model import random_model


def _non_finite_fp16_tensors(model: onnx.ModelProto, height: int, width: int) -> list[str]:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.value_info[:]  # the converter's own value_info can disagree with the real types
    inferred = onnx.shape_inference.infer_shapes(exposed)
    produced = {o for n in model.graph.node for o in n.output}
    fp16 = [v.name for v in inferred.graph.value_info
            if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 and v.name in produced]
    for name in fp16:
        exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT16, None))
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    image, mask = sample_batch(1, height, width, 11)
    outputs = session.run(fp16, {C.IMAGE: image, C.MASK: mask})
    return [name for name, value in zip(fp16, outputs) if not np.isfinite(value).all()]


@pytest.fixture(scope="module")
def trained_like_tiny_fp32(tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("fp16") / "tiny32.onnx"
    export_inpainting_onnx(path, model=random_model("tiny", seed=0, trained_like=True), config="tiny")
    return onnx.load(str(path))


def test_mixed_fp16_graph_has_no_overflow_at_1024(tmp_path: Path) -> None:
    path = tmp_path / "tiny16.onnx"
    export_inpainting_onnx(path, model=random_model("tiny", seed=0, trained_like=True), config="tiny", options=ExportOptions(precision="fp16"))
    assert _non_finite_fp16_tensors(onnx.load(str(path)), 1024, 1024) == []


def test_only_fourier_units_leave_fp16_range(trained_like_tiny_fp32: onnx.ModelProto) -> None:
    """Control: in the fp32 graph, Fourier-unit tensors pass 65504 at 1024x1024 and nothing else does,
    so the fp32 islands are exactly where they are needed (and the check above can fail)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(trained_like_tiny_fp32)
    inferred = onnx.shape_inference.infer_shapes(exposed)
    floats = [v.name for v in inferred.graph.value_info
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and "/generator/" in v.name]
    for name in floats:
        exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    image, mask = sample_batch(1, 1024, 1024, 11)
    peaks = {n: float(np.abs(v).max()) for n, v in zip(floats, session.run(floats, {C.IMAGE: image, C.MASK: mask}))
             if v.size}
    fourier = max(v for n, v in peaks.items() if "/fu/" in n)
    elsewhere = max(v for n, v in peaks.items() if "/fu/" not in n)
    assert fourier > 65504 > elsewhere, (fourier, elsewhere)


def test_round_trip_removal_keeps_no_fp32_fp16_fp32_chain(tmp_path: Path) -> None:
    path = tmp_path / "tiny16.onnx"
    export_inpainting_onnx(path, model=random_model("tiny", seed=0), config="tiny", options=ExportOptions(precision="fp16"))
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.attribute[0].i == onnx.TensorProto.FLOAT:
            source = producers.get(node.input[0])
            assert not (source is not None and source.op_type == "Cast"
                        and source.attribute[0].i == onnx.TensorProto.FLOAT16), node.name
