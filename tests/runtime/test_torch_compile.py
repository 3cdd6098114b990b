"""`torch.compile` in the PyTorch backend (`compile` = off | default | max-autotune), on CPU with the tiny model."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lama_deploy.runtime.backends import BackendError, create_backend
from lama_deploy.runtime.backends.pytorch import precision as tp
from lama_deploy.runtime.backends.pytorch.backend import TorchBackend
from lama_model import random_model
from lama_model.synthetic import sample_batch


def _feed(batch: int = 1, size: int = 64) -> dict[str, np.ndarray]:
    image, mask = sample_batch(batch, size, size, seed=3)
    return {"image": image, "mask": mask}


def test_compile_modes_are_validated_in_one_line_and_map_to_inductor_modes() -> None:
    with pytest.raises(BackendError, match="--compile takes off, default, max-autotune, not 'fast'") as excinfo:
        tp.resolve_mode("cpu", compile="fast")
    assert "\n" not in str(excinfo.value)
    assert tp.resolve_mode("cpu").compile_kwargs is None and tp.resolve_mode("cpu").compile == "off"
    assert tp.resolve_mode("cpu", compile="default").compile_kwargs == {"mode": None, "dynamic": False,
                                                                       "fullgraph": False}
    # Inductor's own CUDA graphs would be captured inside the backend's: not with --cuda-graphs on.
    assert tp.resolve_mode("cuda", compile="max-autotune").compile_kwargs["mode"] == "max-autotune-no-cudagraphs"
    assert tp.resolve_mode("cuda", compile="max-autotune", cuda_graphs="off").compile_kwargs["mode"] == "max-autotune"
    assert tp.resolve_mode("cpu", compile="default").describe()["compile"] == "default"


def test_cli_server_and_library_take_the_option(tmp_path) -> None:
    """One declaration (`runtime.options`): the same flag and choices in inpaint and serve, the library keyword,
    and the backend mode it turns into."""
    from lama_deploy.runtime.inpainter import torch_mode
    from lama_deploy.runtime.options import InpaintOptions, OptionError
    from lama_deploy.scripts.commands import inpaint, serve
    from lama_deploy.scripts.commands.arguments import options_from_args

    args = inpaint.build_parser().parse_args(["a.png", "m.png", "-o", "o.png", "--model", "m.pth", "--compile", "default"])
    assert options_from_args(args).compile == "default"
    assert serve.build_parser().parse_args(["--model", "m.pth", "--compile", "max-autotune"]).compile == "max-autotune"
    assert InpaintOptions().compile == "off" and torch_mode(InpaintOptions())["compile"] is None
    assert torch_mode(InpaintOptions.create(compile="default"))["compile"] == "default"
    with pytest.raises(OptionError, match="compile 'fast' is not one of off, default, max-autotune"):
        InpaintOptions.create(compile="fast")
    path = tmp_path / "tiny.pth"
    torch.save(random_model("tiny", seed=0).state_dict(), path)
    assert create_backend(path, device="cpu", compile="default").mode.compile == "default"
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"")
    create_backend(onnx, compile="off")  # the default is no PyTorch-only request
    with pytest.raises(BackendError, match="compile=default applies to the PyTorch backend"):
        create_backend(onnx, compile="default")


def test_a_failing_compile_is_one_line_naming_the_way_out(monkeypatch) -> None:
    def broken(function, **options):
        def run(*args):
            raise RuntimeError("inductor: no C compiler found\nlong traceback")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with TorchBackend(random_model("tiny", seed=0), device="cpu", compile="default") as backend:
        with pytest.raises(BackendError) as excinfo:
            backend.infer(_feed())
    assert str(excinfo.value) == ("--compile default failed on the first call (RuntimeError: inductor: no C compiler "
                                  "found); run with --compile off")


def test_first_call_is_timed_apart_and_eager_is_unchanged() -> None:
    with TorchBackend(random_model("tiny", seed=0), device="cpu") as backend:
        backend.infer(_feed())
        backend.infer(_feed())
        facts = backend.describe()
    assert facts["compile"] == "off" and list(facts["first_call_s"]) == ["1x3x64x64"]
    assert facts["first_call_s"]["1x3x64x64"] > 0


@pytest.mark.slow
def test_compiled_tiny_model_matches_eager_on_cpu() -> None:
    """Inductor on CPU (needs a C compiler): the compiled forward gives eager's output within fp32 rounding, the
    compile lands in the first call of each shape, and the second call of a shape is the steady state."""
    torch._dynamo.reset()
    model = random_model("tiny", seed=0)
    feed = _feed()
    with TorchBackend(model, device="cpu") as eager:
        expected = eager.infer(feed)["inpainted"]
    with TorchBackend(model, device="cpu", compile="default") as compiled:
        got = compiled.infer(feed)["inpainted"]
        start = time.perf_counter()
        again = compiled.infer(feed)["inpainted"]
        steady = time.perf_counter() - start
        first = compiled.describe()["first_call_s"]["1x3x64x64"]
    error = float(np.abs(got - expected).max())
    assert error <= 1e-5 and np.array_equal(got, again), f"compiled vs eager: {error:.3e}"
    assert first > steady, (first, steady)
