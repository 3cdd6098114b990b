"""Precisions, fp16 policies, Fourier forms and targets: one declaration (the contract), one judge
(`contract.precision_problem`), and export, build, the PyTorch backend and the bench repeat its line verbatim."""

from __future__ import annotations

import itertools

import pytest

from lama_deploy import contract as C
from lama_deploy.errors import UsageError, UserError
from lama_deploy.export.build_engine import resolve_precision
from lama_deploy.export.onnx_export import ExportOptions, export_inpainting_onnx
from lama_deploy.export.trt_builder import Features, precision_target
from lama_deploy.runtime.backends import BackendError
from lama_deploy.runtime.backends.pytorch import precision as tp

PRECISIONS = ("fp32", "fp16", "bf16", "fp8")
POLICIES = (None, "fourier-fp32", "fourier-scaled", "fp16-everywhere")
FORMS = (None, "matmul", "matmul-dense", "dft", "torch", "fft2")
ONNX_PRECISIONS = (None, "fp32", "fp16")
ALL = list(itertools.product(PRECISIONS, POLICIES, FORMS, C.TARGETS, ONNX_PRECISIONS))


def test_every_combination_gets_none_or_one_line() -> None:
    verdicts = [C.precision_problem(*combo) for combo in ALL]
    assert len(ALL) == 4 * 4 * 6 * 7 * 3 == 2016
    assert all(v is None or (isinstance(v, str) and v and "\n" not in v) for v in verdicts)
    legal = [combo for combo, verdict in zip(ALL, verdicts) if verdict is None]
    # Spot facts of the matrix (docs/benchmarks.md, build_engine's docstring):
    assert ("fp16", "fourier-scaled", "matmul", "onnx", None) in legal
    assert ("bf16", "fourier-scaled", "matmul-dense", "torch", None) in legal
    assert ("fp16", None, "matmul", "trt85", "fp32") in legal           # weakly typed: fp16 from the fp32 ONNX
    assert ("fp16", None, "matmul", "rtx", "fp32") not in legal          # strongly typed: needs the fp16 ONNX
    assert all(combo[0] != "fp8" and combo[1] != "fp16-everywhere" for combo in legal)
    assert all(combo[0] != "bf16" or combo[3] == "torch" for combo in legal)
    assert all(combo[2] != "dft" or (combo[0] == "fp32" and combo[3] not in C.NO_DFT_TARGETS) for combo in legal)
    assert all(not (combo[1] == "fourier-scaled" and combo[2] == "torch" and combo[0] != "fp32") for combo in legal)
    assert all(not (combo[0] == "fp32" and combo[1] == "fourier-scaled") for combo in legal)
    torch_legal = {(p, pol, form) for p, pol, form, target, _ in legal if target == "torch"}
    # fp32: no/default policy, every form (names of torch forms are lama_model's to refuse); fp16/bf16: any known
    # policy, every form but dft, and never scaled torch.fft.
    assert len(torch_legal) == 2 * 6 + 2 * (3 * 5 - 1) == 40


@pytest.mark.parametrize("combo, words", [
    (("fp32", "fourier-scaled", None, "onnx", None), "--fp16-policy applies to --precision fp16 only"),
    (("fp32", "fourier-scaled", None, "torch", None), "--fp16-policy applies to --precision fp16/bf16 only"),
    (("fp16", "fourier-scaled", "torch", "torch", None), "'fourier-scaled' needs a DFT-as-matmul Fourier form"),
    (("fp16", None, "dft", "onnx", None), "--fft dft supports fp32 only"),
    (("fp32", None, "dft", "trt10", "fp32"), "TensorRT 10.x cannot parse ONNX DFT ops"),
    (("fp16", None, "matmul", "trt11", "fp32"), "TensorRT 11.x is strongly typed: --precision fp16 needs the fp16 ONNX"),
    (("fp32", None, "matmul", "trt86", "fp16"), "--precision fp32 but this ONNX is the fp16 export"),
    (("bf16", None, None, "onnx", None), "unknown precision 'bf16' for the ONNX export; choose one of fp32, fp16"),
    (("fp16", "fp16-everywhere", None, "onnx", None), "unknown fp16 policy 'fp16-everywhere' (--fp16-policy)"),
    (("fp32", None, "torch", "onnx", None), "unknown Fourier form 'torch' (--fft)"),
])
def test_illegal_combinations_name_the_way_out(combo, words) -> None:
    assert words in (C.precision_problem(*combo) or "")


def test_an_unknown_target_is_a_bug_not_a_user_error() -> None:
    with pytest.raises(ValueError, match="unknown precision target 'jetson'"):
        C.precision_problem("fp32", target="jetson")


def test_export_repeats_the_judges_line_for_every_combination() -> None:
    for precision, policy, form in itertools.product(PRECISIONS, POLICIES, FORMS[1:]):
        problem = C.precision_problem(precision, policy, form, "onnx")
        options = ExportOptions(precision=precision, fp16_policy=policy, fourier=form)
        if problem is None:
            assert options.check() is options
            continue
        with pytest.raises(UsageError) as excinfo:
            options.check()
        assert str(excinfo.value) == problem


def test_export_refuses_before_loading_anything(tmp_path) -> None:
    path = tmp_path / "x.onnx"
    with pytest.raises(UsageError) as excinfo:
        export_inpainting_onnx(path, config="big-lama", options=ExportOptions(precision="fp16", fourier="dft"))
    assert str(excinfo.value) == C.precision_problem("fp16", None, "dft", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_build_repeats_the_judges_line_for_every_combination() -> None:
    for target, requested, onnx_precision, form in itertools.product(
            C.TRT_TARGETS, (None, "fp32", "fp16", "bf16"), ("fp32", "fp16"), C.EXPORT_FOURIER):
        precision = requested or onnx_precision
        problem = C.precision_problem(precision, None, form, target, onnx_precision=onnx_precision)
        if problem is None:
            assert resolve_precision(requested, onnx_precision, target, form) == precision
            continue
        with pytest.raises(UserError) as excinfo:
            resolve_precision(requested, onnx_precision, target, form)
        assert str(excinfo.value) == problem


def test_torch_backend_and_bench_repeat_the_judges_line() -> None:
    for precision, policy in itertools.product(PRECISIONS, POLICIES):
        problem = C.precision_problem(precision, policy, None, "torch")
        if problem is None:
            mode = tp.resolve_mode("cuda", precision, policy)  # validation only: nothing touches a GPU
            assert mode.policy == (None if precision == "fp32" else policy or C.DEFAULT_FP16_POLICY)
            continue
        with pytest.raises(BackendError) as excinfo:
            tp.resolve_mode("cuda", precision, policy)
        assert str(excinfo.value) == problem
    for policy, form in itertools.product(C.FP16_POLICIES, ("torch", "matmul", "matmul-dense")):
        assert C.fp16_policy_problem(policy, form) == C.precision_problem("fp16", policy, form, "torch")
    assert C.fp16_policy_problem("fourier-scaled", "torch") is not None


@pytest.mark.parametrize("flavour, version, weak, target", [
    ("tensorrt", "8.5.2.2", True, "trt85"), ("tensorrt", "8.6.1", True, "trt86"), ("tensorrt", "10.3.0", True, "trt10"),
    ("tensorrt", "11.0.0", False, "trt11"), ("tensorrt_rtx", "1.7.1.116", False, "rtx"),
])
def test_the_installed_tensorrt_maps_to_one_target(flavour, version, weak, target) -> None:
    features = Features(flavour, version, weak, True, False, True, True)
    assert precision_target(features) == target
