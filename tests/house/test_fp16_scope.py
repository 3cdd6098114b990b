"""The fp16 policies and the scope rule are declared once (the contract) and agree with lama_model."""

from __future__ import annotations

from lama_deploy import contract as C


def test_fp16_policies_are_declared_alike_in_the_contract_and_the_model():
    from lama_model.precision import FP16_POLICIES

    assert C.FP16_POLICIES == FP16_POLICIES and C.DEFAULT_FP16_POLICY == FP16_POLICIES[0]


def test_fp16_scope_rule_follows_the_policy():
    fourier_node = "/generator/model.5/conv1/ffc/convg2g/fu/MatMul"
    conv_node = "/generator/model.5/conv1/ffc/convl2l/Conv"
    assert not C.runs_in_fp16(fourier_node) and C.runs_in_fp16(fourier_node, "fourier-scaled")
    assert C.runs_in_fp16(conv_node) and C.runs_in_fp16(conv_node, "fourier-scaled")
    assert not C.runs_in_fp16("/postprocess/Mul", "fourier-scaled") and not C.runs_in_fp16("ONNXTRT_x", "fourier-scaled")
