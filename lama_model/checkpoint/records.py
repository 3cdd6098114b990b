"""Facts and bounds shared by the checkpoint reader: its errors, its limits, tensor data records, and how a
value from the file may appear in a message (truncated, never formatted as a container).

A tensor is only ever a view of a record that holds every byte it covers: no uninitialised memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


class RefusedCall(Exception):
    """An allowlisted constructor was called with arguments it does not accept (one-line reason)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line that says what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks for something that could execute code or exhaust the machine."""


class DamagedCheckpointError(CheckpointError):
    """The file is cut short or corrupted (an interrupted download, most likely); the message says to download
    it again."""


DOWNLOAD_AGAIN = "the file is damaged (an interrupted or corrupted download?) or not a checkpoint; download it again"


@dataclass(frozen=True)
class Limits:
    """Budgets of what one checkpoint may make the loader do; defaults fit the official checkpoints with room
    to spare (their pickles hold thousands of objects, not millions). docs/security.md lists them."""

    max_depth: int = 100  # nesting of tuples/frozensets (hashed) and of the walked object tree
    max_tuple_size: int = 100_000  # hashing cost of one tuple/frozenset (through shared children), iterable args
    max_objects: int = 5_000_000  # objects, container elements and key hashing work of one read, tree walk included
    max_tensor_elements: int = 1 << 28  # elements of one tensor (1 GiB of fp32)
    max_pickle_bytes: int = 512 << 20  # the data.pkl record
    max_decompression_ratio: int = 20  # a compressed member may not expand more than this (plus 1 MiB)
    max_memory: int = 256 << 20  # bytes its objects, stack, marks, memo, classes and tensor names may take
    max_opcodes: int = 20_000_000  # pickle opcodes executed
    max_seconds: float = 30.0  # wall-clock time of reading the pickle and walking its objects
    max_classes: int = 10_000  # distinct unknown class names (each becomes a placeholder class for this read)


DEFAULT_LIMITS = Limits()


def short(text: Any, limit: int = 60) -> str:
    """A name from the file, safe to put in a one-line message (never formats containers)."""
    value = text if isinstance(text, str) else type(text).__name__
    value = "".join(c if c.isprintable() else "?" for c in value[:limit])
    return value + ("..." if isinstance(text, str) and len(text) > limit else "")


class StorageType:
    """What `torch.FloatStorage` (etc.) resolves to: just its dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


STORAGE_DTYPES = {
    "UntypedStorage": torch.uint8, "ByteStorage": torch.uint8, "CharStorage": torch.int8,
    "ShortStorage": torch.int16, "IntStorage": torch.int32, "LongStorage": torch.int64,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16, "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64, "BoolStorage": torch.bool,
}


class Record:
    """A tensor data record (persistent id) of the archive: its bytes and the dtype the pickle gives them."""

    __slots__ = ("storage", "dtype")

    def __init__(self, storage: torch.UntypedStorage, dtype: torch.dtype) -> None:
        self.storage, self.dtype = storage, dtype


RecordLoader = Callable[[Any], Record]


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if type(value) not in (tuple, list, torch.Size) or len(value) > 16 or any(
            type(v) is not int or v < 0 for v in value):
        raise RefusedCall(f"tensor {what} that is not a short tuple of non-negative integers")
    return tuple(value)


def rebuild_tensor(limits: Limits, record: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """A view of `record`, refused unless every element it covers lies inside the record."""
    if not isinstance(record, Record):
        raise RefusedCall("tensor rebuilt from something that is not a data record")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or type(offset) is not int or offset < 0:
        raise RefusedCall("tensor with mismatched size/stride or a bad offset")
    numel = 1
    for extent in size:
        numel *= extent
    if numel > limits.max_tensor_elements:
        raise RefusedCall(f"a tensor of {numel} elements (limit {limits.max_tensor_elements})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else 0
    available = record.storage.nbytes() // record.dtype.itemsize
    if numel and last >= available:
        raise RefusedCall(f"a tensor that needs {last + 1} elements but its data record holds {available}; "
                                 "the file is truncated or crafted")
    tensor = torch.empty((0,), dtype=record.dtype, device=record.storage.device)  # meta: legacy files, sized only
    return tensor.set_(record.storage, offset, size, stride)


def describe_error(exc: BaseException) -> str:
    """`Type: message`, formatted only from short strings and numbers (never a container from the file)."""
    parts = [a for a in exc.args if type(a) is str or (type(a) is int and a.bit_length() < 256)]
    text = " ".join(short(str(a), 120) for a in parts[:2]) if len(parts) == len(exc.args) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
