"""The PyTorch backend's precision / CUDA-graph modes on CPU: validation, policy placement, CLI/server/API."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from lama_deploy.runtime.backends import BackendError, create_backend
from lama_deploy.runtime.backends.pytorch import precision as tp
from lama_deploy.runtime.backends.pytorch.backend import TorchBackend
from lama_deploy.runtime.inpainter import Inpainter
from lama_model import random_model


def _pair(h=40, w=52, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[8:24, 10:30] = 255
    return rgb, mask


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "fp16"}, "--precision fp16 needs a CUDA device"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"cuda_graphs": "on"}, "--cuda-graphs on needs a CUDA device"),
    ({"cuda_graphs": "maybe"}, "--cuda-graphs takes auto, on, off"),
    ({"precision": "bf16", "policy": "no-such-policy"}, "unknown fp16 policy"),
    ({"precision": "fp32", "policy": "fourier-scaled"}, "applies to --precision fp16/bf16 only"),
])
def test_mode_matrix_refusals_are_one_line(kwargs, message):
    with pytest.raises(BackendError, match=message) as excinfo:
        tp.resolve_mode("cpu", **kwargs)
    assert "\n" not in str(excinfo.value)


def test_mode_defaults_per_device():
    cpu = tp.resolve_mode("cpu")
    assert (cpu.precision, cpu.policy, cpu.cuda_graphs) == ("fp32", None, False) and "off on CPU" in cpu.note
    assert tp.resolve_mode("cpu", "bf16").policy == "fourier-fp32"
    cuda = tp.resolve_mode("cuda", "fp16", cuda_graphs="auto")  # validation only: nothing touches a GPU
    assert (cuda.precision, cuda.policy, cuda.cuda_graphs) == ("fp16", "fourier-fp32", True)
    assert tp.resolve_mode("cuda:1", cuda_graphs=False).cuda_graphs is False
    assert tp.PRECISIONS == ("fp32", "fp16", "bf16")


def test_scaled_policy_folds_the_exports_scale_and_refuses_cufft(monkeypatch):
    import lama_model.precision as lama_precision
    from lama_model import set_fourier_mode

    folded = []
    fold = lama_precision.fold_fourier_scale
    monkeypatch.setattr(lama_precision, "fold_fourier_scale", lambda model, scale: folded.append(scale) or fold(model, scale))
    mode = tp.resolve_mode("cpu", "bf16", policy="fourier-scaled")
    tp.apply_policy(set_fourier_mode(random_model("tiny", seed=0), "matmul"), mode)
    assert folded == [lama_precision.choose_fourier_scale()] == [256.0]
    # cuFFT sums before it normalises: scaled half-precision units still overflow there (H200, 2048 px).
    with pytest.raises(BackendError, match="'fourier-scaled' needs a DFT-as-matmul Fourier form"):
        tp.apply_policy(random_model("tiny", seed=0), mode)


def test_bf16_policy_keeps_fourier_units_fp32_and_convs_bf16():
    """Forward hooks record each module's output dtype under the backend's autocast."""
    model = random_model("tiny", seed=0).eval()
    mode = tp.resolve_mode("cpu", "bf16")
    tp.apply_policy(model, mode)
    tp.apply_policy(model, mode)  # idempotent: no island inside an island
    seen: dict[str, set] = {"fourier": set(), "conv": set(), "fourier_conv": set()}
    units = set(tp.fourier_units(model))
    inner = {m for u in units for m in u.modules()}

    def record(kind):
        return lambda _m, _i, out: seen[kind].add(out.dtype)

    hooks = [u.register_forward_hook(record("fourier")) for u in units]
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(record("fourier_conv" if m in inner else "conv")))
    image, mask = torch.rand(1, 3, 64, 64), (torch.rand(1, 1, 64, 64) > 0.7).float()
    with torch.inference_mode(), tp.autocast_context(mode):
        out = model(image, mask)
    for hook in hooks:
        hook.remove()
    assert len(units) > 0 and seen["fourier"] == {torch.float32} and seen["fourier_conv"] == {torch.float32}
    assert seen["conv"] == {torch.bfloat16}
    assert out.dtype == torch.float32 and torch.equal(out[mask.expand_as(out) == 0], image[mask.expand_as(out) == 0])


def test_bf16_on_cpu_matches_fp32_outside_and_close_inside():
    rgb, mask = _pair()
    results = {}
    for precision in ("fp32", "bf16"):
        with Inpainter.from_random_weights("tiny", device="cpu", precision=precision) as inpainter:
            results[precision] = np.asarray(inpainter.inpaint(rgb, mask).image)
            assert inpainter.backend.describe()["precision"] == precision
    outside = mask == 0
    for image in results.values():
        assert np.array_equal(image[outside], rgb[outside])
    hole_error = np.abs(results["bf16"].astype(int) - results["fp32"].astype(int))[~outside].mean()
    assert hole_error <= 3.0  # levels of 255; tiny random weights, bf16 has 8 mantissa bits


def test_create_backend_routes_modes(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(random_model("tiny", seed=0).state_dict(), path)
    backend = create_backend(path, device="cpu", precision="bf16", cuda_graphs="off")
    assert isinstance(backend, TorchBackend) and backend.mode.precision == "bf16"
    with pytest.raises(BackendError, match="fp16 needs a CUDA device"):
        create_backend(path, device="cpu", precision="fp16")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"")
    with pytest.raises(BackendError, match="applies to the PyTorch backend"):
        create_backend(onnx, precision="bf16")
    with pytest.raises(TypeError, match="unknown PyTorch backend option"):
        TorchBackend.from_random_weights("tiny", device="cpu", colour="blue")


def test_cli_and_server_accept_the_options(tmp_path, capsys):
    from lama_deploy.scripts.commands import inpaint as cli, serve as server

    args = server.build_parser().parse_args(["--model", "m.pth", "--precision", "bf16", "--cuda-graphs", "off"])
    assert (args.precision, args.cuda_graphs) == ("bf16", "off")
    path = tmp_path / "tiny.pth"
    torch.save(random_model("tiny", seed=0).state_dict(), path)
    from PIL import Image

    rgb, mask = _pair()
    Image.fromarray(rgb).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    base = [str(tmp_path / "in.png"), str(tmp_path / "mask.png"), "--model", str(path), "--device", "cpu"]
    assert cli.main(base + ["-o", str(tmp_path / "out.png"), "--precision", "bf16"]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(out[mask == 0], rgb[mask == 0])
    code = cli.main(base + ["-o", str(tmp_path / "bad.png"), "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and "fp16 needs a CUDA device" in err[-1] and not (tmp_path / "bad.png").exists()


def test_hot_weights_bf16_policy_is_finite_on_cpu():
    """CPU proxy of the fp16 policy with trained-like weights (tiny config: bf16 on CPU is emulated and slow,
    big-lama at 512 takes minutes): autocast bf16 with fp32 Fourier units stays finite, keeps the outside
    pixels and lands within bf16's rounding of fp32. Real fp16 (<= 1/255 with big-lama at 512..2048) is
    checked on a GPU by the GPU lane."""
    from lama_deploy.scripts.bench.gpu import hole_error

    model = random_model("tiny", seed=0, trained_like=True).eval()
    rng = np.random.default_rng(5)
    image = rng.random((1, 3, 256, 256), dtype=np.float32)
    mask = np.zeros((1, 1, 256, 256), np.float32)
    mask[..., 64:160, 80:200] = 1.0
    feed = {"image": image, "mask": mask}
    with TorchBackend(model, device="cpu") as fp32:
        reference = fp32.infer(feed)["inpainted"]
    with TorchBackend(model, device="cpu", precision="bf16") as bf16:
        output = bf16.infer(feed)["inpainted"]
    error = hole_error(output, reference, mask)
    assert error["non_finite"] == 0.0, error
    assert error["hole_mean_255"] <= 4.0, error      # bf16 keeps 8 bits of mantissa: ~2.8/255 on an H200
    outside = np.broadcast_to(mask == 0, output.shape)
    assert np.array_equal(output[outside], image[outside])
