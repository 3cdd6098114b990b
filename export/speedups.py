"""Numerically equivalent rewrites of an InpaintingModel that make the exported graph faster.

Applied by `export_inpainting_onnx` by default (`--no-speedups` turns them off; the ONNX metadata key
`lama.speedups` lists what ran). The PyTorch model users run is never changed: `apply_speedups(model)`
returns a rewritten deep copy. Every rewrite is exact up to float rounding
(tests: <= 1e-5 on the tiny model) and uses only ops TensorRT 8.5 parses (`lama_deploy.export.onnx_rules`).

What each rewrite buys, from the ONNX Runtime CPU profiler (per-node minima, big-lama at 512x512; the
numbers are in docs/benchmarks.md):

- `head`: the last layer is a 7x7 convolution with 3 output channels on the full-resolution image.
  ONNX Runtime's blocked (NCHWc) convolutions compute output channels in blocks of 8/16, so a 3-channel
  convolution runs at a fraction of the speed of every other layer (about 5% of the model's time for
  1% of its FLOPs). Rewritten as SpaceToDepth(2) -> 4x4 convolution with 12 output channels -> sigmoid
  -> DepthToSpace(2): the same sums, regrouped so that each output pixel block is computed at once.
- `share_bases`: every Fourier unit builds its DFT bases from the runtime size (Range, Mod, Cos, Sin, ...:
  some 60 small nodes each); the generator's forward now builds them once for all 36 units
  (`lama_model.fourier.begin_shared_bases`), which is exact because all units run at the bottleneck
  size. About 1% of the model's time at 512x512 on ONNX Runtime, where it is spent in node overhead.
- `fold_batchnorm`: every eval-mode BatchNorm that follows convolutions is folded into their weights
  and a bias. In an FFC the BatchNorm follows the *sum* of two convolutions (local->local plus
  global->local), which no runtime folds by itself; folded, ONNX Runtime fuses conv + add + ReLU.

- `subpixel_upsample`: the *last* stride-2 ConvTranspose (128 -> 64 channels, up to full resolution)
  becomes one 2x2 convolution with 4x the outputs + DepthToSpace (`SubPixelUpsample`). Not for speed
  (it has zero taps: 16 instead of 9 multiply-adds per input pixel, about 2% of big-lama's work) but
  for memory: ONNX Runtime CPU runs a ConvTranspose through one column buffer of C_out * 9 * H_in * W_in
  floats (2.4 GB for a 2048x2048 image) while its convolutions work in bounded tiles. Measured at
  2048x2048 (big-lama, random weights, ORT 1.32 CPU, the runtime's session options, one process each):
  peak RSS 5.82 -> 5.01 GB, CPU time 178 -> 169 s. Rewriting all three upsampling layers gave no more
  (5.07 GB): the earlier two run while nothing of full resolution is alive.

Not applied, measured (ONNX Runtime 1.32 CPU, 2 threads, one layer each of big-lama's upsampling at
512x512): for speed, the upsampling ConvTransposes as four exact phase convolutions (1x1, 1x2, 2x1, 2x2)
+ DepthToSpace are no faster (58 vs 58 ms at 64x64 in, 78 vs 65 ms at 128x128, 113 vs 80 ms at
256x256). The first two keep the ConvTranspose, which TensorRT handles natively.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lama_deploy import contract as C
from lama_model import InpaintingModel
from lama_model.ffc import FFC, FFC_BN_ACT, FourierUnit, SpectralTransform
from lama_model.fourier import begin_shared_bases, end_shared_bases

#: Block size of the head rewrite: H + 6 (reflect padding 3) is even for every valid H (multiple of 8).
HEAD_BLOCK = 2


class _SpaceToDepth(torch.autograd.Function):
    """ONNX SpaceToDepth: out[n, (a*b + c_b)*C + c, i, j] = x[n, c, b*i + a, b*j + c_b] (block offsets major).

    torch's `pixel_unshuffle` exports as a 6-D Transpose (slow in ONNX Runtime) and orders channels the
    other way; this writes the single ONNX op and computes the same layout in PyTorch.
    """

    @staticmethod
    def forward(ctx, x: Tensor, block: int) -> Tensor:  # noqa: D401 - autograd signature
        n, c, h, w = x.shape
        tiles = x.reshape(n, c, h // block, block, w // block, block)
        return tiles.permute(0, 3, 5, 1, 2, 4).reshape(n, block * block * c, h // block, w // block)

    @staticmethod
    def symbolic(g, x, block: int):
        return g.op("SpaceToDepth", x, blocksize_i=block)


def space_to_depth(x: Tensor, block: int) -> Tensor:
    return _SpaceToDepth.apply(x, block)


class SpaceToDepthHead(nn.Module):
    """ReflectionPad2d(3) + Conv2d(C, O, 7) + Sigmoid, computed on 2x2 pixel blocks.

    The 7x7 kernel over the padded input becomes a 4x4 kernel over its SpaceToDepth(2) form with
    O*4 outputs, one per (channel, row phase, column phase); DepthToSpace (torch's pixel_shuffle)
    puts the phases back in place. Output for output pixel (2U + r, 2V + s), input tap (p, q):
    padded pixel (2U + r + p, 2V + s + q) lies in block (U + (r+p)//2, V + (s+q)//2) at offset
    ((r+p) % 2, (s+q) % 2).
    """

    def __init__(self, conv: nn.Conv2d, pad: int = 3, block: int = HEAD_BLOCK) -> None:
        super().__init__()
        out_ch, in_ch, k, _ = conv.weight.shape
        taps = (block - 1 + k - 1) // block + 1
        self.pad, self.block = pad, block
        self.conv = nn.Conv2d(in_ch * block * block, out_ch * block * block, taps, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(_blocked_kernel(conv.weight, block, taps))
            bias = conv.bias if conv.bias is not None else torch.zeros(out_ch)
            self.conv.bias.copy_(bias.repeat_interleave(block * block))

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (self.pad,) * 4, mode="reflect")
        blocks = space_to_depth(padded, self.block)
        # Sigmoid before DepthToSpace (they commute) so the runtime fuses it into the convolution.
        return F.pixel_shuffle(torch.sigmoid(self.conv(blocks)), self.block)


def _blocked_kernel(weight: Tensor, block: int, taps: int) -> Tensor:
    """(O*b*b, C*b*b, taps, taps) kernel of `SpaceToDepthHead` from a (O, C, k, k) kernel."""
    out_ch, in_ch, k, _ = weight.shape
    blocked = weight.new_zeros(out_ch, block, block, block, block, in_ch, taps, taps)  # o, r, s, a, c_b, c, t, u
    for r in range(block):
        for s in range(block):
            for p in range(k):
                for q in range(k):
                    a, t = (r + p) % block, (r + p) // block
                    c_b, u = (s + q) % block, (s + q) // block
                    blocked[:, r, s, a, c_b, :, t, u] = weight[:, :, p, q]
    return blocked.reshape(out_ch * block * block, block * block * in_ch, taps, taps)


# --- BatchNorm folding -----------------------------------------------------------------------------------

def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm, computed in float64."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


def _scale_output_channels(module: nn.Module, scale: Tensor) -> None:
    """Multiply a conv's (or transposed conv's) output channels by `scale`, bias included."""
    dim = 1 if isinstance(module, nn.ConvTranspose2d) else 0
    shape = [1] * module.weight.dim()
    shape[dim] = -1
    module.weight.copy_((module.weight.double() * scale.view(shape)).float())
    if module.bias is not None:
        module.bias.copy_((module.bias.double() * scale).float())


def _add_bias(conv: nn.Module, shift: Tensor) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.float().clone())
    else:
        conv.bias.copy_((conv.bias.double() + shift).float())


@torch.no_grad()
def _fold_into(convs: list[nn.Module], bn: nn.BatchNorm2d) -> None:
    """BN(sum of convs) == sum of scaled convs + shift, the shift carried by the first conv's bias."""
    scale, shift = _bn_scale_shift(bn)
    for conv in convs:
        _scale_output_channels(conv, scale)
    _add_bias(convs[0], shift)


def _branch_convs(ffc: FFC, local: bool) -> list[nn.Module]:
    """The modules whose sum is an FFC output branch, with the linear last step of a spectral path."""
    parts = [ffc.convl2l, ffc.convg2l] if local else [ffc.convl2g, ffc.convg2g]
    convs = []
    for part in parts:
        if isinstance(part, nn.Conv2d):
            convs.append(part)
        elif isinstance(part, SpectralTransform):
            convs.append(part.conv2)  # conv2(x + fu(x)) is linear in conv2's weights
    return convs


def fold_ffc_batchnorm(block: FFC_BN_ACT) -> None:
    """Fold bn_l / bn_g of an FFC_BN_ACT into the convolutions that feed them, in place."""
    for local in (True, False):
        bn_name = "bn_l" if local else "bn_g"
        bn = getattr(block, bn_name)
        convs = _branch_convs(block.ffc, local)
        if isinstance(bn, nn.BatchNorm2d) and convs:
            _fold_into(convs, bn)
            setattr(block, bn_name, nn.Identity())


def _fold_sequence(seq: nn.Sequential) -> None:
    """Conv/ConvTranspose directly followed by BatchNorm inside a Sequential: fold and drop the BN."""
    children = list(seq.named_children())
    for (_, first), (name, second) in zip(children, children[1:]):
        if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(second, nn.BatchNorm2d):
            _fold_into([first], second)
            setattr(seq, name, nn.Identity())


def fold_batchnorm_everywhere(model: nn.Module) -> None:
    """Every BatchNorm of the generator that follows convolutions, folded in place."""
    for module in model.modules():
        if isinstance(module, FFC_BN_ACT):
            fold_ffc_batchnorm(module)
        elif isinstance(module, nn.Sequential):
            _fold_sequence(module)
        elif isinstance(module, FourierUnit) and isinstance(module.bn, nn.BatchNorm2d):
            _fold_into([module.conv_layer], module.bn)
            module.bn = nn.Identity()


def rewrite_head(model: InpaintingModel) -> bool:
    """Swap the generator's last [ReflectionPad2d(3), Conv2d(k=7), Sigmoid] for a SpaceToDepthHead."""
    layers = model.generator.model
    children = list(layers.children())
    if len(children) < 3:
        return False
    pad, conv, act = children[-3:]
    if not (isinstance(pad, nn.ReflectionPad2d) and isinstance(conv, nn.Conv2d) and isinstance(act, nn.Sigmoid)):
        return False
    if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride != (1, 1) or tuple(pad.padding) != (3, 3, 3, 3):
        return False
    start = len(children) - 3
    setattr(layers, str(start), SpaceToDepthHead(conv, pad=3))
    setattr(layers, str(start + 1), nn.Identity())
    setattr(layers, str(start + 2), nn.Identity())
    return True


class SubPixelUpsample(nn.Module):
    """A ConvTranspose2d with stride s whose output is exactly s times its input (k + output_padding - 2p
    == s), computed as zero padding -> one ordinary convolution with s*s*C_out outputs -> DepthToSpace(s).

    Output pixel s*i + a (phase a) sums input pixels i - d over the kernel taps ky = s*d + a + p that
    exist; every phase reads offsets d in [d_min, d_max], so one (d_max - d_min + 1)-wide kernel over the
    input padded by d_max before and -d_min after computes all phases, missing taps left zero. Output
    channel o*s*s + a*s + b holds phase (a, b) of channel o: torch's pixel_shuffle (ONNX DepthToSpace CRD).
    """

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        if not can_subpixel(deconv):
            raise ValueError(f"not a sub-pixel upsampling: {deconv}")
        stride, kernel, pad = deconv.stride[0], deconv.kernel_size[0], deconv.padding[0]
        offsets = _phase_offsets(stride, kernel, pad)
        low, high = min(offsets), max(offsets)
        taps = high - low + 1
        in_ch, out_ch = deconv.in_channels, deconv.out_channels
        self.stride, self.padding = stride, (high, -low, high, -low)  # F.pad order: left, right, top, bottom
        self.conv = nn.Conv2d(in_ch, out_ch * stride * stride, taps, bias=True)
        weight = deconv.weight.new_zeros(out_ch, stride, stride, in_ch, taps, taps)   # o, a, b, c, jy, jx
        for a in range(stride):
            for b in range(stride):
                for jy in range(taps):
                    for jx in range(taps):
                        ky, kx = stride * (high - jy) + a + pad, stride * (high - jx) + b + pad
                        if 0 <= ky < kernel and 0 <= kx < kernel:
                            weight[:, a, b, :, jy, jx] = deconv.weight[:, :, ky, kx].T
        bias = deconv.bias if deconv.bias is not None else deconv.weight.new_zeros(out_ch)
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(out_ch * stride * stride, in_ch, taps, taps))
            self.conv.bias.copy_(bias.repeat_interleave(stride * stride))

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x, self.padding) if any(self.padding) else x  # constant zeros: runtimes fold it into the Conv
        return F.pixel_shuffle(self.conv(padded), self.stride)


def _phase_offsets(stride: int, kernel: int, pad: int) -> list[int]:
    """Input offsets d that the output phases of a stride-`stride` ConvTranspose read (tap ky = s*d + a + p)."""
    return [(ky - a - pad) // stride for a in range(stride) for ky in range(kernel) if (ky - a - pad) % stride == 0]


def can_subpixel(module: nn.Module) -> bool:
    """A square, ungrouped, undilated ConvTranspose2d whose output is exactly `stride` times its input,
    with every phase's offsets reachable by zero padding (no cropping)."""
    if not isinstance(module, nn.ConvTranspose2d):
        return False
    stride, kernel, pad, extra = module.stride[0], module.kernel_size[0], module.padding[0], module.output_padding[0]
    square = all(len(set(v)) == 1 for v in (module.stride, module.kernel_size, module.padding, module.output_padding))
    if not square or module.groups != 1 or module.dilation != (1, 1) or stride < 2 or kernel + extra - 2 * pad != stride:
        return False
    offsets = _phase_offsets(stride, kernel, pad)
    return len(offsets) > 0 and min(offsets) <= 0 <= max(offsets)


def rewrite_last_upsampling(model: InpaintingModel) -> bool:
    """Swap the generator's last ConvTranspose2d (the one that reaches full resolution) for SubPixelUpsample."""
    layers = model.generator.model
    named = [(name, child) for name, child in layers.named_children() if isinstance(child, nn.ConvTranspose2d)]
    if not named or not can_subpixel(named[-1][1]):
        return False
    name, deconv = named[-1]
    setattr(layers, name, SubPixelUpsample(deconv))
    return True


def _enter_shared_bases(module: nn.Module, _inputs) -> None:
    module.__dict__.setdefault("_lama_bases_tokens", []).append(begin_shared_bases())


def _leave_shared_bases(module: nn.Module, _inputs, _output) -> None:
    tokens = module.__dict__.get("_lama_bases_tokens")
    if tokens:  # last in, first out: a context var resets only in that order
        end_shared_bases(tokens.pop())


def share_dft_bases(model: InpaintingModel) -> None:
    """During each generator forward, Fourier units of one size share their DFT bases (hooks, in place).

    Idempotent: an already rewritten model (say, `apply_speedups` output passed to the exporter, which
    applies them again) keeps its one pair of hooks; two pairs would leave a shared scope open after the
    forward, and later forwards in the process would share bases they should not.
    """
    generator = model.generator
    if getattr(generator, "_lama_shares_bases", False):
        return
    generator.register_forward_pre_hook(_enter_shared_bases)
    generator.register_forward_hook(_leave_shared_bases, always_call=True)  # also when the forward raises
    generator._lama_shares_bases = True


SPEEDUPS = ("head", "fold_batchnorm", "share_bases", C.SPEEDUP_SUBPIXEL)


def apply_speedups(model: InpaintingModel, head: bool = True, fold_batchnorm: bool = True,
                   share_bases: bool = True, subpixel_upsample: bool = True) -> InpaintingModel:
    """A rewritten deep copy of `model` (eval mode) for export; the argument is left untouched.

    Outputs match the original within float rounding; Fourier units and their mode are kept as they are
    (the exporter switches them to DFT-as-matmul itself).
    """
    rewritten = copy.deepcopy(model).eval()
    if fold_batchnorm:
        fold_batchnorm_everywhere(rewritten)
    if head:
        rewrite_head(rewritten)
    if subpixel_upsample:  # after BatchNorm folding, which may have scaled the ConvTranspose it reads
        rewrite_last_upsampling(rewritten)
    if share_bases:
        share_dft_bases(rewritten)
    return rewritten
