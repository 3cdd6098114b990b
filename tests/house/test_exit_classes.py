"""A backend crash is not the user's input: `InferenceError` exits 3 with its traceback, not 2."""

from __future__ import annotations

from lama_deploy.errors import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, UserError, cli_entry, user_message
from lama_deploy.runtime.backends import BackendError
from lama_deploy.runtime.inpainter import InferenceError


def test_inference_error_is_internal(capsys) -> None:
    crash = InferenceError("onnxruntime inference failed on (1, 3, 64, 64): bad_alloc")
    assert not isinstance(crash, UserError) and user_message(crash) is None

    @cli_entry("lama-deploy inpaint")
    def crashes(argv=None) -> int:
        raise crash

    @cli_entry("lama-deploy inpaint")
    def refuses(argv=None) -> int:
        raise BackendError("cannot load ONNX model x.onnx: bad file; re-export it")

    assert crashes([]) == EXIT_INTERNAL_ERROR == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "InferenceError: onnxruntime inference failed" in err
    assert refuses([]) == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lama-deploy inpaint: error: cannot load ONNX model x.onnx: bad file; re-export it"]
