"""Raw-image Triton repositories: `--repo-kind python` (one model) and `--repo-kind ensemble` (pre -> model -> post).

Both serve the interface of `lama-deploy serve`: model `<name>` with inputs `image` UINT8 [H, W, 3] (RGB) and
`mask` UINT8 [H, W] (> threshold = hole), output `inpainted` UINT8 [H, W, 3], byte-identical to
`lama-deploy inpaint` with the same model and options.

    python:    <name>/config.pbtxt, <name>/1/model.py, <name>/1/<model file> (+ engine sidecar)
    ensemble:  <name> (platform "ensemble"), <name>_pre, <name>_model (the raw model of `triton.py`),
               <name>_post

Every config.pbtxt of these is written by `render_pbtxt` from plain dicts; each model folder is assembled in
a temporary folder and renamed into place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from lama_deploy import contract as C
from lama_deploy.engine_sidecar import sidecar_profiles, verify_sidecar
from lama_deploy.errors import InputNotFound, UserError

from lama_deploy.model_facts import read_model_facts

from ..backends import backend_for_path
from ..backends.base import Profile
from ..memory import MemoryCost, ort_cpu_cost
from ..options import InpaintOptions
from .model import model_py
from .pbtxt import Enum, assemble, check_output, new_output, render_pbtxt
from .repo import NAME_RE, assemble_raw_model, plan_triton_model, platform_for
from .steps import FILE_INPUTS, FILE_OUTPUT, STEP_TENSORS, step_parameters

#: ensemble step names, as suffixes of the ensemble's name
STEP_SUFFIXES = {"pre": "_pre", "model": "_model", "post": "_post"}
#: the python model warms up on a small random request (random mask: the model really runs)
WARMUP_SIDE = 64


def _tensor(name: str, data_type: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": Enum(data_type), "dims": dims}


RAW_INPUTS = [_tensor(C.IMAGE, "TYPE_UINT8", [-1, -1, 3]), _tensor(C.MASK, "TYPE_UINT8", [-1, -1])]
RAW_OUTPUTS = [_tensor(C.OUTPUT, "TYPE_UINT8", [-1, -1, 3])]
#: the python model takes the arrays or the encoded files (each pair optional) and gives the file back too
REQUEST_INPUTS = [{**tensor, "optional": True} for tensor in
                  RAW_INPUTS + [_tensor(FILE_INPUTS[C.IMAGE], "TYPE_STRING", [1]),
                                _tensor(FILE_INPUTS[C.MASK], "TYPE_STRING", [1])]]
RESULT_OUTPUTS = RAW_OUTPUTS + [_tensor(FILE_OUTPUT, "TYPE_STRING", [1])]


def _parameters(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "value": {"string_value": value}} for key, value in values.items()]


def _instances(count: int, kind: str) -> list[dict[str, Any]]:
    return [{"count": count, "kind": Enum(kind)}]


def raw_warmup() -> list[dict[str, Any]]:
    shape = {C.IMAGE: [WARMUP_SIDE, WARMUP_SIDE, 3], C.MASK: [WARMUP_SIDE, WARMUP_SIDE]}
    inputs = [{"key": C.IMAGE, "value": {"data_type": Enum("TYPE_UINT8"), "dims": shape[C.IMAGE], "zero_data": True}},
              {"key": C.MASK, "value": {"data_type": Enum("TYPE_UINT8"), "dims": shape[C.MASK], "random_data": True}}]
    return [{"name": f"random_{WARMUP_SIDE}x{WARMUP_SIDE}", "batch_size": 1, "inputs": inputs}]


def python_model_config(name: str, parameters: dict[str, str], instances: int, kind: str,
                        inputs: list[dict], outputs: list[dict], warmup: bool) -> dict[str, Any]:
    """A python-backend model without batching: every request keeps its own H and W."""
    return {"name": name, "backend": "python", "max_batch_size": 0, "input": inputs, "output": outputs,
            "instance_group": _instances(instances, kind), "parameters": _parameters(parameters),
            "model_warmup": raw_warmup() if warmup else None}


def ensemble_config(name: str) -> dict[str, Any]:
    pre, model, post = (name + STEP_SUFFIXES[s] for s in ("pre", "model", "post"))

    def mapping(pairs: dict[str, str]) -> list[dict[str, str]]:
        return [{"key": key, "value": value} for key, value in pairs.items()]

    feed = {STEP_TENSORS[n]: STEP_TENSORS[n] for n in C.INPUT_NAMES}
    steps = [
        {"model_name": pre, "model_version": -1, "input_map": mapping({C.IMAGE: C.IMAGE, C.MASK: C.MASK}),
         "output_map": mapping(feed)},
        {"model_name": model, "model_version": -1, "input_map": mapping({n: STEP_TENSORS[n] for n in C.INPUT_NAMES}),
         "output_map": mapping({C.OUTPUT: STEP_TENSORS[C.OUTPUT]})},
        {"model_name": post, "model_version": -1,
         "input_map": mapping({C.IMAGE: C.IMAGE, C.MASK: C.MASK, STEP_TENSORS[C.OUTPUT]: STEP_TENSORS[C.OUTPUT]}),
         "output_map": mapping({C.OUTPUT: C.OUTPUT})},
    ]
    return {"name": name, "platform": "ensemble", "max_batch_size": 0, "input": RAW_INPUTS, "output": RAW_OUTPUTS,
            "ensemble_scheduling": {"step": steps}}


def step_tensor(name: str) -> dict[str, Any]:
    """A float tensor between the steps: full NCHW shape (the ensemble itself does not batch)."""
    return _tensor(STEP_TENSORS[name], "TYPE_FP32", [-1, C.CHANNELS[name], -1, -1])


# --- writing ----------------------------------------------------------------------------------------------

@dataclass
class RepoResult:
    repository: str
    models: list[str]
    kind: str
    notes: list[str] = field(default_factory=list)


def model_files(model: Path) -> dict[str, Path]:
    """The model and, for an engine, its sidecar (the TensorRT backend verifies the engine against it)."""
    files = {f"1/{model.name}": model}
    sidecar = model.with_name(model.name + ".json")
    if sidecar.is_file():
        files[f"1/{sidecar.name}"] = sidecar
    return files


def write_python_repo(model: str | Path, output: str | Path, name: str = "lama", instances: int = 1,
                      kind: str = "KIND_CPU", options: InpaintOptions = InpaintOptions(), warmup: bool = True,
                      force: bool = False) -> RepoResult:
    """One python-backend model that runs `Inpainter.from_path(model, options)` inside Triton."""
    model, output = Path(model), Path(output)
    if not model.is_file():
        raise InputNotFound(f"model {model} does not exist; pass an .engine, .onnx or .ckpt file")
    chosen = backend_for_path(model, options.backend)
    if chosen == "tensorrt" and kind != "KIND_GPU":
        raise UserError("a TensorRT engine runs on GPU only; use --kind gpu or pass the ONNX model for --kind cpu")
    check_output(output, [name], force)
    parameters = {"model_file": model.name, **options.as_text()}
    config = python_model_config(name, parameters, instances, kind, REQUEST_INPUTS, RESULT_OUTPUTS, warmup)
    comments = ["written by lama-deploy triton-repo --repo-kind python", f"source: {model.name} ({chosen})",
                "raw images or encoded files in and out: what `lama-deploy inpaint` writes with the same options"]
    with new_output(output):
        assemble(output / name, {"config.pbtxt": render_pbtxt(config, comments),
                                 "1/model.py": model_py("InpaintModel"), **model_files(model)})
    return RepoResult(str(output), [name], "python")


def step_configs(name: str, parameters: dict[str, str], instances: int) -> dict[str, dict[str, Any]]:
    """config of the pre and post steps: same parameters, so both derive the same plan per request."""
    feed = [step_tensor(n) for n in C.INPUT_NAMES]
    return {
        name + STEP_SUFFIXES["pre"]: python_model_config(name + STEP_SUFFIXES["pre"], parameters, instances,
                                                        "KIND_CPU", RAW_INPUTS, feed, warmup=False),
        name + STEP_SUFFIXES["post"]: python_model_config(name + STEP_SUFFIXES["post"], parameters, instances,
                                                         "KIND_CPU", RAW_INPUTS + [step_tensor(C.OUTPUT)],
                                                         RAW_OUTPUTS, warmup=False),
    }


def engine_size_range(model: Path) -> tuple[Profile, tuple[int, int]]:
    """(H/W range of the engine's profile 0, its opt H/W) from the builder's sidecar: what the pre step
    must fit requests into, as the TensorRT backend of `Inpainter` does with the engine itself."""
    first = sidecar_profiles(verify_sidecar(model))[0]
    low, opt, high = first.min, first.opt, first.max
    return Profile.ranges(min_height=low[1], min_width=low[2], max_height=high[1], max_width=high[2]), (opt[1], opt[2])


def model_step_cost(model: Path, kind: str) -> Optional[MemoryCost]:
    """Host memory per pixel of the model step, as `Inpainter` budgets it: ONNX Runtime on CPU instances only
    (read from the export's metadata); GPU instances run in device memory."""
    if kind != "cpu" or platform_for(model) != "onnxruntime_onnx":
        return None
    return ort_cpu_cost(read_model_facts(model).metadata.get(C.META_SPEEDUPS, ""))


def write_ensemble_repo(model: str | Path, output: str | Path, name: str = "lama", max_batch: int = 4,
                        instances: int = 1, kind: str = "gpu", preferred_batch: tuple[int, ...] = (),
                        max_queue_delay_us: int = 100, options: InpaintOptions = InpaintOptions(),
                        force: bool = False) -> RepoResult:
    """`<name>` = ensemble of `<name>_pre` (python) -> `<name>_model` (TensorRT/ONNX Runtime) -> `<name>_post`.

    The pre step sends all crops of one image as one batch (up to `max_batch`) to the model step."""
    model, output = Path(model), Path(output)
    if not model.is_file():
        raise InputNotFound(f"model {model} does not exist; pass an .engine or .onnx file")
    names = [name] + [name + suffix for suffix in STEP_SUFFIXES.values()]
    if not NAME_RE.match(name):
        raise UserError(f"--name {name!r} is not a valid model folder name; use letters, digits, '_', '-' or '.'")
    if platform_for(model) == "tensorrt_plan":
        profile, warmup = engine_size_range(model)
    else:
        profile, warmup = Profile(), (512, 512)
    facts = read_model_facts(model)
    parameters = step_parameters(options, profile, model_step_cost(model, kind), max_batch,
                                 facts.metadata.get(C.META_WEIGHTS, ""))
    check_output(output, names, force)
    step_name = name + STEP_SUFFIXES["model"]
    spec, model_notes = plan_triton_model(model, output, step_name, max_batch, instances, kind, True, preferred_batch,
                                          max_queue_delay_us, force, warmup, require_fp32=True)
    comments = ["written by lama-deploy triton-repo --repo-kind ensemble", f"source: {model.name}",
                "raw images in and out: what `lama-deploy inpaint` writes with the same options"]
    with new_output(output):
        assemble_raw_model(output / step_name, spec, model)
        for step, config in step_configs(name, parameters, instances).items():
            class_name = "PreProcessModel" if step.endswith(STEP_SUFFIXES["pre"]) else "PostProcessModel"
            assemble(output / step, {"config.pbtxt": render_pbtxt(config, comments),
                                     "1/model.py": model_py(class_name)})
        assemble(output / name, {"config.pbtxt": render_pbtxt(ensemble_config(name), comments), "1/.keep": ""})
    notes = model_notes + ["the ensemble's python steps import lama_deploy: run them with `lama-deploy "
                             "triton-serve`, or install lama-deploy into the Triton container (docs/triton.md)"]
    return RepoResult(str(output), names, "ensemble", notes)
