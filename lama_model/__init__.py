"""LaMa's FFC inpainting generator in PyTorch, weight-compatible with the official checkpoints."""

from .checkpoint import (CheckpointError, DamagedCheckpointError, Limits, UnsafeCheckpointError, load_inpainting_model,
                         read_checkpoint)
from .configs import CONFIGS, DEFAULT_CONFIG, GeneratorConfig, get_config
from .ffc import FFCResNetGenerator
from .fourier import FOURIER_MODES
from .inpainting import InpaintingModel, build_generator, set_fourier_mode
from .random_weights import describe_random_weights, randomize_weights

__all__ = [
    "CONFIGS", "DEFAULT_CONFIG", "FOURIER_MODES", "CheckpointError", "DamagedCheckpointError", "FFCResNetGenerator",
    "GeneratorConfig",
    "InpaintingModel", "Limits", "UnsafeCheckpointError", "build_generator", "describe_random_weights", "get_config",
    "load_inpainting_model", "randomize_weights", "read_checkpoint", "set_fourier_mode",
]


def random_model(config: str = DEFAULT_CONFIG, seed: int = 0, fourier: str = "torch",
                 trained_like: bool = False) -> InpaintingModel:
    """A seeded random-weights InpaintingModel (BatchNorm calibrated) - not trained LaMa."""
    return randomize_weights(InpaintingModel(build_generator(config, fourier)), seed, trained_like)
