"""`lama-deploy triton-repo`: write a Triton Inference Server model repository for an engine or ONNX model.

Three kinds (`--backend`): `raw` (this module: the model alone, float NCHW tensors), and the raw-image
repositories `python` and `ensemble` (`triton_repo.py`: uint8 images in and out, as `lama-deploy serve`).

Raw layout (Triton's convention, one version "1"):

    DIR/<name>/config.pbtxt
    DIR/<name>/1/model.plan     (TensorRT engine, platform "tensorrt_plan")
    DIR/<name>/1/model.onnx     (ONNX, platform "onnxruntime_onnx")

Triton's batch dim is implicit (`max_batch_size` > 0), so the declared dims are the per-item [C, H, W] of the
contract with dynamic H and W. An engine's batch range comes from its sidecar `<engine>.json` (the builder's
profiles): `--max-batch` beyond the profile's max N would make Triton refuse the model at load time, so it is
refused here, where the message can say what to do. The model folder is assembled in a temporary folder and
renamed into place, so a failed run leaves no half-written model for Triton to pick up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lama_deploy import contract as C
from lama_deploy.engine_sidecar import sidecar_profiles, sidecar_tensorrt, sidecar_weights
from lama_deploy.model_facts import read_model_facts
from lama_deploy.profiles import batch_range

from ..backends import SUFFIX_BACKENDS
from lama_deploy.errors import InputNotFound, UserError

from .pbtxt import Enum, assemble, check_output, new_output, render_pbtxt

#: I/O dtypes as `lama_deploy.model_facts` names them -> Triton's.
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
#: `lama-deploy export` always writes a dynamic N (DYNAMIC_AXES); a fixed one comes from another exporter.
DYNAMIC_BATCH_HINT = "re-export it with `lama-deploy export` (its batch dim is dynamic) and rebuild any engine"
#: Triton platform per model suffix, from the runtime's own suffix table (so both accept the same files)
PLATFORMS = {suffix: {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx"}[backend]
             for suffix, backend in SUFFIX_BACKENDS.items() if backend != "torch"}
MODEL_FILES = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
#: what `--backend` writes (docs/triton.md): the model alone, or raw images in and out
REPO_KINDS = ("raw", "python", "ensemble")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TritonModelSpec:
    """Everything config.pbtxt says, independent of how it is written."""

    name: str
    platform: str
    max_batch_size: int
    instance_count: int = 1
    instance_kind: str = "KIND_GPU"
    dynamic_batching: bool = True
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 100
    #: per tensor; the contract's I/O is float32 (the fp16 export keeps fp32 I/O), a model may say otherwise
    data_types: dict[str, str] = field(default_factory=lambda: _fp32_everywhere())
    comments: list[str] = field(default_factory=list)
    #: (H, W) of a zero-filled batch-of-one warm-up request (TensorRT/ORT allocate on the first call)
    warmup_size: tuple[int, int] | None = None


def _fp32_everywhere() -> dict[str, str]:
    return dict.fromkeys(C.INPUT_NAMES + C.OUTPUT_NAMES, "TYPE_FP32")


@dataclass
class TritonRepoResult:
    model_dir: str
    config_path: str
    model_path: str
    platform: str
    max_batch_size: int
    notes: list[str] = field(default_factory=list)


# --- the engine's sidecar ------------------------------------------------------------------------------

def engine_batch_range(sidecar: dict[str, Any]) -> tuple[int, int]:
    """(smallest min N, largest max N) over the engine's optimisation profiles."""
    return batch_range(sidecar_profiles(sidecar))


def check_engine(engine: Path, max_batch: int) -> tuple[list[str], dict[str, str], str]:
    """Refuse what Triton's TensorRT backend would refuse at load time.

    Returns (notes for the user, Triton data type per tensor, weights label).
    """
    facts = read_model_facts(engine).check()
    sidecar = facts.sidecar
    trt = sidecar_tensorrt(sidecar)
    if trt.get("flavour") == "tensorrt_rtx":
        raise UserError(f"{engine.name} is a TensorRT-RTX engine; Triton's TensorRT backend cannot load it: build "
                        "the engine with TensorRT (`pip install tensorrt`) or serve the ONNX model instead")
    io = {**facts.inputs, **facts.outputs}
    fixed = [name for name, tensor in io.items() if tensor.fixed_batch is not None]
    if fixed:
        raise UserError(f"the engine has a fixed batch dim ({', '.join(sorted(fixed))}); Triton's batching needs a "
                        f"dynamic N: {DYNAMIC_BATCH_HINT}")
    unknown = {name: tensor.dtype for name, tensor in io.items() if tensor.dtype not in TRITON_DTYPES}
    if unknown:
        raise UserError(f"engine I/O types {unknown} have no Triton equivalent here; rebuild it from the exported ONNX")
    low, high = engine_batch_range(sidecar)
    if max_batch > high:
        raise UserError(f"--max-batch {max_batch} exceeds the engine's profile max batch {high}; use "
                        f"--max-batch {high} or rebuild the engine with a larger max N")
    if low > 1:
        raise UserError(f"the engine's smallest profile batch is {low}, but Triton sends batches from 1; rebuild "
                        "the engine with min N = 1")
    notes = []
    if trt.get("version"):
        notes.append(f"engine built with TensorRT {trt['version']}: run a Triton release that ships the same "
                     "TensorRT version (see docs/triton.md)")
    return notes, {name: TRITON_DTYPES[tensor.dtype] for name, tensor in io.items()}, sidecar_weights(sidecar)


def check_onnx(model: Path) -> tuple[list[str], dict[str, str], str]:
    """Contract I/O names, a dynamic batch dim (Triton's batching needs it), weights inside the file.

    Returns (notes, Triton data type per tensor, weights label).
    """
    facts = read_model_facts(model).check()
    data_types = {}
    for name, tensor in {**facts.inputs, **facts.outputs}.items():
        if tensor.fixed_batch is not None:
            raise UserError(f"{model.name}: {name} has a fixed batch dim {tensor.fixed_batch}; Triton's batching "
                            f"needs a dynamic N: {DYNAMIC_BATCH_HINT}")
        if tensor.dtype not in TRITON_DTYPES:
            raise UserError(f"{model.name}: {name} is {tensor.dtype}, not float32/float16; export it with `lama-deploy export`")
        data_types[name] = TRITON_DTYPES[tensor.dtype]
    if facts.external_data:
        raise UserError(f"{model.name} keeps its weights in external data files, which this command does not copy; "
                        "re-export below 2 GB or copy the data files into the model's version folder by hand")
    return [], data_types, facts.metadata.get(C.META_WEIGHTS, "")


# --- config.pbtxt ------------------------------------------------------------------------------------------

def config_fields(spec: TritonModelSpec) -> dict[str, Any]:
    """Triton's ModelConfig of the raw model as plain fields (written by `render_pbtxt`, as every config here)."""
    def tensor(name: str) -> dict[str, Any]:
        return {"name": name, "data_type": Enum(spec.data_types[name]), "dims": [C.CHANNELS[name], -1, -1]}

    batching = None
    if spec.dynamic_batching:
        batching = {"preferred_batch_size": spec.preferred_batch_sizes or None,
                    "max_queue_delay_microseconds": spec.max_queue_delay_us}
    warmup = None
    if spec.warmup_size:
        height, width = spec.warmup_size
        inputs = [{"key": name, "value": {"data_type": Enum(spec.data_types[name]),
                                          "dims": [C.CHANNELS[name], height, width], "zero_data": True}}
                  for name in C.INPUT_NAMES]
        warmup = [{"name": f"zeros_{height}x{width}", "batch_size": 1, "inputs": inputs}]
    return {"name": spec.name, "platform": spec.platform, "max_batch_size": spec.max_batch_size,
            "input": [tensor(n) for n in C.INPUT_NAMES], "output": [tensor(n) for n in C.OUTPUT_NAMES],
            "instance_group": [{"count": spec.instance_count, "kind": Enum(spec.instance_kind)}],
            "dynamic_batching": batching, "model_warmup": warmup}


def render_config(spec: TritonModelSpec) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    return render_pbtxt(config_fields(spec), spec.comments)


# --- the repository ----------------------------------------------------------------------------------------

def platform_for(model: Path) -> str:
    platform = PLATFORMS.get(model.suffix.lower())
    if platform is None:
        raise UserError(f"cannot tell what {model.name} is from its extension; pass a TensorRT engine "
                        f"(.engine/.plan/.trt) or an ONNX model (.onnx)")
    return platform


def _check_options(name: str, max_batch: int, instances: int, kind: str, platform: str,
                   preferred: Sequence[int], max_queue_delay_us: int) -> None:
    if not NAME_RE.match(name):
        raise UserError(f"--name {name!r} is not a valid model folder name; use letters, digits, '_', '-' or '.'")
    if max_batch < 1:
        raise UserError(f"--max-batch must be >= 1, got {max_batch}")
    if instances < 1:
        raise UserError(f"--instances must be >= 1, got {instances}")
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r} is not one of {sorted(KINDS)}")
    if platform == "tensorrt_plan" and kind != "gpu":
        raise UserError("a TensorRT engine runs on GPU only; use --kind gpu or pass the ONNX model for --kind cpu")
    bad = [n for n in preferred if not 1 <= n <= max_batch]
    if bad:
        raise UserError(f"--preferred-batch {bad} must lie in 1..{max_batch} (--max-batch)")
    if max_queue_delay_us < 0:
        raise UserError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")


def write_triton_repo(model: str | Path, output: str | Path, name: str = "lama", max_batch: int = 4,
                      instances: int = 1, kind: str = "gpu", dynamic_batching: bool = True,
                      preferred_batch: Sequence[int] = (), max_queue_delay_us: int = 100,
                      force: bool = False, warmup_size: tuple[int, int] | None = None,
                      require_fp32: bool = False) -> TritonRepoResult:
    """Check `model` against the options and write `output/<name>/` atomically (nothing when a check fails)."""
    model, output = Path(model), Path(output)
    spec, notes = plan_triton_model(model, output, name, max_batch, instances, kind, dynamic_batching,
                                    preferred_batch, max_queue_delay_us, force, warmup_size, require_fp32)
    final = output / name
    with new_output(output):
        assemble_raw_model(final, spec, model)
    return TritonRepoResult(str(final), str(final / "config.pbtxt"), str(final / "1" / MODEL_FILES[spec.platform]),
                            spec.platform, max_batch, notes)


def plan_triton_model(model: Path, output: Path, name: str, max_batch: int, instances: int, kind: str,
                      dynamic_batching: bool, preferred_batch: Sequence[int], max_queue_delay_us: int, force: bool,
                      warmup_size: tuple[int, int] | None, require_fp32: bool) -> tuple[TritonModelSpec, list[str]]:
    """Every check of a raw model folder, and its spec; writes nothing."""
    if not model.is_file():
        raise InputNotFound(f"model {model} does not exist; pass an .engine or .onnx file")
    platform = platform_for(model)
    _check_options(name, max_batch, instances, kind, platform, preferred_batch, max_queue_delay_us)
    notes, dtypes, label = check_engine(model, max_batch) if platform == "tensorrt_plan" else check_onnx(model)
    if require_fp32 and set(dtypes.values()) != {"TYPE_FP32"}:
        raise UserError(f"{model.name} has I/O types {dtypes}; the ensemble's steps exchange float32: export with "
                        "`lama-deploy export` (fp16 exports keep fp32 I/O) or use --repo-kind python")
    check_output(output, [name], force)

    comments = ["written by lama-deploy triton-repo", f"source: {model.name}", C.SIZE_RULE,
                "dynamic batching groups only requests of the same H and W"]
    if label:
        comments.append(f"weights: {label}")
    spec = TritonModelSpec(name=name, platform=platform, max_batch_size=max_batch, instance_count=instances,
                           instance_kind=KINDS[kind], dynamic_batching=dynamic_batching,
                           preferred_batch_sizes=sorted(set(preferred_batch)), max_queue_delay_us=max_queue_delay_us,
                           data_types=dtypes, comments=comments, warmup_size=warmup_size)
    return spec, notes


def assemble_raw_model(final: Path, spec: TritonModelSpec, model: Path) -> None:
    """Build the model folder next to `final`, then swap it in with renames only."""
    assemble(final, {f"1/{MODEL_FILES[spec.platform]}": model, "config.pbtxt": render_config(spec)})


def repo_kind(model: Path, backend: str, kind: str) -> str:
    """`auto`: the ensemble where Triton's own backends run the model (engines, ONNX on GPUs), else python."""
    if backend != "auto":
        return backend
    return "ensemble" if model.suffix.lower() in PLATFORMS and (kind == "gpu" or PLATFORMS[model.suffix.lower()]
                                                                  == "tensorrt_plan") else "python"
