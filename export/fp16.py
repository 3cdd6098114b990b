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
"""

from __future__ import annotations

import onnx
import torch
from torch import nn

from lama_deploy.errors import missing_dependency

#: Node-name fragments (TorchScript exporter scopes) that stay fp32.
FP32_SCOPES = ("/fu/",)
GENERATOR_SCOPE = "/generator/"


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
    """Nodes that must stay fp32: Fourier units, and everything outside the generator."""
    keep = []
    for node in model.graph.node:
        name = node.name
        if any(scope in name for scope in FP32_SCOPES) or GENERATOR_SCOPE not in name:
            keep.append(name)
    return keep


def convert_to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 graph with fp32 islands and float32 I/O."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise missing_dependency("onnxconverter-common", "pip install onnxconverter-common") from None
    import warnings

    with warnings.catch_warnings():
        # The converter warns for every fp32 constant it clips to fp16's range (folded BN shifts are
        # far inside it); the numbers are checked against fp32 after export instead.
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=set(fp32_node_names(model)), disable_shape_infer=False,
        )
