"""Hand-written pickles and archives for the loader's security tests (the red-team reproductions and the fuzz
corpus). Every file is a few KB; nothing here needs the classes the pickles name."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"
STOP = b"."
MARK, TUPLE, TUPLE1, TUPLE2, REDUCE, BUILD, EMPTY_DICT, SETITEM, SETITEMS = b"(", b"t", b"\x85", b"\x86", b"R", \
    b"b", b"}", b"s", b"u"
EMPTY_LIST, APPEND, APPENDS, POP, NEWOBJ, BINPERSID, NEWTRUE = b"]", b"a", b"e", b"0", b"\x81", b"Q", b"\x88"


def glob(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def integer(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def tuple_of(*parts: bytes) -> bytes:
    return MARK + b"".join(parts) + TUPLE


def call(func: bytes, *args: bytes) -> bytes:
    return func + tuple_of(*args) + REDUCE


def storage_ref(key: str, numel: int, storage: str = "FloatStorage") -> bytes:
    """The persistent id torch.save writes for a tensor's storage record."""
    return tuple_of(text("storage"), glob("torch", storage), text(key), text("cpu"), integer(numel)) + BINPERSID


def tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> bytes:
    ints = lambda values: tuple_of(*(integer(v) for v in values))  # noqa: E731
    return call(glob("torch._utils", "_rebuild_tensor_v2"), storage_ref(key, numel), integer(offset), ints(size),
                ints(stride), b"\x89", glob("collections", "OrderedDict") + tuple_of() + REDUCE)


def dict_of(**items: bytes) -> bytes:
    return EMPTY_DICT + MARK + b"".join(text(k) + v for k, v in items.items()) + SETITEMS


def write_archive(path: Path, pickle_bytes: bytes, records: dict[str, bytes] | None = None,
                  compress_pickle: bool = False) -> Path:
    """A torch.save-shaped zip: archive/data.pkl and archive/data/<key> (stored, like torch writes them)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes,
                         compress_type=zipfile.ZIP_DEFLATED if compress_pickle else zipfile.ZIP_STORED)
        for key, data in (records or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return path


def add_zero_bomb(path: Path, name: str, size: int) -> None:
    """Append a deflated member of `size` zero bytes (a few hundred KB on disk), streamed."""
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        chunk = bytes(1 << 20)
        with archive.open(info, "w", force_zip64=True) as member:
            for _ in range(size // len(chunk)):
                member.write(chunk)


def patch_central_header(path: Path, member: str, flag_bits: int | None = None,
                         compression: int | None = None) -> None:
    """Rewrite a member's flags or compression method in the central directory (what zipfile trusts)."""
    data = bytearray(path.read_bytes())
    start = data.rfind(b"PK\x01\x02", 0, data.rfind(member.encode()) + 1)
    if flag_bits is not None:
        data[start + 8:start + 10] = struct.pack("<H", flag_bits)
    if compression is not None:
        data[start + 10:start + 12] = struct.pack("<H", compression)
    path.write_bytes(bytes(data))


def deflated_size(data: bytes) -> int:
    return len(zlib.compress(data))
