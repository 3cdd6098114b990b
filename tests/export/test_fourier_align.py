"""The spectrum-width padding of the DFT-as-matmul exports (`contract.fourier_align`): chosen once from the
precision policy, recorded in the metadata, exact, dynamic in W and clean for TensorRT 8.5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lama_deploy import contract as C
from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx
from lama_deploy.export.onnx_rules import tensorrt_violations
from lama_model.synthetic import sample_batch


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@pytest.mark.parametrize("precision,policy,expected", [("fp32", None, 1), ("fp16", "fourier-fp32", 1),
                                                       ("fp16", "fourier-scaled", 8), ("bf16", "fourier-scaled", 8)])
def test_padding_is_on_exactly_where_the_units_run_in_half_precision(precision, policy, expected) -> None:
    assert C.fourier_align(precision, policy) == expected


@pytest.mark.parametrize("fourier", ["matmul", "matmul-dense"])
def test_padded_fp32_export_matches_torch_fft_at_sizes_it_was_not_traced_at(fourier: str, tiny_model,
                                                                             tmp_path: Path) -> None:
    """Exported with `fourier_align=8`: recorded, TensorRT-8.5 clean, and exact at several runtime sizes (the
    padding is computed from the runtime width: bottleneck W 4 -> 8 columns, 10 -> 8, 16 -> 16)."""
    path = tmp_path / "tiny.onnx"
    export_inpainting_onnx(path, config="tiny", options=ExportOptions(fourier=fourier, fourier_align=8), model=tiny_model)
    assert _metadata(path)[C.META_FOURIER_ALIGN] == "8"
    assert tensorrt_violations(onnx.load(str(path))) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, height, width in [(1, 32, 32), (2, 48, 80), (1, 128, 128)]:
        image, mask = sample_batch(batch, height, width, seed=width)
        got = session.run(None, {C.IMAGE: image, C.MASK: mask})[0]
        with torch.no_grad():
            expected = tiny_model(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
        error = float(np.abs(got - expected).max())
        assert error <= 1e-5, f"{fourier} padded, {batch}x{height}x{width}: max abs error {error:.3e}"


def test_default_exports_record_their_padding_and_a_bad_alignment_is_one_line(tmp_path: Path) -> None:
    from lama_deploy.errors import UsageError

    with pytest.raises(UsageError, match="alignment must be a positive integer, not 0"):
        ExportOptions(fourier_align=0).check()
    fp32, scaled = tmp_path / "fp32.onnx", tmp_path / "scaled.onnx"
    export_inpainting_onnx(fp32, config="tiny", options=ExportOptions(fourier="matmul-dense"))
    export_inpainting_onnx(scaled, config="tiny", options=ExportOptions(fourier="matmul-dense", precision="fp16",
                                                                        fp16_policy="fourier-scaled"))
    assert _metadata(fp32)[C.META_FOURIER_ALIGN] == "1" and _metadata(scaled)[C.META_FOURIER_ALIGN] == "8"
