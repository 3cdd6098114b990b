"""Hand-written pickles and archives for the loader's security tests (the red-team reproductions and the fuzz
corpus). Every file is a few KB; nothing here needs the classes the pickles name."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
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


def patch_member(path: Path, member: str, method: int | None = None, crc: int | None = None,
                 compress_size: int | None = None, file_size: int | None = None) -> None:
    """Rewrite a member's method, CRC or sizes in both its local header and its central directory entry."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    # (signature, offset of the name length, offset of the name, offsets of method / crc / sizes)
    for signature, name_length_at, name_at, fields_at in ((b"PK\x03\x04", 26, 30, 8), (b"PK\x01\x02", 28, 46, 10)):
        start = data.find(signature)
        while start >= 0:
            length = struct.unpack_from("<H", data, start + name_length_at)[0]
            if data[start + name_at:start + name_at + length] == name:
                for offset, value, fmt in ((0, method, "<H"), (6, crc, "<I"), (10, compress_size, "<I"),
                                           (14, file_size, "<I")):
                    if value is not None:
                        struct.pack_into(fmt, data, start + fields_at + offset, value)
                break
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


def write_flat_deflated(path: Path, header: bytes, chunk: bytes, count: int, footer: bytes) -> Path:
    """A torch.save-shaped zip whose data.pkl is `header + chunk * count + footer`, deflated, written without
    compressing it all: the chunk is compressed once as a self-contained (full-flush) block and repeated."""
    def block(data: bytes, final: bool = False) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)

    crc = zlib.crc32(header)
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(footer, crc)
    raw = block(header) + block(chunk) * count + block(footer, final=True)
    write_archive(path, raw)  # stored as-is, then declared as what it is: deflated, of the full size
    patch_member(path, "archive/data.pkl", method=zipfile.ZIP_DEFLATED, crc=crc,
                 file_size=len(header) + len(chunk) * count + len(footer))
    return path


# Loads each file like a command does (lama_deploy.errors.cli_entry) under a 3 GB address-space limit, and
# reports per file: exit code, stderr, seconds, peak RSS (VmHWM, reset before each file where Linux allows),
# and what the load left in the process (tracked objects and placeholder classes, after a collection).
RUNNER = r"""
import contextlib, gc, io, json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from lama_deploy.errors import cli_entry
from lama_deploy.host import peak_rss_mb
from lama_model import load_inpainting_model
from lama_model.checkpoint.unpickler import Placeholder

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False

def held():
    gc.collect()
    return len(gc.get_objects()), len(Placeholder.__subclasses__())

for path in sys.argv[1:]:
    main = cli_entry("lama-deploy")(lambda argv, path=path: (load_inpainting_model(path), 0)[1])
    objects, classes = held()
    per_file = reset_peak()
    err, start = io.StringIO(), time.time()
    with contextlib.redirect_stderr(err):
        try:
            rc = main([])
        except BaseException as exc:
            rc, err = 99, io.StringIO(f"uncaught {type(exc).__name__}")
    seconds, peak = time.time() - start, peak_rss_mb()
    objects_after, classes_after = held()
    print(json.dumps({"path": path, "rc": rc, "stderr": err.getvalue()[:2000], "seconds": seconds,
                      "maxrss_mb": peak, "peak_per_file": per_file, "objects_left": objects_after - objects,
                      "classes_left": classes_after - classes}), flush=True)
"""


def run_corpus(paths: list[str], repo: Path, timeout: float) -> dict[str, dict]:
    """RUNNER over `paths` in one subprocess (imports paid once); its JSON line per file, by path."""
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, *paths], capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, f"runner died (signal {-proc.returncode}): {proc.stderr[-2000:]}"
    return {json.loads(line)["path"]: json.loads(line) for line in proc.stdout.splitlines()}
