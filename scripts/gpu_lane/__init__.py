"""The GPU lane: everything a bare NVIDIA GPU machine can verify, in one command, from a plain checkout.

    python3 -m scripts.gpu_lane --out DIR                        # on the GPU machine (no install step)
    python3 -m scripts.gpu_lane --out DIR --wheelhouse WHEELS    # + wheels from a local folder (no network)
    python3 -m scripts.gpu_lane --out DIR --dry-run              # anywhere (automatic without CUDA); CI runs it

From the checkout root. CI tooling, not the product: the wheel does not install this folder (pyproject's
package list leaves it out; tests/house/test_packaging.py checks). Modules: `lane.py` (stages, time budget, summary), `wheelhouse.py`
(local wheels), `engine_check.py` (TensorRT-RTX on this GPU), `plugin.py` (pytest events and watchdog),
`report.py` (environment probe, event log, gpu_lane.md).
"""
