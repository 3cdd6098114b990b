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
from dataclasses import dataclass, field
from types import ModuleType

from lama_deploy import contract as C
from lama_deploy.errors import UserError
from lama_deploy.model_facts import ModelFacts, facts_from_io
from lama_deploy.profiles import Profile


class ParserError(UserError):
    """The ONNX parser rejected the graph; `lines` holds one readable line per parser error."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "the TensorRT ONNX parser rejected the model")
        self.lines = lines


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


def precision_target(features: Features) -> str:
    """The contract's build target (`contract.TRT_TARGETS`) of the installed TensorRT, for
    `contract.precision_problem`: told by features (typing), the version only to tell 8.5 from 8.6 and 10."""
    if features.flavour == "tensorrt_rtx":
        return "rtx"
    if not features.weak_typing:
        return "trt11"
    parts = (features.version.split(".") + ["0", "0"])[:2]
    major, minor = (int(x) if x.isdigit() else 0 for x in parts)
    if major >= 9:
        return "trt10"
    return "trt85" if (major, minor) <= (8, 5) else "trt86"


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


# --- builder and network ------------------------------------------------------------------------------

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


def network_facts(network, name: str) -> ModelFacts:
    """Names, dims and dtypes of a parsed network's I/O (checked with `contract.io_problem` by the builder)."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    dtypes = {t.name: str(t.dtype).split(".")[-1].lower() for t in tensors + outputs}
    return facts_from_io(name, "onnx", {t.name: tuple(t.shape) for t in tensors},
                         {t.name: tuple(t.shape) for t in outputs}, dtypes)


# --- precision ----------------------------------------------------------------------------------------

def _is_float(trt: ModuleType, dtype) -> bool:
    return dtype in (trt.float32, trt.float16)


def pin_fp32_layers(trt: ModuleType, network, fp16_policy: str = C.DEFAULT_FP16_POLICY) -> int:
    """Weak typing (8.x/10.x) with FP16 on: force fp32 compute and outputs outside the fp16 region
    (`contract.runs_in_fp16`: the generator's own layers outside the Fourier units; the parser's scope-less
    `ONNXTRT_` helper layers stay fp32 because we cannot tell where they belong).

    Layers on shape tensors or with integer/bool tensors are left alone: setting a float precision there
    is invalid (the same rules trtexec applies to `--layerPrecisions=*:fp32`). Returns the count pinned.
    """
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if C.runs_in_fp16(layer.name, fp16_policy):
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
