"""fp16 policies of the Fourier units, checked with fp16 storage emulated on ONNX Runtime CPU.

`emulate_fp16_storage` rounds every fp16-typed tensor to fp16 where it is produced (compute in fp32, as
tensor cores accumulate), so overflow and rounding show on a CPU as they would on a GPU. Hot weights:
`trained_like=True`. Reference: the fp32 official (torch.fft) model.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lama_deploy import contract as C
from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx
from lama_model import random_model
from lama_model.synthetic import sample_batch

from fp16_emulation import emulated_session


def _hole_error(model, onnx_model: onnx.ModelProto, size: int) -> tuple[float, float]:
    """(share of finite outputs, hole mean abs error in 1/255) of the emulated fp16 graph vs fp32 torch."""
    image, mask = sample_batch(1, size, size, 11)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
    got = emulated_session(onnx_model).run(None, {C.IMAGE: image, C.MASK: mask})[0]
    hole = np.broadcast_to(mask > 0, got.shape)
    return float(np.isfinite(got).mean()), float(np.abs(np.nan_to_num(got, nan=1e3) - want)[hole].mean() * 255)


def _fp16_matmuls_in_units(onnx_model: onnx.ModelProto) -> tuple[int, int]:
    """(fp16, all) MatMul outputs inside the Fourier units."""
    inferred = onnx.shape_inference.infer_shapes(onnx_model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    outputs = [n.output[0] for n in onnx_model.graph.node if n.op_type == "MatMul" and "/fu/" in n.name]
    return sum(types.get(o) == onnx.TensorProto.FLOAT16 for o in outputs), len(outputs)


def _export_fp16(model, config: str, path: Path, policy: str, scale: float | None = None) -> onnx.ModelProto:
    export_inpainting_onnx(path, config=config, model=model,
                           options=ExportOptions(precision="fp16", fp16_policy=policy, fourier_scale=scale))
    return onnx.load(str(path))


@lru_cache(maxsize=None)
def hot(config: str):
    """Trained-like ("hot") random weights, built once per config (calibration is the slow part)."""
    return random_model(config, seed=0, trained_like=True)


@pytest.mark.slow
@pytest.mark.parametrize("policy", C.FP16_POLICIES)
def test_every_policy_is_finite_and_accurate_at_1024_with_hot_weights(policy: str, tmp_path: Path) -> None:
    onnx_model = _export_fp16(hot("tiny"), "tiny", tmp_path / "tiny16.onnx", policy)
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    assert meta[C.META_FP16_POLICY] == policy
    assert float(meta[C.META_FOURIER_SCALE]) == (1.0 if policy == "fourier-fp32" else 256.0)
    half, total = _fp16_matmuls_in_units(onnx_model)
    assert total > 0 and half == (total if policy == "fourier-scaled" else 0)
    finite, error = _hole_error(hot("tiny"), onnx_model, 1024)
    assert finite == 1.0 and error <= 1.0, (finite, error)


@pytest.mark.slow
def test_fp16_units_without_the_scale_overflow(tmp_path: Path) -> None:
    """Control: the same fp16 Fourier units with scale 1 leave fp16's range, so the check above can fail."""
    onnx_model = _export_fp16(hot("tiny"), "tiny", tmp_path / "tiny16-unscaled.onnx", "fourier-scaled", scale=1.0)
    finite, _ = _hole_error(hot("tiny"), onnx_model, 1024)
    assert finite < 0.5


def test_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp16-policy"):
        export_inpainting_onnx(tmp_path / "x.onnx", config="tiny", options=ExportOptions(precision="fp16", fp16_policy="fp16-everywhere"))


@pytest.mark.slow
@pytest.mark.parametrize("policy", C.FP16_POLICIES)
def test_big_lama_fp16_policies_hold_from_512_to_1024(policy: str, tmp_path: Path) -> None:
    """Issue 11: hot weights, every fp16 policy, one image per size, one export per policy, fp16 storage
    emulated on ONNX Runtime CPU. 2048 is left to the GPU rows (real fp16 kernels, docs/benchmarks.md): the
    emulated graph runs unoptimised and would need well over the CI machine's memory there."""
    onnx_model = _export_fp16(hot("big-lama"), "big-lama", tmp_path / f"big-lama-{policy}.onnx", policy)
    for size in (512, 768, 1024):
        finite, error = _hole_error(hot("big-lama"), onnx_model, size)
        assert finite == 1.0 and error <= 1.0, (size, finite, error)


@pytest.mark.parametrize("args,message", [
    (["--fp16-policy", "fourier-scaled"], "--fp16-policy applies to --precision fp16 only"),
    (["--precision", "fp16", "--fourier-scale", "4"], "--fourier-scale applies to --fp16-policy fourier-scaled only"),
])
def test_cli_refuses_policy_options_that_would_be_ignored(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    from lama_deploy.scripts.commands.export import main

    assert main(["--config", "tiny", "-o", str(tmp_path / "x.onnx"), *args]) == 2
    assert capsys.readouterr().err.strip().startswith(f"lama-deploy export: error: {message}")
    assert not (tmp_path / "x.onnx").exists()
