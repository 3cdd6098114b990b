"""Wheels from a local folder for a GPU machine without network (`--wheelhouse DIR`).

The folder holds wheels (`*.whl`), possibly compressed (`*.whl.xz`: the standard library; `*.whl.zst`: the
`zstandard` module or the `zstd` tool) and possibly split into parts (`NAME.part000`, `NAME.part001`, ...,
joined in name order), for transfers with a size limit. They are installed with
`pip install --no-index --no-deps --target TARGET` (unpacked directly when pip is missing) into a folder of
the lane's own, which the lane puts on its children's PYTHONPATH: nothing of the machine's Python changes.

For TensorRT-RTX on a Python 3.12 GPU machine (wheels fetched elsewhere):
    pip download tensorrt-rtx-cu13 --no-deps --python-version 3.12 --only-binary=:all: -d WHEELS   (and its
    tensorrt-rtx-cu13-bindings / -libs wheels); xz -9 or split -b 40M for size limits.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

PART = re.compile(r"^(?P<name>.+)\.part\d+$")


def _join_parts(folder: Path, scratch: Path) -> list[Path]:
    """Every file of `folder`, split parts joined into one file in `scratch` (in name order)."""
    groups: dict[str, list[Path]] = {}
    files = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        match = PART.match(path.name)
        if match:
            groups.setdefault(match.group("name"), []).append(path)
        else:
            files.append(path)
    for name, parts in groups.items():
        joined = scratch / name
        with open(joined, "wb") as sink:
            for part in sorted(parts):
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, sink)
        files.append(joined)
    return files


def _decompress(path: Path, scratch: Path) -> Path:
    """`path` as a plain .whl (decompressed into `scratch` when it is .xz or .zst)."""
    if path.name.endswith(".whl"):
        return path
    target = scratch / path.name.rsplit(".", 1)[0]
    if path.name.endswith(".whl.xz"):
        with lzma.open(path) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
        return target
    if path.name.endswith(".whl.zst"):
        try:
            import zstandard  # type: ignore[import-not-found]

            with open(path, "rb") as source, open(target, "wb") as sink:
                zstandard.ZstdDecompressor().copy_stream(source, sink)
            return target
        except ImportError:
            tool = shutil.which("zstd")
            if tool is None:
                raise RuntimeError(f"{path.name}: zstd-compressed, but neither the zstandard module nor the zstd "
                                   "tool is here; compress it with xz instead") from None
            subprocess.run([tool, "-q", "-d", "-f", str(path), "-o", str(target)], check=True, timeout=300)
            return target
    raise RuntimeError(f"{path.name}: not a wheel (.whl, .whl.xz, .whl.zst, or parts NAME.part000...)")


def prepare(folder: Path, scratch: Path) -> list[Path]:
    """The installable .whl files of `folder` (joined and decompressed into `scratch` where needed)."""
    if not folder.is_dir():
        raise RuntimeError(f"--wheelhouse {folder} is not a folder")
    scratch.mkdir(parents=True, exist_ok=True)
    wheels = [_decompress(path, scratch) for path in _join_parts(folder, scratch)]
    if not wheels:
        raise RuntimeError(f"--wheelhouse {folder} holds no wheel")
    return sorted(wheels)


def top_level_names(wheel: Path) -> list[str]:
    """Import names a wheel provides (its top_level.txt, else its top-level packages and modules)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        listed = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        if listed:
            return sorted(set(archive.read(listed[0]).decode().split()))
    tops = set()
    for name in names:
        first = name.split("/")[0]
        if first.endswith((".dist-info", ".data")):
            continue
        tops.add(first[:-3] if first.endswith(".py") else first)
    return sorted(t for t in tops if t.isidentifier())


def _unpack(wheel: Path, target: Path) -> None:
    """What pip does for a wheel, minus scripts and metadata bookkeeping: files to `target`, the purelib and
    platlib trees of `*.data/` merged in."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            parts = member.filename.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            destination = target.joinpath(*parts)
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)


def install(folder: Path, target: Path, timeout_s: float) -> dict[str, Any]:
    """Install the wheels of `folder` into `target`; what happened, for the lane's summary (never raises)."""
    start = time.monotonic()
    result: dict[str, Any] = {"folder": str(folder), "target": str(target)}
    try:
        wheels = prepare(folder, target.parent / "wheelhouse-files")
        result["wheels"] = [w.name for w in wheels]
        result["modules"] = sorted({name for wheel in wheels for name in top_level_names(wheel)})
        target.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--target", str(target)] + [str(w) for w in wheels]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, timeout_s))
        if done.returncode == 0:
            result["method"] = "pip install --no-index --no-deps --target"
        elif "No module named pip" in done.stderr:
            for wheel in wheels:
                _unpack(wheel, target)
            result["method"] = "unpacked (no pip here)"
        else:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            result["error"] = f"pip exit {done.returncode}: {(lines or ['no output'])[-1][:500]}"
    except subprocess.TimeoutExpired:
        result["error"] = f"pip did not finish within {timeout_s:.0f} s"
    except Exception as exc:  # a bad folder or archive: recorded, the lane goes on without the wheels
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["seconds"] = round(time.monotonic() - start, 1)
    return result
