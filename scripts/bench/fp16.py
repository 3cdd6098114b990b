"""fp16 error of the DFT-as-matmul at the activation scale of the trained model.

The trained big-lama feeds its Fourier units inputs large enough that the spectrum leaves fp16's range
from about 1024x1024 (see `lama_model.random_weights`, `trained_like=True`). This measures, on one real
Fourier-unit input captured from such a model, how far the fp16 matmul spectrum is from a float64
torch.fft reference, and whether it overflows. On a GPU the products run as deployed (CUDA fp16 GEMMs);
without one, under CPU autocast to float16, which rounds the same way but accumulates differently.
"""

from __future__ import annotations

import math
from typing import Any


def fp16_dft_error(config: str, size: int, seed: int) -> dict[str, Any]:
    """fp16 vs float64 error of the matmul DFT on a Fourier unit's real input (trained-like activations)."""
    import torch

    from lama_model.synthetic import sample_batch
    from lama_model import random_model
    from lama_model.ffc import FourierUnit
    from lama_model.fourier import MatmulDFT, TorchFFT

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = random_model(config, seed=seed, trained_like=True).to(device)
    captured: list[torch.Tensor] = []
    unit = next(m for m in model.modules() if isinstance(m, FourierUnit))
    hook = unit.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach()))
    image, mask = sample_batch(1, size, size, seed=seed)
    with torch.inference_mode():
        model(torch.from_numpy(image).to(device), torch.from_numpy(mask).to(device))
        hook.remove()
        x = captured[0]
        reference = TorchFFT()(x.double())
        with torch.autocast(device.type, dtype=torch.float16):
            spectrum16 = MatmulDFT()(x)
        spectrum32 = MatmulDFT()(x)
    scale = reference.abs().max().item()
    def number(value: float) -> float | str:
        # bench.json stays strict JSON: an overflowed spectrum is reported as the text "inf".
        return value if math.isfinite(value) else str(value)

    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU, torch.autocast float16 (no GPU here)"
    return {"device": where, "size": size, "fourier_input_absmax": round(x.abs().max().item(), 2), "spectrum_absmax": round(scale, 1),
            "fp16_max_abs_error": number((spectrum16.double() - reference).abs().max().item()),
            "fp16_relative_error": number((spectrum16.double() - reference).abs().max().item() / scale),
            "fp16_non_finite": int((~torch.isfinite(spectrum16)).sum().item()),
            "fp32_max_abs_error": (spectrum32.double() - reference).abs().max().item()}
