"""The three interchangeable 2-D real Fourier transforms of the FFC Fourier unit.

`TorchFFT` is the reference: `torch.fft.rfftn` / `irfftn` with `norm="ortho"`, as in the official code.

`MatmulDFT` (factorised) and `DenseMatmulDFT` compute the same numbers with matrix products only, so that
the exported ONNX graph holds no `DFT` op (TensorRT before 11.2 cannot parse one). Their bases are built from
the tensor's *runtime*
shape with tensor ops (Range, Mul, Mod, Cos, Sin), never from Python ints, so the exported graph stays
dynamic in H and W. Angles are reduced exactly in integers, `(k * n) mod N`, before the float
multiply, which keeps them accurate for any N; the ortho scale `1/sqrt(N)` is folded into each basis so
spectrum magnitudes stay within `sqrt(HW) * max|x|` (fp16 headroom). For sides with a power-of-two
factor the complex pass along H is factorised Cooley-Tukey style (`factorized_complex_dft`); the
choice of factors is integer arithmetic on the runtime size, so one graph still serves every H.

All return / take the spectrum as real tensors with real and imaginary parts stacked the way the
official Fourier unit stacks them: `(B, C, 2, H, Wf)` (dim 2 = real, imaginary). Wf is W//2+1, or, with
`align` (DFT-as-matmul forms, `set_spectrum_align`), that width rounded up to a multiple of `ALIGN` with
columns that are exactly zero (`spectrum_width`): fp16 tensor cores take their aligned path only for products
whose leading dimensions are multiples of 8 (Wf = 33 at 512x512 is not). The Fourier unit's 1x1 convolution
sees the zero columns (and writes its bias there), the inverse basis has zero rows there, so the output is
the same. Off by default: where the products do not run on tensor cores (fp32, ONNX Runtime CPU) the padding
is only more work (10-17% of a unit's ONNX Runtime CPU time at 64x64, 6-10% at 128x128, docs/benchmarks.md).
"""

from __future__ import annotations

import contextvars
import math
import threading
from collections import OrderedDict
from typing import Callable, Union

import torch
from torch import Tensor, nn

#: Where bases are built: the input's device (None: the default device, for direct calls).
Device = Union[torch.device, str, None]


# --- optional cache of the bases ----------------------------------------------------------------------------
#: Active while a model opts in (see `begin_shared_bases`): bases built once per size and reused.
_SHARED_BASES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("lama_dft_bases", default=None)


def begin_shared_bases() -> contextvars.Token:
    """Reuse every basis of a given size until `end_shared_bases` (one model forward, say).

    The bases depend on the sizes only, so in eager mode this only saves work. Under ONNX tracing all
    Fourier units then read one basis subgraph instead of building their own (36 copies in big-lama),
    which is right when every unit sees the same H and W at run time, as in LaMa, whose Fourier units
    all sit at the bottleneck resolution; cache keys are the sizes seen while tracing.
    """
    return _SHARED_BASES.set({})


def end_shared_bases(token: contextvars.Token) -> None:
    _SHARED_BASES.reset(token)


#: Bases built in eager mode outside a shared scope, kept across forwards: they depend on the sizes, device
#: and dtype only, and rebuilding them per unit per call was most of the DFT-as-matmul forms' GPU time in
#: PyTorch (an H200 profile at 512x512: some 1,500 small Cos/Sin/Mod/copy kernels per forward, against
#: about 1 ms of products; docs/benchmarks.md). Least recently used entries go first.
_EAGER_BASES: OrderedDict = OrderedDict()
_EAGER_LOCK = threading.Lock()
EAGER_CACHE_ENTRIES = 64
#: False: every eager forward rebuilds its bases, as before the cache (the benchmark's `no basis cache` rows).
EAGER_CACHE = True


def _tracing() -> bool:
    """Recording a graph (ONNX export, TorchScript, torch.compile / torch.export), where a basis must stay
    a computation on the runtime size rather than a constant from an earlier call."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
            or bool(getattr(torch.compiler, "is_exporting", lambda: False)()))


#: Bases read while a CUDA graph was being captured: the graph keeps their device addresses, so they are
#: never evicted (a freed basis would be reused memory under a replayed graph). Small: a few per shape.
_CAPTURED_BASES: dict = {}


def _capturing(like: Tensor) -> bool:
    return like.is_cuda and torch.cuda.is_current_stream_capturing()


def _cached(name: str, sizes: tuple, build: Callable[[], object], like: Tensor | None = None):
    """`build()`, or its cached value for these sizes (and `like`'s device and dtype).

    Inside a `begin_shared_bases` scope the cache lives for that scope (under ONNX tracing too: one basis
    subgraph for all units). Otherwise, in eager mode, bases are kept across calls (`_EAGER_BASES`); while
    a graph is being traced they are built inline, so the graph stays dynamic in H and W.
    """
    # torch.compile cannot trace a ContextVar read (a graph break); compiled graphs build the bases inline.
    if torch.compiler.is_compiling():
        return build()
    cache = _SHARED_BASES.get()
    if cache is None and (like is None or _tracing() or not EAGER_CACHE):
        return build()
    key = (name,) + tuple(int(size) for size in sizes)
    if like is not None:
        key += (str(like.device), like.dtype)
    if cache is not None:
        if key not in cache:
            cache[key] = build()
        return cache[key]
    with _EAGER_LOCK:  # server threads share the cache
        value = _CAPTURED_BASES.get(key)
        if value is None:
            value = _EAGER_BASES.get(key)
            if value is not None:
                _EAGER_BASES.move_to_end(key)
    if value is None:
        # Plain tensors without autograd history, usable inside and outside inference mode.
        with torch.inference_mode(False), torch.no_grad():
            value = build()
    with _EAGER_LOCK:
        if _capturing(like):
            _CAPTURED_BASES[key] = value
        _EAGER_BASES[key] = value
        while len(_EAGER_BASES) > EAGER_CACHE_ENTRIES:
            _EAGER_BASES.popitem(last=False)
    return value


def _length_tensor(n: int | Tensor, device: Device = None) -> Tensor:
    # Under ONNX tracing `n` is a traced size; scalar_tensor keeps it symbolic instead of a constant.
    # On the computation's device: a CPU scalar next to a CUDA tensor breaks torch.compile and graph capture.
    if isinstance(n, Tensor):
        return n.to(torch.float32) if device is None or n.device == torch.device(device) \
            else n.to(device=device, dtype=torch.float32)
    return torch.scalar_tensor(n, dtype=torch.float32, device=device)


def _as_dtype(basis: Tensor, dtype: torch.dtype) -> Tensor:
    """Bases are built in float32 (exact angles); the products run in the input's dtype."""
    return basis if basis.dtype == dtype else basis.to(dtype)


def dft_angles(rows: Tensor, cols: Tensor, length: Tensor) -> Tensor:
    """2*pi * ((rows[:, None] * cols[None, :]) mod length) / length, reduced exactly in int32.

    `rows` and `cols` are float index vectors (exact integers); broadcasting rather than `torch.outer`
    keeps the ONNX graph free of `Einsum` (TensorRT 8.x restrictions).
    """
    length_i = length.to(torch.int32)
    product = (rows[:, None] * cols[None, :]).to(torch.int32)
    reduced = torch.remainder(product, length_i).to(torch.float32)
    return reduced * (2.0 * math.pi) / length


def _index(n: int | Tensor, device: Device = None) -> Tensor:
    return torch.arange(n, dtype=torch.float32, device=device)


#: The DFT-as-matmul forms' default padding of the spectrum width: fp16 GEMMs on tensor cores need leading
#: dimensions that are multiples of 8 elements (16 bytes) for their aligned kernels.
ALIGN = 8


def spectrum_width(width: int | Tensor, align: int = 1) -> int | Tensor:
    """Columns of the one-sided spectrum: W//2+1 rounded up to a multiple of `align` (integer ops only, so a
    traced W keeps the padding a computation on the runtime size)."""
    if align == 1:  # no rounding ops in the graph
        return width // 2 + 1
    return (width // 2 + align) // align * align


def _real_bins(width: int | Tensor, align: int, device: Device) -> tuple[Tensor, Tensor | None]:
    """Bin indices 0..Wp-1 and, when padded, 1.0 for the W//2+1 real bins and 0.0 for the padding.

    The mask is `clamp(Wf - k, 0, 1)` on exact integers in float: no comparison op on a shape value.
    """
    bins = _index(spectrum_width(width, align), device)
    if align == 1:
        return bins, None
    return bins, torch.clamp(_length_tensor(width // 2 + 1, device) - bins, 0.0, 1.0)


def rfft_basis(width: int | Tensor, device: Device = None, align: int = 1) -> tuple[Tensor, Tensor]:
    """(cos, sin) of shape (W, Wp), scaled by 1/sqrt(W); Wp = `spectrum_width(W, align)`, padding columns 0."""
    length = _length_tensor(width, device)
    bins, real = _real_bins(width, align, device)
    angles = dft_angles(_index(width, device), bins, length)
    scale = torch.rsqrt(length)
    if real is not None:
        scale = scale * real
    return torch.cos(angles) * scale, torch.sin(angles) * scale


def irfft_basis(width: int | Tensor, device: Device = None, align: int = 1) -> tuple[Tensor, Tensor]:
    """(cos, sin) of shape (Wp, W) for the one-sided inverse, scaled by 1/sqrt(W); padding rows 0.

    Bins strictly between DC and Nyquist stand for themselves and their conjugate mirror, so they count
    twice; DC and (for even W) Nyquist count once, and their imaginary parts are ignored exactly, as
    `irfftn` ignores them.
    """
    length = _length_tensor(width, device)
    bins, real = _real_bins(width, align, device)
    angles = dft_angles(bins, _index(width, device), length)
    twice = bins * 2.0
    weight = 2.0 - (bins == 0).to(torch.float32) - (twice == length).to(torch.float32)
    if real is not None:
        weight = weight * real
    scale = torch.rsqrt(length)
    cos = torch.cos(angles) * (weight * scale)[:, None]
    sin = torch.sin(angles) * (weight * scale)[:, None]
    # Imaginary parts of DC and Nyquist carry no information for a real signal: drop them exactly.
    keep_imag = 1.0 - (bins == 0).to(torch.float32) - (twice == length).to(torch.float32)
    return cos, sin * keep_imag[:, None]


def _rfft_pair(width: int | Tensor, device: Device = None, align: int = 1) -> tuple[Tensor, Tensor]:
    cos, sin = rfft_basis(width, device, align)
    return cos, -sin


def irfft_matrix(width: int | Tensor, device: Device = None, align: int = 1) -> Tensor:
    """(2*Wp, W) one-sided inverse `[cos; -sin]`, for rows laid out [re | im]."""
    cos, sin = irfft_basis(width, device, align)
    return torch.cat([cos, -sin], dim=0)


def complex_dft_block(height: int | Tensor, inverse: bool, device: Device = None) -> Tensor:
    """(2H, 2H) real block matrix of the complex DFT along H, scaled by 1/sqrt(H).

    Acting on real and imaginary parts stacked along H, `[re; im]`, it returns `[re'; im']`:
    forward `[[C, S], [-S, C]]` (e^{-i theta}), inverse `[[C, -S], [S, C]]` (e^{+i theta}).
    """
    length = _length_tensor(height, device)
    index = _index(height, device)
    angles = dft_angles(index, index, length)
    scale = torch.rsqrt(length)
    cos, sin = torch.cos(angles) * scale, torch.sin(angles) * scale
    if inverse:
        sin = -sin
    top = torch.cat([cos, sin], dim=1)
    bottom = torch.cat([-sin, cos], dim=1)
    return torch.cat([top, bottom], dim=0)


# --- factorised complex DFT along H (Cooley-Tukey, decimation in time) ---------------------------------
#: Largest first-stage radix.
MAX_RADIX = 16
#: Shorter sides stay dense (N1 = 1): measured faster below this on ONNX Runtime CPU.
FACTORIZE_FROM = 64
#: Larger than any side, for the branch-free comparison in `_at_least`.
_LARGE = 1 << 24


def _divides(m: int, n: int | Tensor) -> int | Tensor:
    """1 if m divides n else 0, from Mod/Sub/Div only (no comparison ops on shape values)."""
    return (m - n % m) // m


def _at_least(n: int | Tensor, threshold: int) -> int | Tensor:
    """1 if n >= threshold else 0, for 0 < n < 2**24, from Add/Div only."""
    return (n + _LARGE - threshold) // _LARGE


def split_length(n: int | Tensor) -> tuple[int | Tensor, int | Tensor]:
    """(N1, N2) with N1 * N2 = N: N1 the largest power of two <= MAX_RADIX that divides N with N1^2 <= N.

    N1 near sqrt(N) balances the two stages (cost N * (N1 + N2)): 64 = 8 x 8, 128 = 8 x 16, 256 = 16 x 16,
    100 = 4 x 25; odd sides and N < FACTORIZE_FROM get N1 = 1, the dense transform. Integer arithmetic on
    the size, so under ONNX tracing it becomes a few ops on the runtime shape: one graph for every H.
    """
    n1 = 1
    radix = 2
    while radix <= MAX_RADIX:
        n1 = n1 * (1 + _divides(radix, n) * _at_least(n, radix * radix))
        radix *= 2
    n1 = 1 + _at_least(n, FACTORIZE_FROM) * (n1 - 1)
    return n1, n // n1


def _left_block(cos: Tensor, sin: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    """The rows giving re' and im' of the real 2x2 block of e^{-+i theta}, over columns (re..., im...)."""
    sin = sin if inverse else -sin
    return torch.cat([cos, -sin], dim=-1), torch.cat([sin, cos], dim=-1)


def stage1_matrix(n1: int | Tensor, inverse: bool, device: Device = None) -> Tensor:
    """(2*N1, 2*N1) unscaled length-N1 DFT: rows (k1, part), columns (part, n1)."""
    index = _index(n1, device)
    angles = dft_angles(index, index, _length_tensor(n1, device))
    to_re, to_im = _left_block(torch.cos(angles), torch.sin(angles), inverse)
    return torch.stack([to_re, to_im], dim=1).reshape(2 * n1, 2 * n1)    # (K1, 2, 2*N1) flattened


def twiddled_stage2(n1: int | Tensor, n2: int | Tensor, inverse: bool, device: Device = None) -> Tensor:
    """(N1, 2*N2, 2*N2): for each k1 the length-N2 DFT times the twiddle, scaled by 1/sqrt(N).

    Rows (part, k2), columns (part, n2); the angle of entry (k1; k2, n2) is 2 pi n2 k / N with
    k = k1 + N1 k2, reduced exactly mod N in int32.
    """
    length = _length_tensor(n1 * n2, device)
    first, second = _index(n1, device), _index(n2, device)
    bins = first[:, None] + second[None, :] * _length_tensor(n1, device)                # k: (K1, K2)
    product = (bins[:, :, None] * second[None, None, :]).to(torch.int32)        # n2 * k: (K1, K2, N2)
    angles = torch.remainder(product, length.to(torch.int32)).to(torch.float32) * (2.0 * math.pi) / length
    scale = torch.rsqrt(length)
    to_re, to_im = _left_block(torch.cos(angles) * scale, torch.sin(angles) * scale, inverse)
    return torch.cat([to_re, to_im], dim=1)


def factorized_complex_dft(stacked: Tensor, length: int | Tensor, cols: int | Tensor, inverse: bool,
                           parts_inner: bool = False) -> Tensor:
    """Ortho complex DFT along H of `stacked` (R, 2H, M), rows (part, h) -> (R, 2H, M), rows (part, k).

    With `parts_inner` the result is (R, H, 2*M) instead, each row k holding [re | im]: the layout one
    product with the stacked one-sided inverse basis along W reads.

    Cooley-Tukey with N = N1 * N2 (`split_length`), n = N2 n1 + n2, k = k1 + N1 k2: stage 1 is one
    length-N1 DFT applied to every (n2, m) column, stage 2 a length-N2 DFT per k1 with the twiddle
    folded into its matrix; a block transpose restores the natural order of k. Cost per column
    O(N (N1 + N2)) instead of O(N^2). `length` and `cols` are passed in, not read from `stacked`: the
    exporter would fold sizes of intermediate tensors into constants.
    """
    n1, n2 = _cached("split", (length,), lambda: split_length(length))
    device, dtype = stacked.device, stacked.dtype
    first = _cached(f"stage1-{inverse}", (length,), lambda: _as_dtype(stage1_matrix(n1, inverse, device), dtype), stacked)
    second = _cached(f"stage2-{inverse}", (length,),
                     lambda: _as_dtype(twiddled_stage2(n1, n2, inverse, device), dtype), stacked)
    z = torch.matmul(first, stacked.reshape(-1, 2 * n1, n2 * cols))            # rows (k1, part)
    z = torch.matmul(second, z.reshape(-1, n1, 2 * n2, cols))                  # (R, K1, [part, k2], M)
    if parts_inner:
        # (R, K1, 2, K2, M) -> (R, K2, K1, 2, M): one axis moves, whole M-rows at a time.
        return z.reshape(-1, n1, 2, n2, cols).permute(0, 3, 1, 2, 4).reshape(-1, length, 2 * cols)
    return z.transpose(1, 2).reshape(-1, 2 * length, cols)


def real_dft_along_w(x: Tensor, align: int = 1) -> Tensor:
    """Ortho real DFT of (B, C, H, W) along W as (B, C, 2, H, Wp): real and imaginary parts, one product.

    x (B, C, 1, H, W) times the stacked bases (2, W, Wp) broadcasts into both halves at once: one MatMul
    in the graph instead of two and a Concat.
    """
    width = x.shape[-1]
    basis = _cached("rfft-stacked", (width, align),
                    lambda: _as_dtype(torch.stack(_rfft_pair(width, x.device, align)), x.dtype), x)
    return torch.matmul(x.unsqueeze(2), basis)


class TorchFFT(nn.Module):
    """Reference transform: torch.fft with norm='ortho' (spectrum width W//2+1, never padded)."""

    align = 1

    def forward(self, x: Tensor) -> Tensor:
        spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        return torch.stack((spectrum.real, spectrum.imag), dim=2)

    def inverse(self, spectrum: Tensor, height: int, width: int) -> Tensor:
        # Keep the official behaviour: torch.complex needs contiguous real/imag halves.
        complex_spectrum = torch.complex(spectrum[:, :, 0].contiguous(), spectrum[:, :, 1].contiguous())
        return torch.fft.irfftn(complex_spectrum, s=(height, width), dim=(-2, -1), norm="ortho")


class MatmulDFT(nn.Module):
    """DFT-as-matmul: the same transform as TorchFFT, from MatMul/Mul/Add/Cos/Sin/Mod only.

    The complex pass along H is factorised (`factorized_complex_dft`) when H has a power-of-two factor
    and H >= FACTORIZE_FROM, which cuts its cost per column from O(H^2) to O(H (H1 + H2)); other sides
    run the dense transform through the same graph. Inside a `begin_shared_bases` scope the bases are
    built once per size.

    Args:
        align: the spectrum's width is padded with zero columns to a multiple of this (`spectrum_width`).
    """

    def __init__(self, align: int = 1) -> None:
        super().__init__()
        self.align = int(align)

    def forward(self, x: Tensor) -> Tensor:
        _, channels, height, width = x.shape
        freqs = spectrum_width(width, self.align)
        stacked = real_dft_along_w(x, self.align).reshape(-1, 2 * height, freqs)     # (B*C, 2H, Wp)
        spectrum = factorized_complex_dft(stacked, height, freqs, inverse=False)
        # Channels are static, so -1 is the batch (the exporter would pin a batch size read here).
        return spectrum.reshape(-1, channels, 2, height, freqs)   # (B, C, 2, H, Wp)

    def inverse(self, spectrum: Tensor, height: int, width: int) -> Tensor:
        freqs = spectrum_width(width, self.align)
        stacked = spectrum.reshape(-1, 2 * height, freqs)     # (B*C, 2H, Wp)
        rows = factorized_complex_dft(stacked, height, freqs, inverse=True, parts_inner=True)   # (B*C, H, 2*Wp)
        align = self.align
        basis = _cached("irfft", (width, align), lambda: _as_dtype(irfft_matrix(width, rows.device, align), rows.dtype),
                        rows)
        image = torch.matmul(rows, basis)                                                     # (B*C, H, W)
        return image.unflatten(0, (-1, spectrum.shape[1]))


def rfft_row_matrix(width: int | Tensor, device: Device = None, align: int = 1) -> Tensor:
    """(W, 2*Wp) `[cos | -sin]`, scaled: one product gives each row's one-sided spectrum as [re | im]."""
    cos, minus_sin = _rfft_pair(width, device, align)
    return torch.cat([cos, minus_sin], dim=1)


def interleaved_dft_block(height: int | Tensor, inverse: bool, device: Device = None) -> Tensor:
    """`complex_dft_block` with the real/imaginary parts of the H axis interleaved on its spatial side.

    Forward: columns (h, part) -> rows (part, k), so it reads the (B*C, H, [re | im]) rows that the product
    along W leaves (viewed as (B*C, 2H, Wp)) and writes the (B, C, 2, H, Wp) spectrum the Fourier unit's
    1x1 conv reads. Inverse: columns (part, k) -> rows (h, part), which the product with the stacked
    one-sided inverse along W reads as (B*C, H, [re | im]). No Transpose or Concat of the spectrum.
    """
    block = complex_dft_block(height, inverse, device)                      # rows (part, k), cols (part, h)
    if inverse:  # rows (part, h) -> (h, part)
        return block.reshape(2, -1, 2 * height).transpose(0, 1).reshape(2 * height, 2 * height)
    return block.reshape(2 * height, 2, -1).transpose(1, 2).reshape(2 * height, 2 * height)


class DenseMatmulDFT(nn.Module):
    """DFT-as-matmul with a dense (2H, 2H) transform along H: two products per direction, nothing else.

    Forward: (B*C*H, W) x (W, 2Wp) gives every row's one-sided spectrum as [re | im]; viewed as
    (B*C, 2H, Wp) its rows are (h, part), and one (2H, 2H) product along H (`interleaved_dft_block`)
    writes rows (part, k): the (B, C, 2, H, Wp) spectrum, with no Transpose, Concat or slice between the
    stages (on a GPU each would be a kernel and a copy of the spectrum). The inverse mirrors it.
    O(H^2) per column instead of `MatmulDFT`'s O(H (H1 + H2)), so slower at large H on ONNX Runtime
    CPU, but fewer, larger products: TensorRT builds it several times faster (`--fft matmul-dense`).

    Args:
        align: the spectrum's width is padded with zero columns to a multiple of this (`spectrum_width`).
    """

    def __init__(self, align: int = 1) -> None:
        super().__init__()
        self.align = int(align)

    def forward(self, x: Tensor) -> Tensor:
        _, channels, height, width = x.shape
        align = self.align
        freqs = spectrum_width(width, align)
        along_w = _cached("rfft-rows", (width, align),
                          lambda: _as_dtype(rfft_row_matrix(width, x.device, align), x.dtype), x)
        block = _cached("dense-forward", (height,),
                        lambda: _as_dtype(interleaved_dft_block(height, False, x.device), x.dtype), x)
        rows = torch.matmul(x, along_w).reshape(-1, 2 * height, freqs)             # (B*C, [h, part], Wp)
        # Channels are static, so -1 is the batch (the exporter would pin a batch size read here).
        return torch.matmul(block, rows).reshape(-1, channels, 2, height, freqs)   # (B, C, 2, H, Wp)

    def inverse(self, spectrum: Tensor, height: int, width: int) -> Tensor:
        device, dtype, align = spectrum.device, spectrum.dtype, self.align
        freqs = spectrum_width(width, align)
        block = _cached("dense-inverse", (height,),
                        lambda: _as_dtype(interleaved_dft_block(height, True, device), dtype), spectrum)
        basis = _cached("irfft", (width, align), lambda: _as_dtype(irfft_matrix(width, device, align), dtype), spectrum)
        rows = torch.matmul(block, spectrum.reshape(-1, 2 * height, freqs))         # (B*C, [h, part], Wp)
        image = torch.matmul(rows.reshape(-1, height, 2 * freqs), basis)            # (B*C, H, W)
        return image.unflatten(0, (-1, spectrum.shape[1]))


_TRANSFORMS: dict[str, type[nn.Module]] = {"torch": TorchFFT, "matmul": MatmulDFT, "matmul-dense": DenseMatmulDFT}
#: torch.fft (reference), factorised DFT-as-matmul (default for export), dense DFT-as-matmul.
FOURIER_MODES = tuple(_TRANSFORMS)


def make_fourier_transform(mode: str, align: int = 1) -> nn.Module:
    """The transform of `mode`; `align` pads the spectrum width of the DFT-as-matmul forms (torch.fft: ignored)."""
    try:
        transform = _TRANSFORMS[mode]
    except KeyError:
        raise ValueError(f"unknown Fourier mode {mode!r}; choose one of {FOURIER_MODES}") from None
    return transform() if transform is TorchFFT else transform(align)


def set_spectrum_align(module: nn.Module, align: int) -> nn.Module:
    """Pad the spectrum width of every DFT-as-matmul transform in `module` to a multiple of `align`, in place.

    Exact either way; worth it where the Fourier units' products run on tensor cores (fp16).
    """
    if align < 1:
        raise ValueError(f"the spectrum alignment must be a positive integer, not {align}")
    for sub in module.modules():
        if isinstance(sub, (MatmulDFT, DenseMatmulDFT)):
            sub.align = int(align)
    return module
