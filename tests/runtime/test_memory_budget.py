"""The host-memory budget (issue 13): sizes parse, an image the budget cannot hold is cropped or downscaled
by the size strategy, or refused in one line before the model runs; the CLI and Inpainter agree.
Tiny ONNX model on ONNX Runtime CPU; budgets are computed from the runtime's declared costs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lama_deploy.errors import UserError
from lama_deploy.runtime import memory
from lama_deploy.runtime.inpainter import Inpainter

COST = memory.ORT_CPU_COST


def _budget_for(image_side: int, tensor_side: int) -> int:
    """A budget holding the decoded image_side**2 image and a tensor_side**2 inference, no more."""
    return COST.fixed_bytes + memory.IMAGE_BYTES_PER_PIXEL * image_side ** 2 + int(COST.bytes_per_pixel * tensor_side ** 2)


@pytest.mark.parametrize("text, expected", [("4GB", 4 * 10**9), ("512MB", 512 * 10**6), ("3.5GiB", int(3.5 * 2**30)),
                                            ("1500000000", 1_500_000_000), (" 64 mib ", 64 * 2**20), (2**30, 2**30)])
def test_parse_bytes(text, expected) -> None:
    assert memory.parse_bytes(text) == expected


def test_the_cost_follows_the_graph_the_export_wrote(tiny_onnx: Path) -> None:
    """Exports with the sub-pixel upsampling cost less per pixel than older ones that keep the ConvTranspose's
    column buffer; the backend reads which from the ONNX metadata."""
    from lama_deploy import contract as C
    from lama_deploy.runtime.backends.ort_backend import OnnxRuntimeBackend

    assert memory.ort_cpu_cost("head,fold_batchnorm,share_bases," + C.SPEEDUP_SUBPIXEL) is memory.ORT_CPU_COST
    for older in ("head,fold_batchnorm,share_bases", "none", ""):
        assert memory.ort_cpu_cost(older) is memory.ORT_CPU_COST_CONV_TRANSPOSE
    assert memory.ORT_CPU_COST.bytes_per_pixel < memory.ORT_CPU_COST_CONV_TRANSPOSE.bytes_per_pixel
    backend = OnnxRuntimeBackend(tiny_onnx, device="cpu")
    backend.activate()
    try:
        assert backend.host_memory_cost() is memory.ORT_CPU_COST
    finally:
        backend.deactivate()


@pytest.mark.parametrize("text", ["four GB", "4XB", "-1GB", "0", ""])
def test_parse_bytes_refuses_in_one_line(text) -> None:
    with pytest.raises(UserError) as caught:
        memory.parse_bytes(text)
    assert "\n" not in str(caught.value) and ("memory size" in str(caught.value))


def test_default_budget_is_a_share_of_available_memory() -> None:
    available = memory.available_memory()
    assert available is not None and available > 10**8
    budget = memory.resolve_budget("auto")
    assert abs(budget - memory.DEFAULT_FRACTION * available) < 0.05 * available  # memory moves a little meanwhile
    assert memory.resolve_budget("none") is None and memory.resolve_budget("2GB") == 2 * 10**9


def test_costs_scale_with_pixels_and_refuse_below_the_minimum() -> None:
    assert COST.inference_bytes(2048 * 2048) - COST.inference_bytes(1024 * 1024) == int(COST.bytes_per_pixel * 3 * 2**20)
    assert memory.max_side_for(COST, _budget_for(1000, 520), 1000 * 1000) == 520 // 8 * 8
    with pytest.raises(memory.MemoryBudgetExceeded, match="cannot hold even a"):
        memory.max_side_for(COST, COST.fixed_bytes, 1000 * 1000)


def _spy(inpainter: Inpainter) -> list:
    shapes = []
    infer = inpainter.backend.infer

    def recording(feed):
        shapes.append(feed["image"].shape)
        return infer(feed)

    inpainter.backend.infer = recording
    return shapes


def _big_case(side: int = 2048, hole: tuple[slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    mask = np.zeros((side, side), np.uint8)
    mask[hole or (slice(None), slice(None))] = 255
    return image, mask


def test_budget_downscales_a_full_mask_and_crops_a_small_one(tiny_onnx: Path) -> None:
    with Inpainter.from_path(tiny_onnx, device="cpu", max_memory=_budget_for(1024, 256)) as inpainter:
        assert inpainter.memory_cost == COST
        shapes = _spy(inpainter)
        image, mask = _big_case(1024)
        result = inpainter.inpaint(image, mask)
        # the full mask is one hole region: its crop (the whole image) is downscaled to the budget
        assert result.strategy in ("resize", "crop") and result.image.size == (1024, 1024)
        assert any("upscaled" in note for note in result.notes), result.notes
        assert any("memory budget" in note for note in result.notes)
        image, mask = _big_case(1024, hole=(slice(700, 760), slice(300, 380)))
        cropped = inpainter.inpaint(image, mask)
        assert cropped.strategy == "crop"
        assert np.array_equal(np.asarray(cropped.image)[mask == 0], image[mask == 0])
    assert [s[2] * s[3] <= 256 * 256 for s in shapes] == [True, True]
    assert max(shapes[0][2:]) == 256  # as large as the budget allows, not smaller


def test_budget_that_holds_nothing_refuses_before_inference(tiny_onnx: Path) -> None:
    with Inpainter.from_path(tiny_onnx, device="cpu", max_memory=_budget_for(1024, 8)) as inpainter:
        shapes = _spy(inpainter)
        image, mask = _big_case(2048)
        start = time.monotonic()
        with pytest.raises(memory.MemoryBudgetExceeded) as caught:
            inpainter.inpaint(image, mask)
        assert time.monotonic() - start < 5 and shapes == []
        assert "\n" not in str(caught.value) and "--max-memory" in str(caught.value)


def test_batches_are_split_to_fit_the_budget(tiny_onnx: Path) -> None:
    with Inpainter.from_path(tiny_onnx, device="cpu", max_memory=_budget_for(0, 400)) as inpainter:
        shapes = _spy(inpainter)
        image, mask = _big_case(256)
        results = inpainter.inpaint_batch([image] * 3, [mask] * 3)
    assert [r.strategy for r in results] == ["direct"] * 3
    assert [s[0] for s in shapes] == [2, 1]  # 400**2 holds two 256x256 images per call, not three


def test_no_budget_on_request(tiny_onnx: Path) -> None:
    with Inpainter.from_path(tiny_onnx, device="cpu", max_memory="none") as inpainter:
        assert inpainter.max_memory is None and inpainter.info()["max_memory"] is None


def _write_case(folder: Path, side: int) -> tuple[Path, Path]:
    image, mask = _big_case(side)
    Image.fromarray(image).save(folder / "big.png")
    Image.fromarray(mask).save(folder / "big_mask.png")
    return folder / "big.png", folder / "big_mask.png"


def _inpaint_cli(tiny_onnx: Path, tmp_path: Path, budget: int) -> tuple[subprocess.CompletedProcess, float]:
    image, mask = _write_case(tmp_path, 1024)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lama_deploy.scripts.cli", "inpaint", str(image), str(mask), "-o",
                           str(tmp_path / "out.png"), "--model", str(tiny_onnx), "--device", "cpu",
                           "--max-memory", str(budget)], capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - start


def test_cli_refuses_in_one_line_within_seconds(tiny_onnx: Path, tmp_path: Path) -> None:
    done, seconds = _inpaint_cli(tiny_onnx, tmp_path, _budget_for(1024, 8))
    assert done.returncode == 2 and seconds < 60, done.stderr
    lines = [line for line in done.stderr.splitlines() if "warning" not in line]
    assert len(lines) == 1 and "memory budget" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "out.png").exists()


def test_cli_downscales_to_fit(tiny_onnx: Path, tmp_path: Path) -> None:
    done, _ = _inpaint_cli(tiny_onnx, tmp_path, _budget_for(1024, 256))
    assert done.returncode == 0, done.stderr
    assert ("(resize," in done.stdout or "(crop," in done.stdout) and "upscaled" in done.stdout
    assert "memory budget" in done.stdout
    assert Image.open(tmp_path / "out.png").size == (1024, 1024)
