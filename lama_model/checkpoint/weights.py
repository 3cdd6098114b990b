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

import itertools
from collections import deque
from pathlib import Path
from typing import Any, Iterable

import torch

from ..configs import CONFIGS, GeneratorConfig, get_config
from ..ffc import FFCResNetGenerator
from ..inpainting import InpaintingModel
from .archive import read_checkpoint
from .budget import Budget
from .records import DEFAULT_LIMITS, CheckpointError, Limits, RefusedCall, UnsafeCheckpointError, short
from .unpickler import Placeholder

ANCHOR_KEY = "model.1.ffc.convl2l.weight"


# --- finding the generator's tensors ----------------------------------------------------------------------

MAX_NAME_CHARS = 1024  # a dotted path longer than this is no LaMa key: its tensor is skipped, never named
_WALK_ENTRY_BYTES = 160  # one queued child: its queue entry and its (parent, key) link
_NAME_BYTES = 120  # one named tensor: its str header and its slot in the result


def _children(node: Any) -> Iterable[tuple[Any, Any]]:
    """(key, child) pairs of a dict or a placeholder (its pickled state, items and list), read through the
    types' own methods: an instance attribute named `items` is never what gets called."""
    if isinstance(node, dict):
        return dict.items(node)
    states = node._state if type(node._state) is tuple else (node._state,)  # (state, slotstate) pairs
    return itertools.chain(*(dict.items(state) for state in states if isinstance(state, dict)),
                           dict.items(node._items), enumerate(node._list))


def _key_text(key: Any) -> str | None:
    """A key as a name part: short strings and small ints only (others are not LaMa keys)."""
    if type(key) is str:
        return key if len(key) <= 200 else None
    return str(key) if type(key) is int and key.bit_length() <= 64 else None


def _name(links: list[tuple[int, str, int]], index: int) -> str:
    parts = []
    while index > 0:
        index, key, _ = links[index]
        parts.append(key)
    return ".".join(reversed(parts))


def collect_tensors(obj: Any, limits: Limits = DEFAULT_LIMITS, budget: Budget | None = None,
                    source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Every tensor reachable from `obj` through dicts and object state, named by its dotted path.

    Breadth-first, so a tensor reachable by several paths gets its shortest name; each container is visited
    once (a shared DAG costs its size, not its number of paths). Names are built only for tensors, from
    (parent, key) links, so deep paths cost nothing until a tensor ends one. Depth is bounded; nodes, links,
    names and time are charged to `budget` (the one the pickle was read with, when given).
    """
    budget = budget if budget is not None else Budget(limits)
    try:
        return _walk(obj, limits, budget)
    except RefusedCall as exc:
        error = UnsafeCheckpointError(f"refusing to load {source}: walking its objects takes {exc.args[0]}; "
                                      "the file is damaged or crafted")
    except (MemoryError, RecursionError) as exc:
        error = UnsafeCheckpointError(f"refusing to load {source}: {type(exc).__name__} while walking its objects; "
                                      "the file is damaged or crafted")
    raise error  # outside the handler: the error keeps no reference to the walk


def _walk(obj: Any, limits: Limits, budget: Budget) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    links: list[tuple[int, str, int]] = [(0, "", -1)]  # (parent link, key, length of the dotted name)
    queue: deque[tuple[Any, int, int]] = deque([(obj, 0, 0)])
    while queue:
        node, link, depth = queue.popleft()
        if isinstance(node, torch.Tensor):
            budget.spend(1, links[link][2] + _NAME_BYTES)
            out.setdefault(_name(links, link), node)
            continue
        if id(node) in seen or not isinstance(node, (dict, Placeholder)):
            continue
        seen.add(id(node))
        if depth >= limits.max_depth:
            raise UnsafeCheckpointError(f"checkpoint nests objects deeper than {limits.max_depth} levels; "
                                        "the file is damaged or crafted")
        if not len(seen) % 1024:
            budget.check_time()
        visited = 0
        for key, child in _children(node):
            visited += 1
            text = _key_text(key) if isinstance(child, (torch.Tensor, dict, Placeholder)) else None
            length = links[link][2] + 1 + len(text) if text is not None else MAX_NAME_CHARS + 1
            if length <= MAX_NAME_CHARS:
                budget.spend(1, _WALK_ENTRY_BYTES)
                links.append((link, text, length))
                queue.append((child, len(links) - 1, depth + 1))
        budget.spend(visited + 1, _WALK_ENTRY_BYTES)
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


def _layer_index(key: str) -> int | None:
    """N of `model.N.<...>`, when written in ASCII digits (str.isdigit alone also accepts '²', which int()
    refuses)."""
    parts = key.split(".", 2)
    index = parts[1] if len(parts) > 1 else ""
    return int(index) if 0 < len(index) <= 6 and index.isascii() and index.isdigit() else None


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Infer width and depth from the tensors themselves, refusing sizes no LaMa generator has."""
    stem = state_dict[ANCHOR_KEY]
    if stem.dim() != 4:
        raise CheckpointError(f"{ANCHOR_KEY} has shape {tuple(stem.shape)[:8]}, not a 4-D convolution weight; "
                              "this is not a LaMa generator")
    ngf, input_nc = int(stem.shape[0]), int(stem.shape[1])
    blocks = {_layer_index(k) for k in state_dict if ".conv1.ffc." in k} - {None}
    heads = [k for k in state_dict if k.endswith(".weight") and state_dict[k].dim() == 4
             and _layer_index(k) is not None]  # the anchor is one
    head = max(heads, key=_layer_index)
    output_nc = int(state_dict[head].shape[0])
    limit = MAX_INFERRED_WIDTH
    if not (0 < ngf <= limit and 0 < input_nc <= MAX_INFERRED_CHANNELS and 0 < output_nc <= MAX_INFERRED_CHANNELS
            and len(blocks) <= MAX_INFERRED_BLOCKS):
        raise CheckpointError(f"the weights describe a generator of width {ngf}, {len(blocks)} blocks, {input_nc} "
                              f"inputs and {output_nc} outputs, outside what the loader builds (width <= {limit}, "
                              f"<= {MAX_INFERRED_BLOCKS} blocks, <= {MAX_INFERRED_CHANNELS} channels)")
    return GeneratorConfig(input_nc=input_nc, output_nc=output_nc, ngf=ngf, n_blocks=len(blocks))


def check_weights_own_bytes(state_dict: dict[str, torch.Tensor]) -> None:
    """Every weight must hold bytes of its own in the file: a view whose elements overlap (stride 0), or two
    weights sharing bytes, would let a file of a few KB pass for a large model that is then allocated in full.
    With this, the parameter bytes a file claims are at most the record bytes it holds."""
    spans = []
    for key, tensor in state_dict.items():
        if tensor.numel() == 0:
            continue
        reach = 0  # the furthest element reached by the dimensions so far, in elements
        for stride, size in sorted((s, n) for n, s in zip(tensor.shape, tensor.stride()) if n > 1):
            if stride <= reach:
                raise UnsafeCheckpointError(f"weight {short(key, 80)} is a view whose elements overlap (stride "
                                            f"{stride}); checkpoints store every element; the file is crafted")
            reach += (size - 1) * stride
        start = tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size()
        spans.append((start, start + (reach + 1) * tensor.element_size(), key))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise UnsafeCheckpointError(f"weights {short(first, 80)} and {short(second, 80)} share bytes of the file; "
                                        "checkpoints store each weight once; the file is crafted")


def expected_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """Every key and shape of a generator with `config`, from a meta-device model (no memory allocated; not
    cached, so nothing of a refused file stays in the process)."""
    with torch.device("meta"):
        generator = FFCResNetGenerator(config)
    return {k: tuple(v.shape) for k, v in generator.state_dict().items()}


def _describe_keys(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(short(k, 80) for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_weights_fit(state_dict: dict[str, torch.Tensor], config: GeneratorConfig, name: str,
                      expected: dict[str, tuple[int, ...]] | None = None) -> None:
    """Every key and shape against `config` (or `expected`, the shapes of a generator already built), before
    any module is allocated; one line naming the misfits."""
    expected = expected_shapes(config) if expected is None else expected
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
    check_weights_fit(state_dict, generator.config, name,
                      {k: tuple(v.shape) for k, v in generator.state_dict().items()})
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
    budget = Budget(limits)  # one budget for reading the pickle and walking its objects
    objects = read_checkpoint(path, limits, budget)
    state_dict = generator_state_dict(collect_tensors(objects, limits, budget, str(path)))
    del objects  # everything but the generator's tensors goes now
    cfg = get_config(config) if config else config_from_state_dict(state_dict)
    check_weights_own_bytes(state_dict)
    name = config or config_name(cfg)
    check_weights_fit(state_dict, cfg, name)
    generator = FFCResNetGenerator(cfg, fourier=fourier)
    load_generator_weights(generator, state_dict, name)
    return InpaintingModel(generator).eval()
