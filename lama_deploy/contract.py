"""The deployment contract: one place for I/O names, dynamic dims, the size rule and metadata keys.

Everything that writes or reads an exported model (exporter, rule checker, engine builder, runtime,
server, Triton repository, tests) imports these names from here. This module is pure Python so the
edge runtime can import it without torch or onnx.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

IMAGE = "image"
MASK = "mask"
OUTPUT = "inpainted"
INPUT_NAMES: tuple[str, ...] = (IMAGE, MASK)
OUTPUT_NAMES: tuple[str, ...] = (OUTPUT,)

#: channels of each tensor; the other dims are (N, C, H, W) with N, H, W dynamic.
CHANNELS = {IMAGE: 3, MASK: 1, OUTPUT: 3}

# Symbolic dim names written into the ONNX graph.
DIM_BATCH = "N"
DIM_HEIGHT = "H"
DIM_WIDTH = "W"
DYNAMIC_AXES = {name: {0: DIM_BATCH, 2: DIM_HEIGHT, 3: DIM_WIDTH} for name in INPUT_NAMES + OUTPUT_NAMES}

#: Three stride-2 downsamplings: H and W must be multiples of 2**3.
SIZE_MULTIPLE = 8
SIZE_RULE = f"H and W must be multiples of {SIZE_MULTIPLE}; pad symmetrically (bottom/right) and crop back"
#: Smallest side the generator accepts: the 7x7 reflect-padded stem and the 1/8 feature map need
#: at least 2 pixels after downsampling for reflect padding of the 3x3 convs.
MIN_SIDE = 16

DEFAULT_OPSET = 17
#: TensorRT 8.5/8.6 (JetPack 5 / 6.0) import ONNX up to opset 17.
MAX_TRT8_OPSET = 17

#: Fourier-unit forms an export can take (`--fft`, metadata `lama.fourier`): factorised DFT-as-matmul
#: (default), dense DFT-as-matmul (simpler graph, faster TensorRT builds, more work at large sizes), ONNX DFT
#: ops (ONNX Runtime; TensorRT 8.x/10 cannot parse them). The PyTorch backend also runs `torch` (torch.fft),
#: whose names `lama_model.FOURIER_MODES` owns.
EXPORT_FOURIER = ("matmul", "matmul-dense", "dft")
DEFAULT_FOURIER = "matmul"

# --- precisions, fp16 policies and where they may combine ---------------------------------------------------
# Declared here once and judged by `precision_problem` only: the exporter, the engine builder, the PyTorch
# backend and the bench all ask it, so one illegal combination gives one line wherever it is tried.

#: Precisions of an export and of an engine (`--precision`, metadata `lama.precision`).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")

#: Precisions the PyTorch backend runs in (autocast); fp16/bf16 keep the Fourier units safe (see
#: runtime/backends/pytorch/precision.py). Exports and engines take the first two.
TORCH_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
#: `torch.compile` modes of the PyTorch backend (`--compile`): off (default until GPU rows show a gain), inductor's
#: default, max-autotune (a longer first call per input shape).
TORCH_COMPILE_MODES: tuple[str, ...] = ("off", "default", "max-autotune")

#: How fp16 keeps the Fourier units in range (`--fp16-policy`, metadata `lama.fp16_policy`): `fourier-fp32`
#: runs them in fp32 islands, `fourier-scaled` folds an exact power-of-two scale into their weights
#: (`lama_model.precision.fold_fourier_scale`) and runs them in fp16. lama_model declares no names of its own.
FP16_POLICIES: tuple[str, ...] = ("fourier-fp32", "fourier-scaled")
DEFAULT_FP16_POLICY = "fourier-fp32"

#: Where a precision is used: the ONNX export, the PyTorch backend, and the TensorRT build targets (the keys of
#: scripts/trtexec_commands.py's TARGETS; `rtx` is TensorRT-RTX). The bench runs the PyTorch backend.
TRT_TARGETS: dict[str, str] = {
    "trt85": "TensorRT 8.5", "trt86": "TensorRT 8.6", "trt10": "TensorRT 10.x", "trt11": "TensorRT 11.x",
    "rtx": "TensorRT-RTX",
}
TARGETS: dict[str, str] = {"onnx": "the ONNX export", "torch": "the PyTorch backend", **TRT_TARGETS}
#: Builders without a precision switch: the engine's precision is the ONNX's.
STRONGLY_TYPED_TARGETS: tuple[str, ...] = ("trt11", "rtx")
#: Builders whose ONNX parser has no DFT op (TensorRT reads ONNX DFT from 11.2 on).
NO_DFT_TARGETS: tuple[str, ...] = ("trt85", "trt86", "trt10")


def precision_problem(precision: str, fp16_policy: str | None = None, fourier: str | None = None,
                      target: str = "onnx", onnx_precision: str | None = None) -> str | None:
    """The one judge of a (precision, fp16 policy, Fourier form, target) combination: None when legal, else one
    line naming the problem and the way out.

    `fp16_policy` None means "not asked for" (fp16 then takes the default); `fourier` None skips the form
    checks; `onnx_precision` is the precision of the ONNX an engine is built from (TensorRT targets only).
    An unknown `target` is a bug of the caller (ValueError), not a user mistake.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown precision target {target!r}; one of {', '.join(TARGETS)}")
    offered = TORCH_PRECISIONS if target == "torch" else PRECISIONS
    if precision not in offered:
        return f"unknown precision {precision!r} for {TARGETS[target]}; choose one of {', '.join(offered)}"
    if fp16_policy is not None and fp16_policy not in FP16_POLICIES:
        return f"unknown fp16 policy {fp16_policy!r} (--fp16-policy); choose one of {', '.join(FP16_POLICIES)}"
    if fourier is not None and target != "torch" and fourier not in EXPORT_FOURIER:
        return f"unknown Fourier form {fourier!r} (--fft) for {TARGETS[target]}; choose one of {', '.join(EXPORT_FOURIER)}"
    return (_policy_problem(precision, fp16_policy, fourier, offered)
            or _form_problem(precision, fourier, target)
            or _engine_problem(precision, target, onnx_precision))


def _policy_problem(precision: str, policy: str | None, fourier: str | None, offered: tuple[str, ...]) -> str | None:
    if precision == "fp32" and policy not in (None, DEFAULT_FP16_POLICY):
        reduced = "/".join(p for p in offered if p != "fp32")
        return (f"--fp16-policy applies to --precision {reduced} only (fp16 policy {policy!r} with fp32); "
                f"add --precision fp16 or drop it")
    # Measured on an H200 (docs/benchmarks.md): cuFFT's half-precision transform sums before it normalises, so
    # even scaled units overflow (100% non-finite at 2048x2048); the scale only helps the DFT-as-matmul forms.
    if precision != "fp32" and policy == "fourier-scaled" and fourier == "torch":
        return ("fp16 policy 'fourier-scaled' needs a DFT-as-matmul Fourier form; with torch.fft (cuFFT) use the "
                "default 'fourier-fp32'")
    return None


def _form_problem(precision: str, fourier: str | None, target: str) -> str | None:
    if fourier == "dft" and precision != "fp32":
        return "--fft dft supports fp32 only (ONNX Runtime's DFT kernel has no fp16); export with --fft matmul for fp16"
    if fourier == "dft" and target in NO_DFT_TARGETS:
        return (f"{TARGETS[target]} cannot parse ONNX DFT ops (an --fft dft export); export with the default "
                f"--fft matmul for TensorRT")
    return None


def _engine_problem(precision: str, target: str, onnx_precision: str | None) -> str | None:
    if target not in TRT_TARGETS or onnx_precision is None:
        return None
    if precision == "fp32" and onnx_precision == "fp16":
        return ("--precision fp32 but this ONNX is the fp16 export (lama.precision=fp16); "
                "build it with --precision fp16 or use the fp32 ONNX")
    if precision == "fp16" and onnx_precision != "fp16" and target in STRONGLY_TYPED_TARGETS:
        return (f"{TARGETS[target]} is strongly typed: --precision fp16 needs the fp16 ONNX "
                f"(`lama-deploy export --precision fp16`); this one is {onnx_precision}")
    return None


def fp16_policy_problem(fp16_policy: str, fourier_form: str) -> str | None:
    """`precision_problem` for fp16 on the PyTorch backend (the bench's question: is this policy offered with
    this Fourier form?)."""
    return precision_problem("fp16", fp16_policy, fourier_form, "torch")


# Keys of the ONNX metadata_props and of the engine sidecar.
META_CONFIG = "lama.config"
META_FOURIER = "lama.fourier"
META_PRECISION = "lama.precision"
META_OPSET = "lama.opset"
META_CHECKPOINT_SHA256 = "lama.checkpoint_sha256"
META_WEIGHTS = "lama.weights"
META_EXPORTER = "lama.exporter"
META_SIZE_RULE = "lama.size_rule"
META_SIZE_MULTIPLE = "lama.size_multiple"
META_MIN_SIDE = "lama.min_side"
META_IO = "lama.io"
#: Graph rewrites applied before tracing (export/speedups.py), comma-separated, or "none".
META_SPEEDUPS = "lama.speedups"
#: The speedup that takes ONNX Runtime CPU's ConvTranspose column buffer out of the full-resolution layer
#: (export/speedups.py); its presence in META_SPEEDUPS changes the host memory cost per pixel.
SPEEDUP_SUBPIXEL = "subpixel_upsample"
#: Seeded random weights only: what rebuilds the same weights for validation.
META_RANDOM_SEED = "lama.random_seed"
META_TRAINED_LIKE = "lama.trained_like"
#: fp16 exports: policy of the Fourier units (`FP16_POLICIES`) and the exact power-of-two
#: scale folded into their weights (`fourier-scaled`; "1" for `fourier-fp32`).
META_FP16_POLICY = "lama.fp16_policy"
META_FOURIER_SCALE = "lama.fourier_scale"
#: DFT-as-matmul exports: the spectrum width's padding (`lama_model.fourier.spectrum_width`), see `fourier_align`.
META_FOURIER_ALIGN = "lama.fourier_align"

#: Exported node-name fragments (TorchScript exporter scopes): the generator, and the Fourier units that
#: must stay fp32 (their spectrum passes fp16's range with trained weights). Read by the fp16 converter,
#: the TensorRT builder's precision constraints and the trtexec line generator.
GENERATOR_SCOPE = "/generator/"
FP32_SCOPES: tuple[str, ...] = ("/fu/",)
#: Helper nodes/layers the TensorRT ONNX parser adds carry this prefix and no scope: kept fp32.
PARSER_HELPER_PREFIX = "ONNXTRT_"

RANDOM_WEIGHTS_LABEL = "random weights (seeded, BatchNorm-calibrated) - NOT the trained LaMa; output is a plumbing demo"


def round_up(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    """Smallest multiple of `multiple` that is >= value."""
    return -(-int(value) // multiple) * multiple


def is_valid_size(height: int, width: int) -> bool:
    return height % SIZE_MULTIPLE == 0 and width % SIZE_MULTIPLE == 0 and min(height, width) >= MIN_SIDE


def input_shapes(batch: int, height: int, width: int) -> dict[str, tuple[int, int, int, int]]:
    """Shapes of every input for one (N, H, W)."""
    return {name: (batch, CHANNELS[name], height, width) for name in INPUT_NAMES}


def shape_spec(batch: int, height: int, width: int, sep: str = "x") -> str:
    """`image:1x3x512x512,mask:1x1x512x512` as trtexec and ORT-TRT want it."""
    return ",".join(f"{name}:{sep.join(str(d) for d in shape)}" for name, shape in input_shapes(batch, height, width).items())


def runs_in_fp16(node_name: str, fp16_policy: str = DEFAULT_FP16_POLICY) -> bool:
    """The fp16 scope rule, for ONNX nodes and TensorRT layers alike: inside the generator, not a scope-less
    parser helper layer, and not in a Fourier unit under `fourier-fp32` (its spectrum passes fp16's range with
    trained weights unless `fourier-scaled` folded a scale into the unit's weights)."""
    if fp16_policy not in FP16_POLICIES:
        raise ValueError(f"unknown fp16 policy {fp16_policy!r}; choose one of {FP16_POLICIES}")
    in_fourier_unit = any(scope in node_name for scope in FP32_SCOPES)
    return (GENERATOR_SCOPE in node_name and not node_name.startswith(PARSER_HELPER_PREFIX)
            and not (in_fourier_unit and fp16_policy == "fourier-fp32"))


#: Spectrum width multiple where the Fourier units' products run on tensor cores: fp16/bf16 GEMMs take their
#: aligned kernels only for leading dimensions that are multiples of 8 (Wf = W/2+1 = 33 at 512x512 is not).
TENSOR_CORE_ALIGN = 8


def fourier_align(precision: str, fp16_policy: str | None) -> int:
    """How far the DFT-as-matmul forms pad their spectrum width (zero columns, exact): `TENSOR_CORE_ALIGN` when
    the Fourier units run in half precision (`fourier-scaled`), else 1. Elsewhere the units' products are fp32
    (fp32 models, `fourier-fp32` islands, ONNX Runtime CPU), where padding is only more work: 10-17% of one
    big-lama unit's ONNX Runtime CPU time at 64x64, 6-10% at 128x128 (docs/benchmarks.md). Read by the export
    (metadata `lama.fourier_align`) and by the PyTorch backend."""
    return TENSOR_CORE_ALIGN if precision in ("fp16", "bf16") and fp16_policy == "fourier-scaled" else 1


def is_random_weights(metadata: Mapping[str, Any] | str | None) -> bool:
    """Whether a model carries seeded random weights: its `lama.*` metadata (ONNX metadata, the sidecar's
    `lama` section) or just its weights label."""
    if isinstance(metadata, Mapping):
        if metadata.get(META_RANDOM_SEED) not in (None, ""):
            return True
        metadata = metadata.get(META_WEIGHTS)
    return bool(metadata) and "random weights" in str(metadata).lower()


# --- "is this file our model?" --------------------------------------------------------------------------

class TensorLike(Protocol):
    dims: tuple[Any, ...]   # ints for fixed dims, names or None for dynamic ones


class FactsLike(Protocol):
    """What `io_problem` reads (lama_deploy.model_facts.ModelFacts)."""

    name: str
    inputs: Mapping[str, TensorLike]
    outputs: Mapping[str, TensorLike]


def io_problem(facts: FactsLike) -> str | None:
    """The one check of a model's I/O against the contract, used by every command: None when it is this
    model, else one line naming the file, what it has and what to do. An extra output is refused too: every
    consumer (builder, Triton, runtime) would carry a tensor the contract does not know."""
    inputs, outputs = sorted(facts.inputs), sorted(facts.outputs)
    if inputs != sorted(INPUT_NAMES) or outputs != sorted(OUTPUT_NAMES):
        return (f"{facts.name} is not a lama-deploy inpainting model: its inputs are {inputs} and outputs {outputs}, "
                f"expected {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}; export it with `lama-deploy export`")
    for name, tensor in {**facts.inputs, **facts.outputs}.items():
        dims = tuple(tensor.dims)
        if dims and (len(dims) != 4 or (isinstance(dims[1], int) and dims[1] > 0 and dims[1] != CHANNELS[name])):
            return (f"{facts.name} is not a lama-deploy inpainting model: {name} has dims {list(dims)}, expected "
                    f"[N,{CHANNELS[name]},H,W]; export it with `lama-deploy export`")
    return None
