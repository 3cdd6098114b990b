"""Python-backend models for Triton: the whole pipeline (`InpaintModel`), and the ensemble's two steps.

A repository's `model.py` is a one-line shim that imports one of these classes as `TritonPythonModel`, so the
code Triton runs is this module of the installed package (the stub's environment must import
`lama_deploy`; `lama-deploy triton-serve` arranges that, see docs/triton.md for the NGC container).

- `InpaintModel` (`--backend python`): `Inpainter.from_path(model).inpaint(image, mask)`, the very call of
  `lama-deploy inpaint`, so answers are byte-identical to the CLI with the same model and options.
- `PreProcessModel` / `PostProcessModel` (`--backend ensemble`): the Inpainter's own steps split around the
  model (`triton_steps`): load + plan + pad -> float NCHW for the model step; crop/upscale/paste/composite.

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
    data = np.from_dlpack(tensor) if _NUMPY2 else tensor.as_numpy()
    return np.array(data, copy=True)  # own the bytes: the request's memory is freed after


def output_tensor(pb: Any, name: str, array: np.ndarray) -> Any:
    array = np.array(array, order="C", copy=True)
    return pb.Tensor.from_dlpack(name, array) if _NUMPY2 else pb.Tensor(name, array)


class _RequestLoop(abc.ABC):
    """`execute` for any step: read named inputs, compute, answer each request on its own."""

    inputs: tuple[str, ...] = ()

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.config = json.loads(args["model_config"])
        self.params = config_parameters(self.config)
        self.setup(args)

    @abc.abstractmethod
    def setup(self, args: dict[str, Any]) -> None:
        """Each step's own initialisation (the Inpainter, or the step's options)."""

    @abc.abstractmethod
    def compute(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request's named inputs to its named outputs."""

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Any) -> Any:
        pb = self.pb
        try:
            arrays = {}
            for name in self.inputs:
                tensor = pb.get_input_tensor_by_name(request, name)
                if tensor is None:
                    raise ValueError(f"request has no input '{name}'")
                arrays[name] = input_array(tensor)
            outputs = self.compute(arrays)
            return pb.InferenceResponse(output_tensors=[output_tensor(pb, name, array)
                                                        for name, array in outputs.items()])
        except Exception as exc:  # one bad request must not take the others (or the server) down
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(one_line(exc)))


class InpaintModel(_RequestLoop):
    """The whole pipeline in one model, on the project's runtime (ONNX Runtime, TensorRT or PyTorch)."""

    inputs = (C.IMAGE, C.MASK)

    def setup(self, args: dict[str, Any]) -> None:
        from ..inpainter import Inpainter

        model = Path(args["model_repository"]) / str(args["model_version"]) / self.params["model_file"]
        options = steps.runtime_options(self.params)
        device = self.params.get("device") or None
        if device is None and args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args.get('model_instance_device_id', 0)}"
        self.inpainter = Inpainter.from_path(model, backend=self.params.get("backend") or "auto", device=device,
                                             max_pixels=options.max_pixels, threshold=options.threshold,
                                             max_side=options.max_side, context_margin=options.margin)

    def compute(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image, mask = steps.check_request(arrays[C.IMAGE], arrays[C.MASK])
        return {C.OUTPUT: self.inpainter.inpaint(image, mask).array}

    def finalize(self) -> None:
        inpainter = getattr(self, "inpainter", None)
        if inpainter is not None:
            inpainter.close()


class _StepModel(_RequestLoop):
    def setup(self, args: dict[str, Any]) -> None:
        self.options = steps.runtime_options(self.params)
        self.profile = steps.profile_from_parameters(self.params)


class PreProcessModel(_StepModel):
    """Ensemble step 1: raw image and mask -> the model's float NCHW feed (batch of one)."""

    inputs = (C.IMAGE, C.MASK)

    def compute(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        job = steps.plan_request(arrays[C.IMAGE], arrays[C.MASK], self.profile, self.options)
        feed = steps.model_feed(job, self.profile)
        return {steps.STEP_TENSORS[name]: feed[name] for name in C.INPUT_NAMES}


class PostProcessModel(_StepModel):
    """Ensemble step 3: the model's float output + the raw request -> the inpainted uint8 image."""

    inputs = (C.IMAGE, C.MASK, steps.STEP_TENSORS[C.OUTPUT])

    def compute(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        job = steps.plan_request(arrays[C.IMAGE], arrays[C.MASK], self.profile, self.options)
        return {C.OUTPUT: steps.finish(job, arrays[steps.STEP_TENSORS[C.OUTPUT]])}


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
