"""A stand-in for Triton's python backend (`triton_python_backend_utils`: Tensor, InferenceResponse, TritonError,
get_input_tensor_by_name) and a loader that runs a repository's generated `model.py` as Triton would, for tests
that drive the python-backend models in process."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from test_triton import parse_pbtxt  # noqa: E402  (the text-format reader)


# -- a stand-in for the python backend's utilities -------------------------------------------------------------
class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self._array = name, np.asarray(array)

    @classmethod
    def from_dlpack(cls, name: str, array: np.ndarray) -> "_Tensor":
        return cls(name, np.from_dlpack(array))

    def as_numpy(self) -> np.ndarray:
        return self._array

    def __dlpack__(self, *args, **kwargs):
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class _Response:
    def __init__(self, output_tensors, error=None) -> None:
        self.outputs = {tensor.name: tensor.as_numpy() for tensor in output_tensors}
        self.error = error


class Request:
    def __init__(self, arrays: dict, parameters: dict | None = None) -> None:
        self.inputs = {name: _Tensor(name, array) for name, array in arrays.items()}
        self._parameters = json.dumps(parameters or {})

    def parameters(self) -> str:
        return self._parameters


def install_pb_utils() -> types.ModuleType:
    """Put the stand-in module where `import triton_python_backend_utils` finds it (undo with `remove_pb_utils`)."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = lambda message: message
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    sys.modules["triton_python_backend_utils"] = module
    return module


def remove_pb_utils() -> None:
    sys.modules.pop("triton_python_backend_utils", None)


def load_model(folder: Path) -> object:
    """The model of a repository folder as Triton loads it: its model.py's TritonPythonModel, initialised."""
    namespace: dict = {}
    exec(compile((folder / "1" / "model.py").read_text(), str(folder / "1" / "model.py"), "exec"), namespace)
    model = namespace["TritonPythonModel"]()
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    # Triton hands the model its config as JSON, parameters as a map; the reader lists every field's values
    config = {"parameters": {entry["key"][0]: {"string_value": entry["value"][0]["string_value"][0]}
                             for entry in config.get("parameters", [])}}
    model.initialize({"model_config": json.dumps(config), "model_repository": str(folder), "model_version": "1",
                      "model_instance_kind": "CPU"})
    return model


def answer(model: object, arrays: dict, parameters: dict | None = None) -> dict:
    response = model.execute([Request(arrays, parameters)])[0]
    assert response.error is None, response.error
    return response.outputs


