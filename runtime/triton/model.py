"""Python-backend models for Triton: the whole pipeline (`InpaintModel`), and the ensemble's two steps.

A repository's `model.py` is a one-line shim that imports one of these classes as `TritonPythonModel`, so the
code Triton runs is this module of the installed package (the stub's environment must import
`lama_deploy`; `lama-deploy triton-serve` arranges that, see docs/triton.md for the NGC container).

- `InpaintModel` (`--repo-kind python`): `Inpainter.from_path(model).inpaint(image, mask)`, the very call of
  `lama-deploy inpaint`, so answers are byte-identical to the CLI with the same model and options.
- `PreProcessModel` / `PostProcessModel` (`--repo-kind ensemble`): the Inpainter's own steps split around the
  model (`steps`, over `Pipeline`): prepare + batches -> float NCHW for the model step; scatter + finish.

Every request of a batch gets its own response: a failing one answers a one-line `TritonError`, the others
and the server carry on. `triton_python_backend_utils` exists only inside Triton, so it is imported there.
"""

from __future__ import annotations

import abc

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lama_deploy import contract as C

from . import steps


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def config_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """`parameters { key: ... value { string_value: ... } }` of a config as a plain dict."""
    return {key: value.get("string_value", "") for key, value in (model_config.get("parameters") or {}).items()}


# Tensors cross the stub through DLPack, not `as_numpy()` / `Tensor(name, array)`: the numpy bridge of the
# bundled stub (pybind11 built against numpy 1) misreads numpy 2 arrays (item size 0: empty outputs, and
# scrambled inputs); DLPack carries dtype, shape and strides itself and works with numpy 1 and 2.

#: The python-backend stub's numpy bridge is built for numpy 1.x. Under numpy 2 `as_numpy()` scrambles the data
#: and `Tensor(name, array)` sends empty outputs, so tensors cross by DLPack there; under numpy 1.x the stub
#: refuses numpy's DLPack capsules ("PyCapsule_GetPointer called with incorrect name"), so the plain bridge.
_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def input_array(tensor: Any) -> np.ndarray:
    try:
        data = np.from_dlpack(tensor) if _NUMPY2 else tensor.as_numpy()
    except (TypeError, BufferError, RuntimeError, ValueError):  # BYTES tensors (encoded files) have no DLPack form
        data = tensor.as_numpy()
    return np.array(data, copy=True)  # own the bytes: the request's memory is freed after


def output_tensor(pb: Any, name: str, array: np.ndarray) -> Any:
    array = np.array(array, order="C", copy=True)
    if array.dtype == object:  # BYTES (the encoded result file): DLPack cannot carry Python objects
        return pb.Tensor(name, array)
    return pb.Tensor.from_dlpack(name, array) if _NUMPY2 else pb.Tensor(name, array)


class _RequestLoop(abc.ABC):
    """`execute` for any step: read named inputs, compute, answer each request on its own."""

    inputs: tuple = ()  # required inputs
    optional_inputs: tuple = ()

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.config = json.loads(args["model_config"])
        self.params = config_parameters(self.config)
        self.setup(args)

    @abc.abstractmethod
    def setup(self, args: dict) -> None:
        """Each step's own initialisation (the Inpainter, or the step's pipeline)."""

    @abc.abstractmethod
    def compute(self, arrays: dict, parameters: Any) -> dict:
        """One request's named inputs (and its parameters, JSON) to its named outputs."""

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Any) -> Any:
        pb = self.pb
        try:
            arrays = {}
            for name in self.inputs + self.optional_inputs:
                tensor = pb.get_input_tensor_by_name(request, name)
                if tensor is None:
                    if name in self.inputs:
                        raise ValueError(f"request has no input '{name}'")
                    continue
                arrays[name] = input_array(tensor)
            parameters = request.parameters() if hasattr(request, "parameters") else None
            outputs = self.compute(arrays, parameters)
            return pb.InferenceResponse(output_tensors=[output_tensor(pb, name, array)
                                                        for name, array in outputs.items()])
        except Exception as exc:  # one bad request must not take the others (or the server) down
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(one_line(exc)))


#: every raw-image model reads the UINT8 arrays or the encoded files (steps.request_sources)
_REQUEST_INPUTS = (C.IMAGE, C.MASK) + tuple(steps.FILE_INPUTS.values())


class InpaintModel(_RequestLoop):
    """The whole pipeline in one model, on the project's runtime (ONNX Runtime, TensorRT or PyTorch)."""

    optional_inputs = _REQUEST_INPUTS

    def setup(self, args: dict) -> None:
        from ..inpainter import Inpainter

        model = Path(args["model_repository"]) / str(args["model_version"]) / self.params["model_file"]
        options = steps.options_from_parameters(self.params)
        if options.device is None and args.get("model_instance_kind") == "GPU":
            options = options.replace(device=f"cuda:{args.get('model_instance_device_id', 0)}")
        self.inpainter = Inpainter.from_path(model, options)

    def compute(self, arrays: dict, parameters: Any) -> dict:
        image, mask, as_files = steps.request_sources(arrays)
        options = steps.request_options(self.inpainter.options, parameters)
        result = self.inpainter.inpaint(image, mask, options=options)
        return steps.result_outputs(result.image, as_files, self.inpainter.weights or "")

    def finalize(self) -> None:
        inpainter = getattr(self, "inpainter", None)
        if inpainter is not None:
            inpainter.close()


class _StepModel(_RequestLoop):
    optional_inputs = _REQUEST_INPUTS

    def setup(self, args: dict) -> None:
        self.pipeline, self.max_batch = steps.pipeline_from_parameters(self.params)
        self.weights = self.params.get(steps.WEIGHTS_KEY, "")


class PreProcessModel(_StepModel):
    """Ensemble step 1: the request -> the model's float NCHW feed (the image's crops as one batch)."""

    def compute(self, arrays: dict, parameters: Any) -> dict:
        image, mask, _ = steps.request_sources(arrays)
        options = steps.request_options(self.pipeline.options, parameters)
        feed = steps.pre_step(self.pipeline, image, mask, options, self.max_batch)
        return {steps.STEP_TENSORS[name]: feed[name] for name in C.INPUT_NAMES}


class PostProcessModel(_StepModel):
    """Ensemble step 3: the model's float output + the same request -> the inpainted image."""

    inputs = (steps.STEP_TENSORS[C.OUTPUT],)

    def compute(self, arrays: dict, parameters: Any) -> dict:
        image, mask, as_files = steps.request_sources({k: v for k, v in arrays.items() if k in _REQUEST_INPUTS})
        options = steps.request_options(self.pipeline.options, parameters)
        result = steps.post_step(self.pipeline, image, mask, arrays[steps.STEP_TENSORS[C.OUTPUT]], options,
                                 self.max_batch)
        return steps.result_outputs(result, as_files, self.weights)


#: class name per repository step, for the model.py shims
MODEL_CLASSES: dict[str, Callable[[], _RequestLoop]] = {
    "InpaintModel": InpaintModel, "PreProcessModel": PreProcessModel, "PostProcessModel": PostProcessModel,
}


#: the python backend's stub runs an isolated interpreter that ignores PYTHONPATH; the shims honour this one
PATH_ENV = "LAMA_PYTHONPATH"


def model_py(class_name: str) -> str:
    """The text of a repository's `model.py`: Triton imports `TritonPythonModel` from it."""
    if class_name not in MODEL_CLASSES:
        raise ValueError(f"unknown python-backend model {class_name!r}")
    return (f'"""Written by `lama-deploy triton-repo`: the code is lama_deploy.runtime.triton.model.{class_name}.\n\n'
            f"The stub's interpreter ignores PYTHONPATH; `lama-deploy triton-serve` passes the folder that holds\n"
            f'lama_deploy in ${PATH_ENV}. In a container with lama-deploy installed nothing needs setting."""\n\n'
            "import os\nimport sys\n\n"
            f'for _entry in reversed(os.environ.get("{PATH_ENV}", "").split(os.pathsep)):\n'
            "    if _entry and _entry not in sys.path:\n"
            "        sys.path.insert(0, _entry)\n\n"
            f"from lama_deploy.runtime.triton.model import {class_name} as TritonPythonModel  # noqa: E402,F401\n")
