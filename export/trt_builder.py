"""The TensorRT side of engine building, written once for TensorRT 8.6, 10.x, 11.x and TensorRT-RTX.

The four APIs differ in ways that matter here; each is handled by a feature check on the imported
module, not by parsing version strings (sources: shared notes, tensorrt-onnx-facts.md sections 3-4):
- `NetworkDefinitionCreationFlag.EXPLICIT_BATCH` is required on 8.x, deprecated and the default on
  10.x, gone from 11.x and TensorRT-RTX;
- `BuilderFlag.FP16` (weak typing) exists on 8.x-10.x only; TensorRT 11 and TensorRT-RTX are always
  strongly typed, so fp16 must already be in the ONNX (Cast nodes);
- `set_memory_pool_limit` replaced `max_workspace_size` (8.4+);
- timing caches are real on TensorRT and documented no-ops on TensorRT-RTX;
- only TensorRT-RTX builds ahead of time for another GPU (`set_compute_capability`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):
    # Loaded as a script by the generated `polygraphy convert --trt-config-postprocess-script` lines: make
    # the repository importable, so a checkout copied to a device works without `pip install -e .`.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lama_deploy import contract as C  # noqa: E402
from lama_deploy.errors import UserError  # noqa: E402

#: Default optimisation profile (N x H x W): one image from 256^2 to 1024^2, tuned for 512^2, batch 2 at most.
DEFAULT_PROFILE = ((1, 256, 256), (1, 512, 512), (2, 1024, 1024))


class ParserError(UserError):
    """The ONNX parser rejected the graph; `lines` holds one readable line per parser error."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "the TensorRT ONNX parser rejected the model")
        self.lines = lines


# --- optimisation profiles ----------------------------------------------------------------------------

NHW = tuple[int, int, int]


@dataclass(frozen=True)
class Profile:
    """One optimisation profile over (N, H, W), applied to both inputs of the contract."""

    min: NHW
    opt: NHW
    max: NHW

    def input_shapes(self, which: str) -> dict[str, tuple[int, int, int, int]]:
        return C.input_shapes(*getattr(self, which))

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max),
                "shapes": {which: C.shape_spec(*getattr(self, which)) for which in ("min", "opt", "max")}}


def format_nhw(nhw: NHW) -> str:
    return "x".join(str(d) for d in nhw)


def parse_nhw(text: str, flag: str = "shape") -> NHW:
    """'1x512x512' -> (1, 512, 512)."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"{flag} {text!r} is not NxHxW (e.g. 1x512x512)")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def check_profile(profile: Profile, index: int = 0) -> None:
    """Raise one clear line for the first rule the profile breaks."""
    label = f"profile {index}"
    for which in ("min", "opt", "max"):
        n, h, w = getattr(profile, which)
        if n < 1:
            raise UserError(f"{label}: --{which} {format_nhw((n, h, w))}: batch N must be >= 1")
        if h % C.SIZE_MULTIPLE or w % C.SIZE_MULTIPLE:
            raise UserError(f"{label}: --{which} {format_nhw((n, h, w))}: H and W must be multiples of "
                            f"{C.SIZE_MULTIPLE} (e.g. {C.round_up(h)}x{C.round_up(w)})")
        if min(h, w) < C.MIN_SIDE:
            raise UserError(f"{label}: --{which} {format_nhw((n, h, w))}: H and W must be >= {C.MIN_SIDE}")
    for dim, name in enumerate("NHW"):
        lo, mid, hi = profile.min[dim], profile.opt[dim], profile.max[dim]
        if not lo <= mid <= hi:
            raise UserError(f"{label}: {name} must satisfy min <= opt <= max, got min {format_nhw(profile.min)}, "
                            f"opt {format_nhw(profile.opt)}, max {format_nhw(profile.max)}")


def make_profiles(mins: list[str] | None, opts: list[str] | None, maxs: list[str] | None) -> list[Profile]:
    """Profiles from repeated --min/--opt/--max. With one profile, what is not given comes from DEFAULT_PROFILE
    (`--max 1x2048x2048` alone raises only the max); several profiles need all three each."""
    mins, opts, maxs = mins or [], opts or [], maxs or []
    if max(len(mins), len(opts), len(maxs)) <= 1:
        given = [parse_nhw(v[0], f"--{k}") if v else d for k, v, d in zip(("min", "opt", "max"), (mins, opts, maxs),
                                                                           DEFAULT_PROFILE)]
        profiles = [Profile(*given)]
    elif not len(mins) == len(opts) == len(maxs):
        raise UserError(f"give --min, --opt and --max once per profile (got {len(mins)}, {len(opts)}, {len(maxs)})")
    else:
        profiles = [Profile(parse_nhw(a, "--min"), parse_nhw(b, "--opt"), parse_nhw(c, "--max"))
                    for a, b, c in zip(mins, opts, maxs)]
    for index, profile in enumerate(profiles):
        check_profile(profile, index)
    return profiles


# --- what the installed TensorRT can do ---------------------------------------------------------------

@dataclass
class Features:
    flavour: str
    version: str
    weak_typing: bool               # BuilderFlag.FP16 exists (8.x-10.x)
    strongly_typed_flag: bool       # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists (9+ and RTX)
    explicit_batch_flag: bool       # needed (8.x) rather than deprecated (10.x) or absent (11, RTX)
    memory_pools: bool
    timing_cache: bool
    compute_capabilities: list[str] = field(default_factory=list)   # AOT targets ("8.9", ...), RTX only
    optimization_level: bool = False


def detect_features(trt: ModuleType) -> Features:
    from lama_deploy.runtime.trt_import import flavour_of, major_version, version_of

    flavour = flavour_of(trt)
    creation = trt.NetworkDefinitionCreationFlag
    config_type = trt.IBuilderConfig
    # EXPLICIT_BATCH survives in 10.x only as a deprecated no-op (explicit batch is the default there).
    explicit_batch = hasattr(creation, "EXPLICIT_BATCH") and major_version(trt) < 10
    targets = []
    if hasattr(config_type, "set_compute_capability") and hasattr(trt, "ComputeCapability"):
        for name in dir(trt.ComputeCapability):
            match = re.fullmatch(r"SM(\d+)(\d)", name)
            if match:
                targets.append(f"{match.group(1)}.{match.group(2)}")
    return Features(
        flavour=flavour, version=version_of(trt),
        weak_typing=hasattr(trt.BuilderFlag, "FP16"),
        strongly_typed_flag=hasattr(creation, "STRONGLY_TYPED"),
        explicit_batch_flag=explicit_batch,
        memory_pools=hasattr(config_type, "set_memory_pool_limit"),
        # TensorRT-RTX keeps the calls but documents them as no-ops ("Timing cache operations are no-ops").
        timing_cache=hasattr(config_type, "create_timing_cache") and flavour != "tensorrt_rtx",
        compute_capabilities=sorted(targets, key=lambda t: tuple(int(x) for x in t.split("."))),
        optimization_level=hasattr(config_type, "builder_optimization_level"),
    )


def normalise_compute_capability(features: Features, target: str) -> str:
    """'8.9', '89', 'sm89', 'SM_120' -> '8.9' / '12.0', or one clear error naming what is supported."""
    if not features.compute_capabilities:
        raise UserError(f"--compute-capability needs TensorRT-RTX (ahead-of-time builds); {features.flavour} "
                        f"{features.version} builds for the GPU it runs on: drop the option")
    normalised = target.strip().lower().removeprefix("sm").removeprefix("_")
    if "." not in normalised and len(normalised) >= 2:  # SM89 -> 8.9, SM120 -> 12.0: the last digit is the minor
        normalised = f"{normalised[:-1]}.{normalised[-1]}"
    if normalised not in features.compute_capabilities:
        raise UserError(f"compute capability {target!r} is not supported by {features.flavour} {features.version}; "
                        f"choose one of {', '.join(features.compute_capabilities)}")
    return normalised


def compute_capability_enum(trt: ModuleType, features: Features, target: str):
    """'8.9' -> trt.ComputeCapability.SM89."""
    name = "SM" + normalise_compute_capability(features, target).replace(".", "")
    return getattr(trt.ComputeCapability, name)


# --- logging ------------------------------------------------------------------------------------------

def make_logger(trt: ModuleType):
    """A TensorRT logger that keeps errors for our one-line messages and prints nothing itself."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:  # noqa: D401 - TensorRT callback
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(" ".join(str(msg).split()))

    return CollectingLogger()


def create_builder(trt: ModuleType, logger):
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # pybind returns nullptr without a usable GPU/driver
        builder = None
        reason = str(exc).splitlines()[0]
    else:
        reason = ""
    if builder is None:
        detail = (logger.errors or [reason or "no details"])[-1]
        raise UserError(f"could not create a TensorRT builder ({detail}); TensorRT builds need an NVIDIA GPU and "
                        f"driver; without one use TensorRT-RTX with --compute-capability (ahead of time)")
    return builder


# --- network ------------------------------------------------------------------------------------------

def _parser_error_line(error) -> str:
    """'ONNX parser: node 3 'name' (DFT): Plugin not found, ...' from a parser error (8.5 lacks the node names)."""
    desc = str(error.desc())
    quoted = re.search(r'"([^"]+)"', desc)
    message = quoted.group(1) if quoted else desc
    index = error.node() if hasattr(error, "node") else -1
    operator = error.node_operator() if hasattr(error, "node_operator") else ""
    name = error.node_name() if hasattr(error, "node_name") else ""
    where = f"node {index} '{name}' ({operator})" if operator else (f"node {index}" if index >= 0 else "model")
    hint = " - TensorRT imports ONNX DFT only from 11.2; export with --fft matmul" if operator in ("DFT", "STFT") else ""
    return f"ONNX parser: {where}: {message}{hint}"


def create_network(trt: ModuleType, builder, features: Features, strongly_typed: bool):
    flags = 0
    if features.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed and features.weak_typing and features.strongly_typed_flag:
        # Only 9.x/10.x need asking; 11.x and TensorRT-RTX networks are strongly typed anyway.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def parse_onnx(trt: ModuleType, network, logger, onnx_path: str):
    """Parse into `network`; ParserError with one line per parser error on failure."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return parser
    lines = [_parser_error_line(parser.get_error(i)) for i in range(parser.num_errors)]
    if any("MODEL_DESERIALIZE_FAILED" in str(parser.get_error(i).desc()) or "deserialize" in line.lower()
           for i, line in enumerate(lines)):
        lines = [f"{onnx_path} is not a readable ONNX file (the TensorRT parser could not deserialize it); re-export it"]
    raise ParserError(lines or logger.errors[-3:] or [f"the TensorRT ONNX parser rejected {onnx_path}"])


def check_network_io(network) -> dict[str, dict]:
    """The parsed network must be this model: inputs image/mask [N,C,H,W], output inpainted. Returns I/O info."""
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    outputs = {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}
    if set(inputs) != set(C.INPUT_NAMES) or set(outputs) != set(C.OUTPUT_NAMES):
        raise UserError(f"this ONNX is not a lama-deploy inpainting model: I/O is {sorted(inputs)} -> {sorted(outputs)}, "
                        f"expected {list(C.INPUT_NAMES)} -> {list(C.OUTPUT_NAMES)}; export it with `lama-deploy export`")
    info = {}
    for name, tensor in {**inputs, **outputs}.items():
        shape = list(tensor.shape)
        if len(shape) != 4 or shape[1] != C.CHANNELS[name]:
            raise UserError(f"this ONNX is not a lama-deploy inpainting model: {name} has shape {shape}, "
                            f"expected [N,{C.CHANNELS[name]},H,W]")
        info[name] = {"shape": shape, "dtype": str(tensor.dtype).split(".")[-1].lower()}
    return info


# --- precision ----------------------------------------------------------------------------------------

def _is_float(trt: ModuleType, dtype) -> bool:
    return dtype in (trt.float32, trt.float16)


def _keeps_fp16(layer_name: str, fp32_scopes: tuple[str, ...], generator_scope: str) -> bool:
    """Layers allowed to run in fp16: the generator's own layers outside the Fourier units.

    Everything else - the Fourier units, the pre/post-processing and every helper layer the parser adds
    under an `ONNXTRT_` name (which carries no scope, so we cannot tell where it belongs) - stays fp32.
    """
    return (generator_scope in layer_name and not any(scope in layer_name for scope in fp32_scopes)
            and not layer_name.startswith("ONNXTRT_"))


def fp32_scopes() -> tuple[tuple[str, ...], str]:
    """(name fragments kept fp32, generator scope): the same policy as the fp16 ONNX export."""
    from lama_deploy.contract import FP32_SCOPES, GENERATOR_SCOPE

    return tuple(FP32_SCOPES), GENERATOR_SCOPE


def pin_fp32_layers(trt: ModuleType, network, fp32_scopes: tuple[str, ...], generator_scope: str) -> int:
    """Weak typing (8.x/10.x) with FP16 on: force fp32 compute and outputs outside the fp16 region.

    Layers on shape tensors or with integer/bool tensors are left alone: setting a float precision there
    is invalid (the same rules trtexec applies to `--layerPrecisions=*:fp32`). Returns the count pinned.
    """
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if _keeps_fp16(layer.name, fp32_scopes, generator_scope):
            continue
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        inputs = [layer.get_input(i) for i in range(layer.num_inputs)]
        inputs = [t for t in inputs if t is not None]
        if not outputs or any(not _is_float(trt, t.dtype) or t.is_shape_tensor for t in outputs):
            continue
        if inputs and inputs[0].is_shape_tensor:
            continue
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.float32)
        pinned += 1
    return pinned


def _polygraphy_tensorrt() -> ModuleType:
    """The module Polygraphy itself uses (POLYGRAPHY_USE_TENSORRT_RTX=1 selects TensorRT-RTX)."""
    import os

    from lama_deploy.runtime.trt_import import import_tensorrt

    return import_tensorrt("tensorrt_rtx" if os.environ.get("POLYGRAPHY_USE_TENSORRT_RTX") == "1" else None)


def polygraphy_pin_fp32(network) -> None:
    """For `polygraphy convert --fp16 --trt-network-postprocess-script export/trt_builder.py:polygraphy_pin_fp32`."""
    trt = _polygraphy_tensorrt()
    if network.num_layers and not hasattr(network.get_layer(0), "precision"):
        return  # strongly typed API (TensorRT 11, TensorRT-RTX): the ONNX's casts decide
    pin_fp32_layers(trt, network, *fp32_scopes())


def polygraphy_no_tf32(builder, network, config) -> None:
    """For `polygraphy convert --trt-config-postprocess-script export/trt_builder.py:polygraphy_no_tf32`:
    Polygraphy has no switch to turn TensorRT's default TF32 off; the DFT matmuls need full fp32."""
    trt = _polygraphy_tensorrt()
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)


# --- builder config -----------------------------------------------------------------------------------

@dataclass
class ConfigOptions:
    profiles: list[Profile]
    fp16_flag: bool = False           # weak typing: BuilderFlag.FP16 + OBEY_PRECISION_CONSTRAINTS
    workspace_mib: int | None = None
    compute_capability: str | None = None
    optimization_level: int | None = None
    tf32: bool = False
    timing_cache: bytes | None = None


def create_config(trt: ModuleType, builder, features: Features, options: ConfigOptions):
    config = builder.create_builder_config()
    if options.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 (on by default) rounds fp32 matmuls to a 10-bit mantissa: the DFT bases would lose their accuracy.
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.workspace_mib:
        limit = int(options.workspace_mib) << 20
        if features.memory_pools:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, limit)
        else:  # TensorRT < 8.4
            config.max_workspace_size = limit
    if options.optimization_level is not None:
        if not features.optimization_level:
            raise UserError(f"--optimization-level needs TensorRT 8.6 or later ({features.flavour} {features.version})")
        config.builder_optimization_level = int(options.optimization_level)
    if options.compute_capability:
        target = compute_capability_enum(trt, features, options.compute_capability)
        config.num_compute_capabilities = 1   # the list is empty until sized; index 0 would be ignored
        if not config.set_compute_capability(target, 0):
            raise UserError(f"TensorRT-RTX refused compute capability {options.compute_capability} "
                            f"(set_compute_capability returned False)")
    if options.timing_cache is not None and features.timing_cache:
        cache = config.create_timing_cache(options.timing_cache)
        config.set_timing_cache(cache, ignore_mismatch=False)
    for profile in options.profiles:
        trt_profile = builder.create_optimization_profile()
        for name in C.INPUT_NAMES:
            trt_profile.set_shape(name, profile.input_shapes("min")[name], profile.input_shapes("opt")[name],
                                  profile.input_shapes("max")[name])
        config.add_optimization_profile(trt_profile)
    return config


def serialized_timing_cache(config) -> bytes:
    return bytes(memoryview(config.get_timing_cache().serialize()))


def build_serialized(trt: ModuleType, builder, network, config, logger, workspace_mib: int | None) -> bytes:
    """Build; one clear line (the builder's last error plus a hint) on failure."""
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = logger.errors[-1] if logger.errors else "no error message from TensorRT"
        hint = ""
        memory = any(word in detail.lower() for word in ("outofmemory", "out of memory", "workspace"))
        if memory and workspace_mib:
            hint = f" - the workspace limit ({workspace_mib} MiB) is too small: raise --workspace or drop it"
        elif memory:
            hint = " - not enough memory: lower the profile's max shape"
        raise UserError(f"engine build failed: {detail}{hint}")
    return bytes(memoryview(serialized))
