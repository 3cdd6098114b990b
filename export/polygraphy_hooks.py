"""Hooks for the generated `polygraphy convert` lines (scripts/trtexec/polygraphy_*.sh):

    --trt-network-postprocess-script export/polygraphy_hooks.py:polygraphy_pin_fp32
    --trt-config-postprocess-script export/polygraphy_hooks.py:polygraphy_no_tf32

Polygraphy loads this file as a plain script, so it must run from an uninstalled checkout (a checkout copied
to a device): hence the checkout bootstrap below (`CHECKOUT_BOOTSTRAP`, lama_deploy/__init__.py). The rules themselves live in `trt_builder` and the contract.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):  # run by path from a checkout: see lama_deploy/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lama_deploy.export.trt_builder import pin_fp32_layers  # noqa: E402

#: The hook file as the generated lines name it, relative to the checkout root.
HOOK_SCRIPT = "export/polygraphy_hooks.py"


def _polygraphy_tensorrt() -> ModuleType:
    """The module Polygraphy itself uses (POLYGRAPHY_USE_TENSORRT_RTX=1 selects TensorRT-RTX)."""
    from lama_deploy.runtime.trt_import import import_tensorrt

    return import_tensorrt("tensorrt_rtx" if os.environ.get("POLYGRAPHY_USE_TENSORRT_RTX") == "1" else None)


def polygraphy_pin_fp32(network) -> None:
    """Network hook (`polygraphy convert --fp16`): pin everything outside the fp16 region to fp32."""
    trt = _polygraphy_tensorrt()
    if network.num_layers and not hasattr(network.get_layer(0), "precision"):
        return  # strongly typed API (TensorRT 11, TensorRT-RTX): the ONNX's casts decide
    pin_fp32_layers(trt, network)


def polygraphy_no_tf32(builder, network, config) -> None:
    """Config hook: Polygraphy has no switch to turn TensorRT's default TF32 off; the DFT matmuls need full fp32."""
    trt = _polygraphy_tensorrt()
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
