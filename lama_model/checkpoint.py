"""Reading LaMa checkpoints without executing code from them, and mapping their keys onto the generator.

Three layouts are accepted, all found by shape rather than by one hard-coded prefix:
- the official PyTorch Lightning `best.ckpt` (`state_dict` with `generator.` keys, plus discriminator and
  loss-network keys, which are dropped, and non-tensor hyper-parameters);
- a plain generator `state_dict` (`torch.save(generator.state_dict())`), with or without a prefix;
- the TorchScript `big-lama.pt` of IOPaint / lama-cleaner: its weights are read from the archive's pickled
  module tree; its code is never compiled or run.

Safety: pickles are read with a restricted unpickler. Tensor rebuilding and plain containers are allowed;
a call to anything that can execute code (os, subprocess, builtins.eval, ...) is refused with
`UnsafeCheckpointError`; any other foreign object (a config class of a library that is not installed)
becomes an inert placeholder, so its tensors still load.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .configs import GeneratorConfig, get_config
from .ffc import FFCResNetGenerator
from .inpainting import InpaintingModel

ANCHOR_KEY = "model.1.ffc.convl2l.weight"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line that says what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks to call something that can execute code."""


# --- restricted unpickling -------------------------------------------------------------------------------

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "Tensor"): torch.Tensor,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
}
for _dtype_name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool"):
    _ALLOWED_GLOBALS[("torch", _dtype_name)] = getattr(torch, _dtype_name)

# Modules whose callables can run code or touch the system: a pickle that names them is refused.
_FORBIDDEN_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "socket", "importlib",
    "runpy", "pty", "code", "codeop", "ctypes", "pickle", "_pickle", "marshal", "types", "operator",
    "functools", "io", "webbrowser", "platform", "multiprocessing", "asyncio", "threading", "signal",
    "tempfile", "pathlib", "glob", "urllib", "http", "requests", "torch", "numpy", "pdb", "timeit",
)


class _OpaqueMeta(type):
    def __call__(cls, *args, **kwargs):
        # Unknown classes are re-created from their data, never from their own code.
        return cls.__new__(cls)


class _Opaque(metaclass=_OpaqueMeta):
    """Inert stand-in for a class the checkpoint references; it keeps the pickled state."""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_state"] = None
        obj.__dict__["_items"] = {}
        obj.__dict__["_list"] = []
        return obj

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self._items[key] = value

    def append(self, value: Any) -> None:
        self._list.append(value)

    def extend(self, values: Any) -> None:
        self._list.extend(values)


def _opaque_class(module: str, name: str) -> type:
    return _OpaqueMeta(name, (_Opaque,), {"__module__": f"opaque.{module}"})


def _is_forbidden(module: str) -> bool:
    root = module.split(".")[0]
    return root in _FORBIDDEN_MODULES


_STORAGE_DTYPES = {
    "UntypedStorage": torch.uint8, "ByteStorage": torch.uint8, "CharStorage": torch.int8,
    "ShortStorage": torch.int16, "IntStorage": torch.int32, "LongStorage": torch.int64,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16, "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64, "BoolStorage": torch.bool,
}


class _StorageType:
    """What a pickled `torch.FloatStorage` (etc.) reference resolves to: just its dtype."""

    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES.get(name)
        if self.dtype is None:
            raise UnsafeCheckpointError(f"checkpoint names an unknown storage type torch.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, storages: dict[str, torch.UntypedStorage] | None = None,
                 source: str = "") -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if _is_forbidden(module):
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle calls {module}.{name}, which could execute code; "
                "only load checkpoints from sources you trust, or re-save the weights as a plain state_dict")
        return _opaque_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(f"{self._source}: unsupported persistent record {pid!r:.60}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self._storages:
            raise CheckpointError(f"{self._source}: tensor data record {key} is missing; the file is truncated")
        return torch.storage.TypedStorage(wrap_storage=self._storages[key], dtype=storage_type.dtype, _internal=True)


def _unpickle(data: bytes, storages: dict[str, torch.UntypedStorage] | None, source: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data), storages, source).load()
    except CheckpointError:
        raise
    except Exception as exc:  # malformed pickle: report one line, not a stack trace
        raise CheckpointError(f"cannot read {source}: {type(exc).__name__}: {exc}") from None


def _read_zip_archive(path: Path) -> Any:
    """torch.save (zip) and TorchScript archives: `<root>/data.pkl` plus `<root>/data/<key>` records."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        root = pickles[0].split("/")[0]
        storages = {}
        for name in names:
            if name.startswith(f"{root}/data/") and not name.endswith("/"):
                raw = bytearray(archive.read(name))
                storages[name.rsplit("/", 1)[1]] = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) \
                    if raw else torch.UntypedStorage(0)
        return _unpickle(archive.read(pickles[0]), storages, str(path))


def read_checkpoint(path: str | Path) -> Any:
    """The checkpoint's pickled object, read without executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass the path of best.ckpt, big-lama.pt or a state_dict")
    if zipfile.is_zipfile(path):
        return _read_zip_archive(path)
    # Legacy (pre-1.6) torch.save files: magic, protocol and sys-info pickles precede the object; not
    # supported here. A bare pickle of tensors-free data is read as-is.
    return _unpickle(path.read_bytes(), None, str(path))


# --- finding the generator's tensors ----------------------------------------------------------------------

def collect_tensors(obj: Any, prefix: str = "", out: dict[str, torch.Tensor] | None = None,
                    depth: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor reachable from `obj`, named by its dotted path (dict keys and object attributes)."""
    out = {} if out is None else out
    if depth > 32:
        return out
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            collect_tensors(value, f"{prefix}{key}.", out, depth + 1)
    elif isinstance(obj, _Opaque):
        for source in (obj._state if isinstance(obj._state, dict) else {}, obj._items):
            for key, value in source.items():
                collect_tensors(value, f"{prefix}{key}.", out, depth + 1)
        if isinstance(obj._state, tuple):  # (state, slotstate) pairs
            for part in obj._state:
                collect_tensors(part, prefix, out, depth + 1)
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


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Infer width and depth from the tensors themselves."""
    stem = state_dict[ANCHOR_KEY]
    ngf, input_nc = int(stem.shape[0]), int(stem.shape[1])
    n_blocks = len({k.split(".")[1] for k in state_dict if ".conv1.ffc." in k})
    head = [k for k in state_dict if k.endswith(".weight") and state_dict[k].dim() == 4]
    output_nc = int(state_dict[sorted(head, key=lambda k: int(k.split(".")[1]))[-1]].shape[0])
    return GeneratorConfig(input_nc=input_nc, output_nc=output_nc, ngf=ngf, n_blocks=n_blocks)


def _describe_keys(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_generator_weights(generator: FFCResNetGenerator, state_dict: dict[str, torch.Tensor], name: str) -> None:
    """strict=True load that reports missing/unexpected keys and shape mismatches by name, in one line."""
    expected = generator.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
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
    generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()},
                              strict=True)


def config_name(config: GeneratorConfig) -> str:
    from .configs import CONFIGS

    return next((name for name, cfg in CONFIGS.items() if cfg == config), "custom")


def load_inpainting_model(path: str | Path, config: str | None = None, fourier: str = "torch") -> InpaintingModel:
    """A ready InpaintingModel (eval mode, fp32, CPU) from any supported checkpoint file.

    `config` names the expected configuration; None infers it from the tensors.
    """
    state_dict = generator_state_dict(collect_tensors(read_checkpoint(path)))
    cfg = get_config(config) if config else config_from_state_dict(state_dict)
    generator = FFCResNetGenerator(cfg, fourier=fourier)
    load_generator_weights(generator, state_dict, config or config_name(cfg))
    return InpaintingModel(generator).eval()
