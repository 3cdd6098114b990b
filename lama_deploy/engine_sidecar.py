"""The JSON sidecar written next to every engine: one reader for the builder, runtime, server and Triton.

`<engine>.json` records what the engine was built from and for (ONNX sha256, TensorRT flavour and version,
profiles, precision, target compute capability, the ONNX's `lama.*` metadata). Pure Python, so the edge
runtime can read it without TensorRT, torch or onnx.
"""

from __future__ import annotations

import hashlib
import json
import resource
from pathlib import Path
from typing import Any

from . import contract as C
from .errors import InputNotFound, UserError


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar as a dict, or {} when there is none or it is unreadable (engines built elsewhere)."""
    path = sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def verify_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar, after checking (size + sha256) that the engine file is the one it describes."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise InputNotFound(f"engine {engine_path} not found")
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise UserError(f"{side.name} not found next to the engine; rebuild with `lama-deploy build` to get one")
    try:
        sidecar = json.loads(side.read_text())
        expected_sha, expected_bytes = sidecar["engine_sha256"], int(sidecar["engine_bytes"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{side.name} is not a lama-deploy engine sidecar; rebuild the engine") from None
    size = engine_path.stat().st_size
    if size != expected_bytes or file_sha256(engine_path) != expected_sha:
        raise UserError(f"{engine_path.name} is corrupt or was replaced: {size} bytes, sha256 differs from "
                        f"{side.name} ({expected_bytes} bytes); rebuild it")
    return sidecar


def _section(sidecar: dict[str, Any], key: str) -> dict[str, Any]:
    value = sidecar.get(key)
    return value if isinstance(value, dict) else {}


def sidecar_weights(sidecar: dict[str, Any]) -> str:
    """The weights label the ONNX carried (says 'random weights' for demo exports)."""
    return str(_section(sidecar, "lama").get(C.META_WEIGHTS, ""))


def sidecar_flavour(sidecar: dict[str, Any]) -> str | None:
    return _section(sidecar, "tensorrt").get("flavour")


def sidecar_tensorrt(sidecar: dict[str, Any]) -> dict[str, Any]:
    return _section(sidecar, "tensorrt")
