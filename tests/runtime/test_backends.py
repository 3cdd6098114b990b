"""The shared Backend interface, ONNX Runtime and PyTorch backends, and backend selection."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from lama_deploy import contract as C
from lama_deploy.errors import UserError
from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.backends import BackendError, backend_for_path, create_backend
from lama_deploy.model_facts import facts_from_io
from lama_deploy.runtime.backends.ort_backend import OnnxRuntimeBackend, choose_providers

FEED = {C.IMAGE: np.random.default_rng(0).random((1, 3, 16, 24), dtype=np.float32),
        C.MASK: np.zeros((1, 1, 16, 24), np.float32)}


@pytest.mark.parametrize("name, backend", [("m.engine", "tensorrt"), ("m.PLAN", "tensorrt"), ("m.onnx", "onnxruntime"),
                                           ("m.ckpt", "torch"), ("m.pt", "torch"), ("m.pth", "torch")])
def test_backend_is_chosen_by_suffix(name, backend):
    assert backend_for_path(name) == backend
    assert backend_for_path(name, "torch") == "torch"


def test_unknown_suffix_or_backend_is_one_clear_error():
    with pytest.raises(ValueError, match="cannot tell the backend of m.bin"):
        backend_for_path("m.bin")
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        backend_for_path("m.onnx", "tflite")


def test_provider_preference_order():
    everything = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "AzureExecutionProvider"]
    assert choose_providers(everything) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider", "AzureExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(everything, device="cpu") == ["CPUExecutionProvider"]
    assert choose_providers(everything, device="cuda:1")[1] == ("CUDAExecutionProvider", {"device_id": 1})
    assert choose_providers(everything, requested=["CUDAExecutionProvider"]) == ["CUDAExecutionProvider"]
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], device="cuda")
    with pytest.raises(BackendError, match="unknown device 'gpu'"):
        choose_providers(everything, device="gpu")
    with pytest.raises(BackendError, match="no TensorrtExecutionProvider"):
        choose_providers(["CPUExecutionProvider"], requested=["TensorrtExecutionProvider"])


def test_backend_lifecycle_and_feed_checks(tiny_onnx):
    backend = OnnxRuntimeBackend(tiny_onnx)
    with pytest.raises(RuntimeError, match="not active"):
        backend.infer(FEED)
    with backend:
        assert backend.is_active and backend.profile.min_height == C.MIN_SIDE
        out = backend.infer({C.IMAGE: FEED[C.IMAGE].astype(np.float64), C.MASK: FEED[C.MASK]})[C.OUTPUT]
        assert out.shape == (1, 3, 16, 24) and out.dtype == np.float32
        np.testing.assert_allclose(out, FEED[C.IMAGE], atol=1e-6)  # empty mask: the model passes the image through
        with pytest.raises(ValueError, match="missing input 'mask'"):
            backend.infer({C.IMAGE: FEED[C.IMAGE]})
        with pytest.raises(ValueError, match=r"expected \[N,1,H,W\]"):
            backend.infer({C.IMAGE: FEED[C.IMAGE], C.MASK: FEED[C.IMAGE]})
    assert not backend.is_active and backend.session is None


def test_onnx_that_is_not_lama_is_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(BackendError) as excinfo:
        Inpainter.from_path(path)
    message = str(excinfo.value)
    assert "\n" not in message and "is not a lama-deploy inpainting model" in message and "['x']" in message


def test_corrupt_or_missing_onnx_is_one_line(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(BackendError) as excinfo:
        Inpainter.from_path(path)
    assert str(excinfo.value).startswith(f"cannot load ONNX model {path}") and "\n" not in str(excinfo.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Inpainter.from_path(tmp_path / "missing.onnx")


def test_io_contract_and_random_weights_label():
    nchw = (-1, 3, -1, -1)
    assert C.io_problem(facts_from_io("m.onnx", "onnx", {"mask": (-1, 1, -1, -1), "image": nchw}, {"inpainted": nchw})) is None
    assert "m.onnx is not a lama-deploy inpainting model" in C.io_problem(facts_from_io("m.onnx", "onnx", {"input": nchw},
                                                                                           {"output": nchw}))
    assert C.is_random_weights("random weights (seed 0) - NOT trained LaMa") and C.is_random_weights(C.RANDOM_WEIGHTS_LABEL)
    assert C.is_random_weights({C.META_RANDOM_SEED: "3", C.META_WEIGHTS: "in-memory model"})
    assert not C.is_random_weights("checkpoint big-lama.ckpt") and not C.is_random_weights(None)
    assert not C.is_random_weights({C.META_WEIGHTS: "checkpoint big-lama.ckpt"})


def test_torch_backend_loads_a_checkpoint(tmp_path, tiny_model, tiny_onnx):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_model.generator.state_dict(), path)
    rgb = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 6:20] = 1
    with Inpainter.from_path(path, device="cpu") as from_ckpt, Inpainter.from_path(tiny_onnx) as from_onnx:
        assert from_ckpt.info()["backend"] == "torch" and from_ckpt.info()["device"] == "cpu"
        assert from_ckpt.weights == "checkpoint tiny.pth"
        a = np.asarray(from_ckpt.inpaint(rgb, mask).image).astype(int)
        b = np.asarray(from_onnx.inpaint(rgb, mask).image).astype(int)
    assert np.abs(a - b).max() <= 1


def test_torch_backend_refuses_cuda_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the refusal is for machines without one")
    with pytest.raises(BackendError, match="--device cpu"):
        Inpainter.from_random_weights("tiny", device="cuda")


def test_bad_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises((UserError, ValueError)) as excinfo:
        create_backend(path)
    assert "\n" not in str(excinfo.value)
