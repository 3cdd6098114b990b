"""A dynamic-shape TensorRT engine from the exported ONNX, with a JSON sidecar (`lama-deploy build`, whose
parser lives in scripts/commands/build.py).

    lama-deploy build lama.onnx -o lama.engine --min 1x256x256 --opt 1x512x512 --max 2x1024x1024
    lama-deploy build lama_fp16.onnx -o lama.engine --precision fp16 --compute-capability 8.9   # TensorRT-RTX, AOT
    lama-deploy build --inspect lama.engine

Precision policy (one choice, documented here and in the sidecar):
- weakly typed builders (TensorRT 8.x, 10.x) and `--precision fp16`: an fp32 ONNX is built with FP16 +
  OBEY_PRECISION_CONSTRAINTS, every layer outside the generator's own conv/norm/activation layers
  (Fourier units with their DFT bases and angle math, pre/post-processing, parser helper layers) pinned
  to fp32. An fp16 ONNX is built strongly typed where the builder can (9.x/10.x), else the same way.
- strongly typed builders (TensorRT 11, TensorRT-RTX) have no precision switch: the precision *is* the
  ONNX's. `--precision fp16` with the fp32 ONNX is an error (re-export with `--precision fp16`) rather than a
  silent conversion, so the sidecar's ONNX sha256 always names the graph that was built.
- `--precision` omitted: the ONNX's own precision (`lama.precision` metadata).
TF32 is off unless `--tf32`: it would round the fp32 DFT matmuls to a 10-bit mantissa.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lama_deploy import contract as C
from lama_deploy import host
from lama_deploy.engine_sidecar import BuildFacts, make_sidecar, write_engine_and_sidecar
from lama_deploy.errors import InputNotFound, UserError
from lama_deploy.files import atomic_output
from lama_deploy.host import peak_rss_mb
from lama_deploy.model_facts import ModelFacts, read_model_facts
from lama_deploy.profiles import Profile, check_profile, make_profiles

from .trt_builder import (
    ConfigOptions, ParserError, build_serialized, create_builder, create_config, create_network, detect_features,
    network_facts, normalise_compute_capability, parse_onnx, pin_fp32_layers, precision_target,
    serialized_timing_cache,
)


@dataclass(frozen=True)
class BuildOptions:
    """How to build: profiles (default: `make_profiles(None, None, None)`), precision (default: the ONNX's own),
    builder limits, the TensorRT flavour (default: whichever is installed), the ahead-of-time target."""

    profiles: tuple[Profile, ...] | list[Profile] | None = None
    precision: str | None = None
    workspace_mib: int | None = None
    timing_cache: str | Path | None = None
    compute_capability: str | None = None
    flavour: str | None = None
    optimization_level: int | None = None
    tf32: bool = False


@dataclass
class BuildReport:
    engine: str
    sidecar: str
    engine_bytes: int
    seconds: float
    peak_rss_mb: float
    flavour: str
    tensorrt_version: str
    precision: str
    strongly_typed: bool
    fp32_pinned_layers: int
    compute_capability: str | None
    profiles: list[dict]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)



# --- the ONNX side --------------------------------------------------------------------------------------

def check_profiles_fit(profiles: list[Profile], facts: ModelFacts) -> None:
    """A fixed batch or size in the ONNX must be what every profile asks for."""
    dims = facts.inputs[C.IMAGE].dims
    for index, profile in enumerate(profiles):
        for onnx_axis, profile_axis, name in ((0, 0, "N"), (2, 1, "H"), (3, 2, "W")):
            fixed = dims[onnx_axis]
            asked = {profile.min[profile_axis], profile.max[profile_axis]}
            if isinstance(fixed, int) and fixed > 0 and asked != {fixed}:
                raise UserError(f"profile {index}: the ONNX has a fixed {name} = {fixed}; use {name} = {fixed} "
                                f"in --min/--opt/--max or export with a dynamic {name}")


def resolve_precision(requested: str | None, onnx_precision: str, target: str, fourier: str | None = None) -> str:
    """The engine's precision (default: the ONNX's), refused with the contract's one line when `target`
    (`contract.TRT_TARGETS`) cannot build it from this ONNX."""
    precision = requested or onnx_precision
    problem = C.precision_problem(precision, None, fourier, target, onnx_precision=onnx_precision)
    if problem:
        raise UserError(problem)
    return precision


# --- the build ------------------------------------------------------------------------------------------

def build_engine(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions | None = None) -> BuildReport:
    """Build `engine_path` (+ `<engine>.json` sidecar) from `onnx_path`; both written atomically."""
    from lama_deploy.runtime.trt_import import TensorRTUnavailable, import_tensorrt, make_logger

    start = time.perf_counter()
    options = options or BuildOptions()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise InputNotFound(f"ONNX model {onnx_path} not found")
    profiles = list(options.profiles or make_profiles(None, None, None))
    compute_capability, timing_cache, tf32 = options.compute_capability, options.timing_cache, options.tf32
    for index, profile in enumerate(profiles):
        check_profile(profile, index)
    facts = read_model_facts(onnx_path).check()
    check_profiles_fit(profiles, facts)
    metadata = {key: value for key, value in facts.metadata.items() if key.startswith("lama.")}
    onnx_precision = metadata.get(C.META_PRECISION, "fp32")
    try:
        trt = import_tensorrt(options.flavour)
    except TensorRTUnavailable as exc:
        raise UserError(str(exc)) from None
    features = detect_features(trt)
    precision = resolve_precision(options.precision, onnx_precision, precision_target(features),
                                  metadata.get(C.META_FOURIER))
    notes: list[str] = []
    if timing_cache and not features.timing_cache:
        notes.append(f"timing cache ignored: {features.flavour} has none (its timing cache calls are no-ops)")
    target = target_compute_capability(features, compute_capability)
    compute_capability = target if compute_capability else None  # ahead of time only when asked for
    strongly_typed = not features.weak_typing or (onnx_precision == "fp16" and features.strongly_typed_flag)
    fp16_flag = precision == "fp16" and not strongly_typed

    logger = make_logger(trt)
    builder = create_builder(trt, logger)
    network = create_network(trt, builder, features, strongly_typed=strongly_typed)
    parser = parse_onnx(trt, network, logger, str(onnx_path))
    parsed = network_facts(network, onnx_path.name).check()
    io_info = {name: {"mode": mode, "shape": list(tensor.dims), "dtype": "half" if tensor.dtype == "float16" else
                      "float" if tensor.dtype == "float32" else tensor.dtype}
               for mode, tensors in (("input", parsed.inputs), ("output", parsed.outputs))
               for name, tensor in tensors.items()}
    if parsed.outputs[C.OUTPUT].dtype != "float32":
        notes.append(f"output '{C.OUTPUT}' is {parsed.outputs[C.OUTPUT].dtype} in this ONNX; the contract says float32")
    # An fp32 ONNX carries unscaled Fourier units, so only an fp16 `fourier-scaled` export may leave them in fp16.
    fp16_policy = metadata.get(C.META_FP16_POLICY, C.DEFAULT_FP16_POLICY) if onnx_precision == "fp16" else C.DEFAULT_FP16_POLICY
    pinned = pin_fp32_layers(trt, network, fp16_policy) if fp16_flag else 0

    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else (b"" if cache_path else None)
    config_options = ConfigOptions(profiles=profiles, fp16_flag=fp16_flag, workspace_mib=options.workspace_mib,
                                   compute_capability=compute_capability,
                                   optimization_level=options.optimization_level, tf32=tf32, timing_cache=cache_bytes)
    config = create_config(trt, builder, features, config_options)
    build_start = time.perf_counter()
    engine_bytes = build_serialized(trt, builder, network, config, logger, options.workspace_mib)
    build_seconds = time.perf_counter() - build_start
    del parser  # kept alive until here: the parser owns the weights the network points at

    sidecar = make_sidecar(engine_path, engine_bytes, onnx_path, BuildFacts(
        flavour=features.flavour, version=features.version, precision=precision, onnx_precision=onnx_precision,
        strongly_typed=strongly_typed, pinned=pinned, tf32=tf32, compute_capability=target, profiles=profiles,
        io=io_info, workspace_mib=options.workspace_mib, optimization_level=options.optimization_level,
        build_seconds=build_seconds, metadata=metadata, notes=notes))
    side = write_engine_and_sidecar(engine_path, engine_bytes, sidecar)
    if cache_path and features.timing_cache:
        with atomic_output(cache_path) as tmp_cache:
            tmp_cache.write_bytes(serialized_timing_cache(config))
    return BuildReport(
        engine=str(engine_path), sidecar=str(side), engine_bytes=len(engine_bytes),
        seconds=round(time.perf_counter() - start, 2), peak_rss_mb=round(peak_rss_mb(), 1),
        flavour=features.flavour, tensorrt_version=features.version, precision=precision,
        strongly_typed=strongly_typed, fp32_pinned_layers=pinned, compute_capability=target,
        profiles=[p.as_lists() for p in profiles], notes=notes,
    )


# --- build target -------------------------------------------------------------------------------------------

def target_compute_capability(features, requested: str | None) -> str | None:
    """The GPUs the engine is for: the ahead-of-time target, else the build GPU's (None when it cannot be asked:
    the sidecar then records null, never a sentence in place of a number)."""
    if requested:
        return normalise_compute_capability(features, requested)
    if features.compute_capabilities and host.cuda_compute_capability() is None:  # TensorRT-RTX without a GPU
        raise UserError(f"no NVIDIA GPU here to build for; say which GPU will run the engine with "
                        f"--compute-capability X.Y (one of {', '.join(features.compute_capabilities)})")
    return host.cuda_compute_capability()
