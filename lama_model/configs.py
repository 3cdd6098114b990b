"""Named generator configurations: one table, imported everywhere.

big-lama and lama-fourier are the official released models (advimman/lama, `configs/training/big-lama.yaml`
and `lama-fourier.yaml` with `generator/ffc_resnet_075.yaml`); `tiny` has the same structure with narrow
layers, for fast tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of FFCResNetGenerator.

    Args:
        input_nc: generator input channels (masked RGB + mask).
        output_nc: output channels.
        ngf: width of the first layer; doubles at each downsampling, capped at `max_features`.
        n_downsampling: stride-2 stages (the size rule is a multiple of 2**n_downsampling).
        n_blocks: FFC resnet blocks at the bottleneck.
        ratio: share of global (spectral) channels in the resnet blocks.
        max_features: channel cap.
    """

    input_nc: int = 4
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    ratio: float = 0.75
    max_features: int = 1024

    def as_dict(self) -> dict:
        return asdict(self)


CONFIGS: dict[str, GeneratorConfig] = {
    "big-lama": GeneratorConfig(n_blocks=18),
    "lama-fourier": GeneratorConfig(n_blocks=9),
    # Same topology as big-lama (odd/even spectra, every layer kind), 2 blocks, narrow: for fast tests.
    "tiny": GeneratorConfig(ngf=8, n_blocks=2),
}

DEFAULT_CONFIG = "big-lama"


def get_config(name: str) -> GeneratorConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; choose one of: {', '.join(CONFIGS)}") from None
