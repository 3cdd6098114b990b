"""The generator's weights in a checkpoint's object, mapped onto the generator and checked before it is built.

Three layouts are accepted, all found by shape rather than by one hard-coded prefix:
- the official PyTorch Lightning `best.ckpt` (`state_dict` with `generator.` keys, plus discriminator and
  loss-network keys, which are dropped, and non-tensor hyper-parameters);
- a plain generator `state_dict` (`torch.save(generator.state_dict())`), with or without a prefix;
- the TorchScript `big-lama.pt` of IOPaint / lama-cleaner: its weights are read from the archive's pickled
  module tree; its code is never compiled or run.

Safety (docs/security.md): the file is read by `archive` (restricted unpickler, checked records); keys and shapes are checked against the configuration (on a meta-device model) before the
generator is allocated. Every problem is one CheckpointError line.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..configs import CONFIGS, GeneratorConfig, get_config
from ..ffc import FFCResNetGenerator
from ..inpainting import InpaintingModel
from .archive import read_checkpoint
from .records import DEFAULT_LIMITS, CheckpointError, Limits, UnsafeCheckpointError, short
from .unpickler import Placeholder

ANCHOR_KEY = "model.1.ffc.convl2l.weight"


# --- finding the generator's tensors ----------------------------------------------------------------------

def _children(obj: Any) -> list[tuple[Any, Any]]:
    """(name, child) pairs of a dict or a placeholder (its pickled state, items and list)."""
    if isinstance(obj, dict):
        return list(obj.items())
    if not isinstance(obj, Placeholder):
        return []
    states = obj._state if type(obj._state) is tuple else (obj._state,)  # (state, slotstate) pairs
    pairs = [pair for state in states if isinstance(state, dict) for pair in state.items()]
    return pairs + list(obj._items.items()) + [(str(i), v) for i, v in enumerate(obj._list)]


def collect_tensors(obj: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, torch.Tensor]:
    """Every tensor reachable from `obj` through dicts and object state, named by its dotted path.

    Breadth-first, so a tensor reachable by several paths gets its shortest name; each container is visited
    once (a shared DAG costs its size, not its number of paths), and depth and node count are bounded.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    queue: deque[tuple[Any, str, int]] = deque([(obj, "", 0)])
    while queue:
        node, prefix, depth = queue.popleft()
        if isinstance(node, torch.Tensor):
            out.setdefault(prefix.rstrip("."), node)
            continue
        if id(node) in seen or not isinstance(node, (dict, Placeholder)):
            continue
        seen.add(id(node))
        if depth >= limits.max_depth or len(seen) > limits.max_objects:
            raise UnsafeCheckpointError(f"checkpoint nests objects deeper than {limits.max_depth} levels or holds "
                                        f"more than {limits.max_objects}; the file is damaged or crafted")
        for key, child in _children(node):
            if type(key) in (str, int) and len(str(key)) <= 200:  # longer names are not LaMa keys
                queue.append((child, f"{prefix}{key}.", depth + 1))
    return out


def generator_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The generator's entries with their official names (`model.N...`), other networks' keys dropped."""
    prefixes = sorted((k[: -len(ANCHOR_KEY)] for k in tensors if k.endswith(ANCHOR_KEY)), key=len)
    if not prefixes:
        raise CheckpointError(f"no LaMa generator found (no key ending in '{ANCHOR_KEY}'); "
                              "is this a LaMa checkpoint (best.ckpt, big-lama.pt or a generator state_dict)?")
    # Lightning checkpoints hold the generator under 'state_dict.generator.'; the shortest wins over copies.
    prefix = prefixes[0]
    start = prefix + "model."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(start)}


# Bounds of an inferred configuration (the official ones are far inside): nothing larger is ever built.
MAX_INFERRED_BLOCKS = 64
MAX_INFERRED_CHANNELS = 16
MAX_INFERRED_WIDTH = 256  # ngf; big-lama has 64 (its 18 blocks at 256 would be ~0.8 GB of fp32 weights)


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Infer width and depth from the tensors themselves, refusing sizes no LaMa generator has."""
    stem = state_dict[ANCHOR_KEY]
    if stem.dim() != 4:
        raise CheckpointError(f"{ANCHOR_KEY} has shape {tuple(stem.shape)[:8]}, not a 4-D convolution weight; "
                              "this is not a LaMa generator")
    ngf, input_nc = int(stem.shape[0]), int(stem.shape[1])
    blocks = {k.split(".")[1] for k in state_dict if ".conv1.ffc." in k}
    heads = [k for k in state_dict if k.endswith(".weight") and state_dict[k].dim() == 4 and k.split(".")[1].isdigit()]
    head = max(heads, key=lambda k: int(k.split(".")[1]))
    output_nc = int(state_dict[head].shape[0])
    limit = MAX_INFERRED_WIDTH
    if not (0 < ngf <= limit and 0 < input_nc <= MAX_INFERRED_CHANNELS and 0 < output_nc <= MAX_INFERRED_CHANNELS
            and len(blocks) <= MAX_INFERRED_BLOCKS):
        raise CheckpointError(f"the weights describe a generator of width {ngf}, {len(blocks)} blocks, {input_nc} "
                              f"inputs and {output_nc} outputs, outside what the loader builds (width <= {limit}, "
                              f"<= {MAX_INFERRED_BLOCKS} blocks, <= {MAX_INFERRED_CHANNELS} channels)")
    return GeneratorConfig(input_nc=input_nc, output_nc=output_nc, ngf=ngf, n_blocks=len(blocks))


@lru_cache(maxsize=8)
def expected_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """Every key and shape of a generator with `config`, from a meta-device model (no memory allocated)."""
    with torch.device("meta"):
        generator = FFCResNetGenerator(config)
    return {k: tuple(v.shape) for k, v in generator.state_dict().items()}


def _describe_keys(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(short(k, 80) for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_weights_fit(state_dict: dict[str, torch.Tensor], config: GeneratorConfig, name: str) -> None:
    """Every key and shape against `config`, before any module is allocated; one line naming the misfits."""
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs {shape}"
                  for k, shape in expected.items() if k in state_dict and tuple(state_dict[k].shape) != shape]
    problems = []
    if missing:
        problems.append(f"missing {_describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {_describe_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_describe_keys(mismatched)}")
    if problems:
        raise CheckpointError(f"weights do not fit config '{name}': " + "; ".join(problems)
                              + "; pick the config the checkpoint was trained with (or omit --config to infer it)")


def load_generator_weights(generator: FFCResNetGenerator, state_dict: dict[str, torch.Tensor], name: str) -> None:
    """strict=True load that reports missing/unexpected keys and shape mismatches by name, in one line."""
    check_weights_fit(state_dict, generator.config, name)
    generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()},
                              strict=True)


def config_name(config: GeneratorConfig) -> str:
    return next((name for name, cfg in CONFIGS.items() if cfg == config), "custom")


def load_inpainting_model(path: str | Path, config: str | None = None, fourier: str = "torch",
                          limits: Limits = DEFAULT_LIMITS) -> InpaintingModel:
    """A ready InpaintingModel (eval mode, fp32, CPU) from any supported checkpoint file.

    `config` names the expected configuration; None infers it (within bounds) from the tensors. Keys and
    shapes are checked against the configuration before the generator is built.
    """
    state_dict = generator_state_dict(collect_tensors(read_checkpoint(path, limits), limits))
    cfg = get_config(config) if config else config_from_state_dict(state_dict)
    name = config or config_name(cfg)
    check_weights_fit(state_dict, cfg, name)
    generator = FFCResNetGenerator(cfg, fourier=fourier)
    load_generator_weights(generator, state_dict, name)
    return InpaintingModel(generator).eval()
