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

from lama_deploy.contract import DEFAULT_FP16_POLICY, runs_in_fp16
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


def fp32_node_names(model: onnx.ModelProto, fp16_policy: str = DEFAULT_FP16_POLICY) -> list[str]:
    """Nodes that must stay fp32 (`contract.runs_in_fp16`): everything outside the generator, and the Fourier
    units unless the policy is `fourier-scaled`."""
    return [node.name for node in model.graph.node if not runs_in_fp16(node.name, fp16_policy)]


def convert_to_mixed_fp16(model: onnx.ModelProto, fp16_policy: str = DEFAULT_FP16_POLICY) -> onnx.ModelProto:
    """fp16 graph with fp32 islands (Fourier units under `fourier-fp32`, pre/post-processing, size arithmetic)
    and float32 I/O. Under `fourier-scaled` the Fourier units run in fp16 (after `fold_fourier_scale`)."""
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
            model, keep_io_types=True, disable_shape_infer=False,
            node_block_list=set(fp32_node_names(model, fp16_policy)) | set(size_arithmetic_nodes(model)),
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


# --- size arithmetic stays fp32 ------------------------------------------------------------------------------

def size_arithmetic_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes computing from runtime sizes only (the DFT bases: Range, Mod, Cos, Sin...), and their constants.

    They run once per inference on small tensors, and fp16 would round the angles (2*pi*k/N to ~1e-3 rad),
    so they stay fp32 under every policy; the converter casts the finished bases where fp16 products read them.
    """
    constants = {i.name for i in model.graph.initializer}
    derived: set[str] = set()
    names: list[str] = []
    for node in model.graph.node:  # topological order
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant":
            constants.update(node.output)
        elif inputs and all(i in constants for i in inputs):  # folds to a constant (e.g. Mod of two Constants)
            constants.update(node.output)
            names.append(node.name)
        elif node.op_type == "Shape" or (inputs and any(i in derived for i in inputs)
                                         and all(i in derived or i in constants for i in inputs)):
            derived.update(node.output)
            names.append(node.name)
    feeding = {i for n in model.graph.node if n.name in set(names) for i in n.input}
    users: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.name)
    only_size = set(names)
    extra = [n.name for n in model.graph.node if n.op_type == "Constant" and n.output[0] in feeding
             and users.get(n.output[0], set()) <= only_size]
    return names + extra
