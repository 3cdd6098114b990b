"""The exported graph: dynamic dims, TensorRT rules, and ONNX Runtime output vs the torch.fft reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx, read_metadata, symbolic_dims
from lama_deploy.export.onnx_rules import tensorrt_violations
from lama_deploy import contract as C
from lama_model.synthetic import sample_batch
from lama_model import InpaintingModel, random_model

# (N, H, W): none is the trace shape (64x96); odd 1/8 features (25x41, 33x25), batch > 1, non-square, tiny.
SHAPES = [(1, 200, 328), (1, 264, 200), (2, 128, 128), (1, 16, 16), (1, 256, 384), (3, 72, 40), (1, 512, 512)]
BIG_LAMA_SHAPES = [(1, 200, 328), (1, 264, 200), (2, 128, 128), (1, 16, 24), (1, 256, 384), (1, 512, 512)]


def _max_error(session: ort.InferenceSession, model: InpaintingModel, n: int, h: int, w: int, seed: int = 0) -> float:
    image, mask = sample_batch(n, h, w, seed)
    got = session.run([C.OUTPUT], {C.IMAGE: image, C.MASK: mask})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
    assert got.shape == (n, 3, h, w)
    return float(np.abs(got - want).max())


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_graph_is_dynamic_checked_and_tensorrt_clean(tiny_onnx: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert len(inferred.graph.value_info) > 100
    assert symbolic_dims(model) == {
        "image": ["N", 3, "H", "W"], "mask": ["N", 1, "H", "W"], "inpainted": ["N", 3, "H", "W"]}
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert tensorrt_violations(model) == []
    ops = {n.op_type for n in model.graph.node}
    assert "DFT" not in ops and "Einsum" not in ops and "MatMul" in ops


def test_metadata_declares_the_contract(tiny_onnx: Path) -> None:
    meta = read_metadata(onnx.load(str(tiny_onnx)))
    assert meta[C.META_CONFIG] == "tiny" and meta[C.META_FOURIER] == "matmul" and meta[C.META_OPSET] == "17"
    assert meta[C.META_SIZE_MULTIPLE] == "8" and "multiples of 8" in meta[C.META_SIZE_RULE]
    assert meta[C.META_PRECISION] == "fp32" and "torch" in meta[C.META_EXPORTER]


def test_speedups_are_exact_recorded_and_leave_the_callers_model_alone(tmp_path: Path, tiny_onnx: Path) -> None:
    model = random_model("tiny", seed=0)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    plain = tmp_path / "plain.onnx"
    export_inpainting_onnx(plain, model=model, config="tiny", options=ExportOptions(speedups=False))
    export_inpainting_onnx(tmp_path / "again.onnx", model=model, config="tiny")
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[key], before[key]) for key in before)
    assert {type(unit.transform).__name__ for unit in _fourier_units(model)} == {"TorchFFT"}

    fast_graph, plain_graph = onnx.load(str(tiny_onnx)), onnx.load(str(plain))
    assert read_metadata(fast_graph)[C.META_SPEEDUPS] == "head,fold_batchnorm,share_bases,subpixel_upsample"
    assert read_metadata(plain_graph)[C.META_SPEEDUPS] == "none"
    fast_ops = [n.op_type for n in fast_graph.graph.node]
    plain_ops = [n.op_type for n in plain_graph.graph.node]
    assert "BatchNormalization" not in fast_ops and "BatchNormalization" in plain_ops
    # The full-resolution upsampling became Conv + DepthToSpace (ORT CPU's ConvTranspose column buffer).
    assert fast_ops.count("ConvTranspose") == plain_ops.count("ConvTranspose") - 1 >= 1
    # Bases are built once for all four Fourier units of the tiny model instead of once per unit.
    assert 4 * fast_ops.count("Cos") == plain_ops.count("Cos") > 0
    image, mask = sample_batch(2, 72, 136, seed=5)
    feed = {C.IMAGE: image, C.MASK: mask}
    difference = np.abs(_session(tiny_onnx).run(None, feed)[0] - _session(plain).run(None, feed)[0]).max()
    assert difference <= 1e-5


def _fourier_units(model: InpaintingModel) -> list:
    from lama_model.ffc import FourierUnit

    return [m for m in model.modules() if isinstance(m, FourierUnit)]


@pytest.mark.parametrize("n,h,w", SHAPES)
def test_tiny_onnxruntime_matches_torch_fft(tiny_onnx: Path, tiny_model: InpaintingModel, n: int, h: int, w: int) -> None:
    error = _max_error(_session(tiny_onnx), tiny_model, n, h, w)
    assert error <= 1e-4, f"{n}x{h}x{w}: max abs error {error:.3e}"


@pytest.mark.slow
def test_big_lama_onnxruntime_matches_torch_fft(big_lama_onnx: Path, big_lama_model: InpaintingModel) -> None:
    session = _session(big_lama_onnx)
    errors = {shape: _max_error(session, big_lama_model, *shape) for shape in BIG_LAMA_SHAPES}
    print("big-lama ORT vs torch.fft max abs error:", {f"{n}x{h}x{w}": f"{e:.2e}" for (n, h, w), e in errors.items()})
    assert max(errors.values()) <= 1e-4, errors
    assert tensorrt_violations(onnx.load(str(big_lama_onnx))) == []


def test_dense_matmul_export_is_tensorrt_clean_and_matches_torch_fft(tmp_path: Path, tiny_model: InpaintingModel) -> None:
    path = tmp_path / "dense.onnx"
    result = export_inpainting_onnx(path, model=tiny_model, config="tiny", options=ExportOptions(fourier="matmul-dense"))
    model = onnx.load(str(path))
    assert result.fourier == "matmul-dense" == read_metadata(model)[C.META_FOURIER]
    assert tensorrt_violations(model) == [] and symbolic_dims(model)[C.IMAGE] == ["N", 3, "H", "W"]
    session = _session(path)
    for shape in [(1, 200, 328), (2, 128, 128), (1, 512, 512)]:
        assert _max_error(session, tiny_model, *shape) <= 1e-4


def test_dft_op_graph_runs_in_onnxruntime_but_breaks_tensorrt_rules(tmp_path: Path, tiny_model: InpaintingModel) -> None:
    path = tmp_path / "dft.onnx"
    result = export_inpainting_onnx(path, model=random_model("tiny", seed=0), config="tiny", options=ExportOptions(fourier="dft"))
    assert "TensorRT before 11.2" in result.warnings[0]
    model = onnx.load(str(path))
    assert sum(n.op_type == "DFT" for n in model.graph.node) == 4 * 4  # 4 per Fourier unit, 2 blocks x 2 FFCs
    assert any("DFT" in v for v in tensorrt_violations(model))
    for shape in [(1, 200, 328), (2, 64, 64)]:
        assert _max_error(_session(path), tiny_model, *shape) <= 1e-4


def test_fixed_batch_export(tmp_path: Path) -> None:
    path = tmp_path / "b2.onnx"
    export_inpainting_onnx(path, model=random_model("tiny", seed=0), config="tiny", options=ExportOptions(batch=1))
    dims = symbolic_dims(onnx.load(str(path)))
    assert dims["image"] == [1, 3, "H", "W"]


def _fp16_fourier_nodes_stay_fp32(model: onnx.ModelProto) -> None:
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    fourier_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and "/fu/" in n.name]
    assert fourier_matmuls
    for node in fourier_matmuls:
        assert types.get(node.output[0]) == onnx.TensorProto.FLOAT, node.name
    convs = [n for n in model.graph.node if n.op_type == "Conv" and "/fu/" not in n.name]
    assert sum(types.get(n.output[0]) == onnx.TensorProto.FLOAT16 for n in convs) > len(convs) // 2


def test_tiny_fp16_export_runs_and_keeps_fourier_units_fp32(tmp_path: Path) -> None:
    path = tmp_path / "fp16.onnx"
    export_inpainting_onnx(path, model=random_model("tiny", seed=0, trained_like=True), config="tiny", options=ExportOptions(precision="fp16"))
    model = onnx.load(str(path))
    _fp16_fourier_nodes_stay_fp32(model)
    assert read_metadata(model)[C.META_PRECISION] == "fp16"
    assert tensorrt_violations(model) == []
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.FLOAT}


@pytest.mark.slow
def test_big_lama_fp16_error_on_trained_like_weights(big_lama_fp16_onnx: Path,
                                                     big_lama_trained_like_model: InpaintingModel) -> None:
    session = _session(big_lama_fp16_onnx)
    report = {}
    for n, h, w in [(1, 256, 256), (1, 200, 328), (1, 512, 512)]:
        image, mask = sample_batch(n, h, w, 11)
        got = session.run([C.OUTPUT], {C.IMAGE: image, C.MASK: mask})[0]
        with torch.no_grad():
            want = big_lama_trained_like_model(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
        assert np.isfinite(got).all()
        diff = np.abs(got - want)
        report[f"{h}x{w}"] = (float(diff.max()), float(diff.mean()))
    print("fp16 vs fp32 (max, mean) abs error, trained-like random weights:", report)
    assert max(m for m, _ in report.values()) <= 0.05, report
    assert max(m for _, m in report.values()) <= 2e-3, report
    _fp16_fourier_nodes_stay_fp32(onnx.load(str(big_lama_fp16_onnx)))


@pytest.mark.slow
def test_trained_like_spectrum_would_overflow_fp16(big_lama_trained_like_model: InpaintingModel) -> None:
    """Why the Fourier units stay fp32: at 1024x1024 the spectrum passes fp16's 65504 with trained magnitudes."""
    from lama_model.ffc import FourierUnit

    peak = [0.0]

    def record(_module, _inputs, output):
        peak[0] = max(peak[0], float(output.abs().max()))

    hooks = [m.transform.register_forward_hook(record) for m in big_lama_trained_like_model.modules()
             if isinstance(m, FourierUnit)]
    try:
        image, mask = sample_batch(1, 1024, 1024, 2)
        with torch.no_grad():
            big_lama_trained_like_model(torch.from_numpy(image), torch.from_numpy(mask))
    finally:
        for hook in hooks:
            hook.remove()
    assert peak[0] > 65504, f"spectrum peak {peak[0]:.3g}"
