"""Reading a checkpoint file: the zip archives of torch.save and TorchScript (`<root>/data.pkl` plus
`<root>/data/<key>` records) and bare pickles, without executing anything from them.

Zip records are read only when the pickle references them, and only after their size is checked.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from .records import (DEFAULT_LIMITS, CheckpointError, Limits, Record, StorageType, UnsafeCheckpointError,
                      describe_error, short)
from .unpickler import unpickle

__all__ = ["member_info", "read_checkpoint"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_RECORD_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, KeyError)


# --- reading the file ---------------------------------------------------------------------------------------

class _ZipRecords:
    """Reads the archive's tensor data records on demand: only the records the pickle references, each
    checked against the size the pickle gives it before anything is decompressed."""

    def __init__(self, archive: zipfile.ZipFile, root: str, source: str, limits: Limits) -> None:
        self._archive, self._root, self._source, self._limits = archive, root, source, limits
        self._cache: dict[str, Record] = {}
        # Compressed records may expand this much in total (torch writes them uncompressed).
        self._inflate_budget = limits.max_decompression_ratio * max(1, archive.fp.seek(0, 2)) + (16 << 20)

    def __call__(self, pid: Any) -> Record:
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage" or not isinstance(pid[1], StorageType):
            raise CheckpointError(f"{self._source}: unsupported tensor data reference; re-save it with torch.save")
        dtype, key, numel = pid[1].dtype, pid[2], pid[4]
        if type(key) is not str or type(numel) is not int or numel < 0:
            raise CheckpointError(f"{self._source}: malformed tensor data reference")
        if key not in self._cache:
            self._cache[key] = Record(self._read(f"{self._root}/data/{key}", numel * dtype.itemsize), dtype)
        record = self._cache[key]
        if record.storage.nbytes() != numel * dtype.itemsize:
            raise CheckpointError(f"{self._source}: data record {short(key)} is used with two different sizes")
        return Record(record.storage, dtype)

    def _read(self, name: str, expected: int) -> torch.UntypedStorage:
        info = member_info(self._archive, name, self._source)
        if info.file_size != expected:
            raise CheckpointError(f"{self._source}: data record {short(name)} holds {info.file_size} bytes but its "
                                  f"tensor storage needs {expected}; the file is truncated or crafted")
        if info.compress_type != zipfile.ZIP_STORED:
            self._inflate_budget -= info.file_size
            if self._inflate_budget < 0:
                raise UnsafeCheckpointError(f"{self._source}: its compressed records expand more than "
                                            f"{self._limits.max_decompression_ratio}x; the file is crafted")
        if not expected:
            return torch.UntypedStorage(0)
        buffer = bytearray(expected)
        with self._archive.open(info) as member:
            if member.readinto(buffer) != expected or member.read(1):
                raise CheckpointError(f"{self._source}: data record {short(name)} is truncated")
        # Zero-copy: the tensors view the bytes read from the file (copied once more only by load_state_dict).
        return torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()


def member_info(archive: zipfile.ZipFile, name: str, source: str) -> zipfile.ZipInfo:
    """The archive member, refused when encrypted or compressed in a way torch never writes."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{source}: record {short(name)} is missing; the file is truncated") from None
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{source}: record {short(name)} is encrypted; torch checkpoints never are")
    if info.compress_type not in _RECORD_COMPRESSION:
        raise CheckpointError(f"{source}: record {short(name)} uses zip compression method {info.compress_type}; "
                              "re-save it with torch.save")
    return info


def _read_zip_archive(path: Path, limits: Limits) -> Any:
    """torch.save (zip) and TorchScript archives: `<root>/data.pkl` plus `<root>/data/<key>` records."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        info = member_info(archive, pickles[0], str(path))
        if info.file_size > limits.max_pickle_bytes:
            raise UnsafeCheckpointError(f"{path}: its data.pkl is {info.file_size} bytes "
                                        f"(limit {limits.max_pickle_bytes}); the file is crafted")
        with archive.open(info) as member:
            data = member.read(limits.max_pickle_bytes + 1)
        records = _ZipRecords(archive, pickles[0].split("/")[0], str(path), limits)
        return unpickle(data, str(path), records, limits)


def read_checkpoint(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The checkpoint's pickled object, read without executing code from it and within `limits`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass the path of best.ckpt, big-lama.pt or a state_dict")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip_archive(path, limits)
        # A bare pickle without tensors is read as-is; legacy (pre-1.6) torch.save files start with a magic
        # number pickle and are not supported.
        if path.stat().st_size > limits.max_pickle_bytes:
            raise UnsafeCheckpointError(f"{path} is not a zip archive and is larger than a pickle may be")
        obj = unpickle(path.read_bytes(), str(path), None, limits)
        if type(obj) is int and obj == _LEGACY_MAGIC:
            raise CheckpointError(f"{path} is in the legacy torch.save format (before PyTorch 1.6), which is not "
                                  "supported; re-save it with a recent torch.save")
        return obj
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"cannot read {path}: {describe_error(exc)}; the file is damaged") from None
