"""The fp16 policies and the scope rule are declared once (the contract)."""

from __future__ import annotations

from lama_deploy import contract as C


def test_fp16_policies_are_declared_in_the_contract_only():
    """lama_model takes the policy's scale as an argument and declares no policy names of its own."""
    import lama_model.precision
    from lama_deploy.runtime.backends.pytorch import precision as torch_precision

    assert C.FP16_POLICIES == ("fourier-fp32", "fourier-scaled") and C.DEFAULT_FP16_POLICY == C.FP16_POLICIES[0]
    assert not hasattr(lama_model.precision, "FP16_POLICIES")
    assert torch_precision.fp16_policies() is C.FP16_POLICIES and torch_precision.DEFAULT_POLICY is C.DEFAULT_FP16_POLICY


def test_fp16_scope_rule_follows_the_policy():
    fourier_node = "/generator/model.5/conv1/ffc/convg2g/fu/MatMul"
    conv_node = "/generator/model.5/conv1/ffc/convl2l/Conv"
    assert not C.runs_in_fp16(fourier_node) and C.runs_in_fp16(fourier_node, "fourier-scaled")
    assert C.runs_in_fp16(conv_node) and C.runs_in_fp16(conv_node, "fourier-scaled")
    assert not C.runs_in_fp16("/postprocess/Mul", "fourier-scaled") and not C.runs_in_fp16("ONNXTRT_x", "fourier-scaled")
