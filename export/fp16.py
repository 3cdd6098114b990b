"""Mixed-precision (fp16) export: fp16 everywhere except where LaMa's numbers leave fp16's range.

Why not a plain `.half()`: with trained weights the spectrum of a Fourier unit reaches ~sqrt(HW) times its
input (~1e3), passing fp16's 65504 at high resolution (black or NaN output, see field notes), and BatchNorm
running variances reach ~1e6 (inf in fp16). So:
1. BatchNorm is folded into a per-channel scale and shift in fp32 *before* anything is cast (TensorRT folds
   the same way); the folded values are small.
2. The graph is converted with onnxconverter-common's float16 tool (a maintained converter, not hand edits),
   with a node block list that keeps in fp32: every node of the Fourier units (the DFT bases and their
   angle arithmetic, the spectral 1x1 conv, its BN and ReLU, the inverse DFT) and the pre/post-processing
   around the generator (mask binarisation and compositing). The converter inserts the Cast nodes, so the
   graph is explicitly typed for strongly typed builders (TensorRT 11, TensorRT-RTX); I/O stay float32.
3. The converter routes every edge between two blocked (fp32) nodes through an fp32 -> fp16 -> fp32 Cast
   pair (onnxconverter-common 1.14-1.16), which would clip the spectrum at 65504 all the same, and it can
   leave a graph output fp16. `remove_fp16_round_trips` and `restore_fp32_outputs` undo exactly those
   Casts; nothing else in the converter's graph is touched.
"""

from __future__ import annotations

import onnx
import torch
from torch import nn

from lama_deploy.contract import runs_in_fp16
from lama_deploy.errors import missing_dependency


class ScaleShift(nn.Module):
    """BatchNorm in eval mode, folded: y = x * scale + shift (per channel)."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        with torch.no_grad():
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            shift = bn.bias.double() - bn.running_mean.double() * scale
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1))
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every eval-mode BatchNorm2d by its fp32 ScaleShift, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, ScaleShift(child))
        else:
            fold_batchnorm(child)
    return module


def fp32_node_names(model: onnx.ModelProto) -> list[str]:
    """Nodes that must stay fp32 (`contract.runs_in_fp16`): Fourier units, and everything outside the generator."""
    return [node.name for node in model.graph.node if not runs_in_fp16(node.name)]


def convert_to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 graph with fp32 islands (Fourier units, pre/post-processing) and float32 I/O."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise missing_dependency("onnxconverter-common", "pip install onnxconverter-common") from None
    import warnings

    with warnings.catch_warnings():
        # The converter warns for every fp32 constant it clips to fp16's range (folded BN shifts are
        # far inside it); the numbers are checked against fp32 after export instead.
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=set(fp32_node_names(model)), disable_shape_infer=False,
        )
    remove_fp16_round_trips(converted)
    restore_fp32_outputs(converted)
    return converted


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def remove_fp16_round_trips(model: onnx.ModelProto) -> int:
    """Bypass fp32 -> Cast(fp16) -> Cast(fp32) chains; returns how many fp32 Casts were bypassed."""
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if _cast_to(node) != onnx.TensorProto.FLOAT16:
            continue
        users = consumers.get(node.output[0], [])
        back_to_fp32 = [u for u in users if _cast_to(u) == onnx.TensorProto.FLOAT and u.output[0] not in graph_outputs]
        for cast in back_to_fp32:
            rename[cast.output[0]] = node.input[0]
            dropped.add(id(cast))
        if users and len(back_to_fp32) == len(users) and node.output[0] not in graph_outputs:
            dropped.add(id(node))
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(kept)
    produced = {o for n in kept for o in n.output}
    stale = [v for v in graph.value_info if v.name not in produced]
    for value in stale:
        graph.value_info.remove(value)
    return len(rename)


def restore_fp32_outputs(model: onnx.ModelProto) -> None:
    """Graph outputs the converter left fp16 (a trailing Cast) become float32 again."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for value in model.graph.output:
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        node = producers.get(value.name)
        if node is None or _cast_to(node) is None:
            raise ValueError(f"fp16 conversion left output {value.name} in fp16 without a Cast to fix")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = onnx.TensorProto.FLOAT
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
