"""Reading a checkpoint file: the zip archives of torch.save and TorchScript (`<root>/data.pkl` plus
`<root>/data/<key>` records) and bare pickles, without executing anything from them.

Every member of an archive is checked against the archive's real layout before a byte of it is allocated:
it must lie inside the file, not overlap another member it reads, and a compressed one may not expand more
than `max_decompression_ratio`. A stored record therefore costs at most the bytes it occupies on disk.
Files cut short (an interrupted download) are named as such, with "download it again".
"""

from __future__ import annotations

import bisect
import io
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from .budget import Budget
from .records import (DEFAULT_LIMITS, DOWNLOAD_AGAIN, CheckpointError, DamagedCheckpointError, Limits, Record,
                      StorageType, UnsafeCheckpointError, describe_error, short)
from .unpickler import unpickle, unpickle_stream

__all__ = ["member_info", "read_checkpoint"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_ZIP_MAGIC = b"PK\x03\x04"  # a local file header: where every zip archive starts
_LOCAL_HEADER_BYTES = 30  # fixed part of a zip local file header (name and extra field follow)
_INFLATE_SLACK = 1 << 20  # a compressed member may expand ratio x its size plus this (tiny members compress well)
_RECORD_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, KeyError)


class _Layout:
    """Where the archive's members really are: each member read must fit between the start of the file and
    the central directory, not overlap another member read, and (compressed) not expand beyond the ratio."""

    def __init__(self, archive: zipfile.ZipFile, file_size: int, source: str, limits: Limits) -> None:
        self._end = min(file_size, getattr(archive, "start_dir", file_size))  # members lie before the directory
        self._source, self._limits = source, limits
        self._claimed: list[tuple[int, int]] = []  # sorted (start, end) of the members read
        # All compressed members together may expand this much (torch writes them uncompressed).
        self._inflate_budget = limits.max_decompression_ratio * max(1, file_size) + (16 << 20)

    def claim(self, info: zipfile.ZipInfo) -> None:
        """Refuse `info` unless its bytes are really in the file; called before anything is allocated for it."""
        name, ratio = short(info.filename), self._limits.max_decompression_ratio
        start = info.header_offset
        end = start + _LOCAL_HEADER_BYTES + info.compress_size  # at least: its name and extra field come too
        if start < 0 or end > self._end:
            raise DamagedCheckpointError(
                f"{self._source}: member {name} is declared as {info.compress_size} bytes at offset {start}, but the "
                f"file holds {self._end} bytes of members; the file is truncated or crafted; download it again")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise DamagedCheckpointError(f"{self._source}: stored member {name} declares {info.file_size} bytes "
                                         f"but occupies {info.compress_size}; {DOWNLOAD_AGAIN}")
        if info.compress_type != zipfile.ZIP_STORED:
            self._inflate_budget -= info.file_size
            if info.file_size > ratio * info.compress_size + _INFLATE_SLACK or self._inflate_budget < 0:
                raise UnsafeCheckpointError(f"{self._source}: its compressed member {name} would expand more than "
                                            f"{ratio}x; the file is crafted")
        index = bisect.bisect(self._claimed, (start, end))
        before = self._claimed[index - 1] if index else None
        after = self._claimed[index] if index < len(self._claimed) else None
        if (before and before[1] > start) or (after and after[0] < end):
            raise UnsafeCheckpointError(f"{self._source}: member {name} overlaps another member (one stored byte "
                                        "counted twice); the file is crafted")
        self._claimed.insert(index, (start, end))


class _ZipRecords:
    """Reads the archive's tensor data records on demand: only the records the pickle references, each
    checked against the size the pickle gives it and against the archive's layout before anything is read."""

    def __init__(self, archive: zipfile.ZipFile, root: str, source: str, layout: _Layout) -> None:
        self._archive, self._root, self._source, self._layout = archive, root, source, layout
        self._cache: dict[str, Record] = {}

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
        self._layout.claim(info)
        if not expected:
            return torch.UntypedStorage(0)
        buffer = bytearray(expected)
        with self._archive.open(info) as member:
            if member.readinto(buffer) != expected or member.read(1):
                raise DamagedCheckpointError(f"{self._source}: data record {short(name)} is truncated; "
                                             "download it again")
        # Zero-copy: the tensors view the bytes read from the file (copied once more only by load_state_dict).
        return torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()


def member_info(archive: zipfile.ZipFile, name: str, source: str) -> zipfile.ZipInfo:
    """The archive member, refused when encrypted or compressed in a way torch never writes."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise DamagedCheckpointError(f"{source}: record {short(name)} is missing; the file is truncated or "
                                     "damaged; download it again") from None
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{source}: record {short(name)} is encrypted; torch checkpoints never are")
    if info.compress_type not in _RECORD_COMPRESSION:
        raise CheckpointError(f"{source}: record {short(name)} uses zip compression method {info.compress_type}; "
                              "re-save it with torch.save")
    return info


def _read_zip_archive(path: Path, limits: Limits, budget: Budget) -> Any:
    """torch.save (zip) and TorchScript archives: `<root>/data.pkl` plus `<root>/data/<key>` records."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        info = member_info(archive, pickles[0], str(path))
        if info.file_size > limits.max_pickle_bytes:
            raise UnsafeCheckpointError(f"{path}: its data.pkl is {info.file_size} bytes "
                                        f"(limit {limits.max_pickle_bytes}); the file is crafted")
        layout = _Layout(archive, path.stat().st_size, str(path), limits)
        layout.claim(info)  # held to the same layout and ratio as the records
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise DamagedCheckpointError(f"{path}: its data.pkl is truncated; download it again")
        records = _ZipRecords(archive, pickles[0].split("/")[0], str(path), layout)
        return unpickle(data, str(path), records, limits, budget)


def _legacy_records(sizes: dict[str, int]) -> Any:
    """Persistent ids of a legacy file: their sizes noted, tensors made over meta storages (nothing read)."""
    def load(pid: Any) -> Record:
        if type(pid) is not tuple or len(pid) != 6 or not isinstance(pid[1], StorageType) or type(pid[2]) is not str \
                or type(pid[4]) is not int or pid[4] < 0:
            raise CheckpointError("malformed legacy tensor data reference")
        sizes[pid[2]] = pid[4] * pid[1].dtype.itemsize
        return Record(torch.UntypedStorage(sizes[pid[2]], device="meta"), pid[1].dtype)
    return load


def _legacy_is_complete(path: Path, limits: Limits) -> bool:
    """Whether a legacy torch.save file (magic, protocol, system info, object, storage keys pickles, then each
    storage as an 8-byte count and its bytes) holds every byte its pickles announce."""
    with open(path, "rb") as file:
        data = file.read(min(limits.max_pickle_bytes, 64 << 20))  # its pickles come first and are small
    stream, sizes, budget, source = io.BytesIO(data), {}, Budget(limits), str(path)
    try:
        for _ in range(3):  # magic number, protocol version, system info
            unpickle_stream(stream, source, None, limits, budget)
        unpickle_stream(stream, source, _legacy_records(sizes), limits, budget)
        keys = unpickle_stream(stream, source, None, limits, budget)
    except CheckpointError:
        return False
    if type(keys) is not list or any(type(k) is not str or k not in sizes for k in keys):
        return False
    return path.stat().st_size - stream.tell() >= sum(8 + sizes[k] for k in keys)


def _starts_legacy(head: bytes, limits: Limits) -> bool:
    """Whether the file begins with the legacy torch.save magic number pickle."""
    try:
        return unpickle(head, "head", None, limits) == _LEGACY_MAGIC
    except CheckpointError:
        return False


def _read_pickle_file(path: Path, head: bytes, limits: Limits, budget: Budget) -> Any:
    """A file that is not a zip archive: a bare pickle (read as-is) or a legacy (pre-1.6) torch.save file."""
    if _starts_legacy(head, limits):
        if _legacy_is_complete(path, limits):
            raise CheckpointError(f"{path} is in the legacy torch.save format (before PyTorch 1.6), which is not "
                                  "supported; re-save it with a recent torch.save")
        raise DamagedCheckpointError(f"{path} is a legacy torch.save file (before PyTorch 1.6) that is cut short or "
                                     "damaged; download it again (re-save it with a recent torch.save: the legacy "
                                     "format is not supported)")
    size = path.stat().st_size
    if size > limits.max_pickle_bytes:
        raise UnsafeCheckpointError(f"{path} is not a zip archive and is larger than a pickle may be ({size} bytes, "
                                    f"limit {limits.max_pickle_bytes}); {DOWNLOAD_AGAIN}")
    return unpickle(path.read_bytes(), str(path), None, limits, budget)


def read_checkpoint(path: str | Path, limits: Limits = DEFAULT_LIMITS, budget: Budget | None = None) -> Any:
    """The checkpoint's pickled object, read without executing code from it and within `limits` (`budget`: one
    already partly spent, shared with the walk over the object)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass the path of best.ckpt, big-lama.pt or a state_dict")
    budget = budget if budget is not None else Budget(limits)
    try:
        with open(path, "rb") as file:
            head = file.read(64)
        if zipfile.is_zipfile(path):
            return _read_zip_archive(path, limits, budget)
        if head.startswith(_ZIP_MAGIC):
            raise DamagedCheckpointError(f"{path} is a zip archive cut short (its end-of-archive directory is "
                                         "missing: an interrupted download?); download it again")
        return _read_pickle_file(path, head, limits, budget)
    except _ZIP_ERRORS as exc:
        error: CheckpointError = DamagedCheckpointError(f"cannot read {path}: {describe_error(exc)}; {DOWNLOAD_AGAIN}")
    except MemoryError:
        error = UnsafeCheckpointError(f"refusing to load {path}: MemoryError while reading it; the file is damaged or "
                                      "crafted")
    raise error  # outside the handler: the error keeps no reference to the failed read
