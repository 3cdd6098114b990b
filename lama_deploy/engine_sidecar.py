"""The JSON sidecar next to every engine, written and read here only; its keys are declared once below.

`<engine>.json` records what the engine was built from and for (ONNX sha256, TensorRT flavour and version,
profiles, precision, target compute capability, I/O, the ONNX's `lama.*` metadata). Pure Python, so the
edge runtime can read it without TensorRT, torch or onnx.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import InputNotFound, UserError
from .files import atomic_output, file_sha256
from .host import host_info
from .profiles import Profile, format_nhw

FORMAT = 1

# Keys of the sidecar (top level).
K_FORMAT = "format"
K_ENGINE = "engine"
K_ENGINE_BYTES = "engine_bytes"
K_ENGINE_SHA256 = "engine_sha256"
K_ONNX = "onnx"
K_ONNX_SHA256 = "onnx_sha256"
K_TENSORRT = "tensorrt"            # {"flavour": ..., "version": ...}
K_PRECISION = "precision"
K_ONNX_PRECISION = "onnx_precision"
K_STRONGLY_TYPED = "strongly_typed"
K_PINNED = "fp32_pinned_layers"
K_TF32 = "tf32"
K_COMPUTE_CAPABILITY = "compute_capability"
K_PROFILES = "profiles"            # [Profile.as_lists()]
K_IO = "io"                        # {name: {"mode": "input"|"output", "shape": [...], "dtype": "float"|"half"}}
K_WORKSPACE = "workspace_mib"
K_OPTIMIZATION_LEVEL = "optimization_level"
K_BUILD_SECONDS = "build_seconds"
K_LAMA = "lama"                    # the ONNX's lama.* metadata
K_HOST = "host"
K_CREATED = "created_utc"
K_NOTES = "notes"
# Keys of the tensorrt section.
K_FLAVOUR = "flavour"
K_VERSION = "version"


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


@dataclass(frozen=True)
class BuildFacts:
    """What a fresh build records (filled by `lama_deploy.export.build_engine`)."""

    flavour: str
    version: str
    precision: str
    onnx_precision: str
    strongly_typed: bool
    pinned: int
    tf32: bool
    compute_capability: str | None      # None when the build GPU could not be asked
    profiles: list[Profile]
    io: dict[str, dict]
    workspace_mib: int | None
    optimization_level: int | None
    build_seconds: float
    metadata: dict[str, str]
    notes: list[str]


def make_sidecar(engine_path: Path, engine_bytes: bytes, onnx_path: Path, facts: BuildFacts) -> dict[str, Any]:
    """The sidecar of a fresh build."""
    return {
        K_FORMAT: FORMAT, K_ENGINE: engine_path.name, K_ENGINE_BYTES: len(engine_bytes),
        K_ENGINE_SHA256: hashlib.sha256(engine_bytes).hexdigest(),
        K_ONNX: str(onnx_path), K_ONNX_SHA256: file_sha256(onnx_path),
        K_TENSORRT: {K_FLAVOUR: facts.flavour, K_VERSION: facts.version},
        K_PRECISION: facts.precision, K_ONNX_PRECISION: facts.onnx_precision, K_STRONGLY_TYPED: facts.strongly_typed,
        K_PINNED: facts.pinned, K_TF32: bool(facts.tf32), K_COMPUTE_CAPABILITY: facts.compute_capability,
        K_PROFILES: [p.as_lists() for p in facts.profiles], K_IO: facts.io, K_WORKSPACE: facts.workspace_mib,
        K_OPTIMIZATION_LEVEL: facts.optimization_level, K_BUILD_SECONDS: round(facts.build_seconds, 2),
        K_LAMA: facts.metadata, K_HOST: host_info(), K_CREATED: datetime.now(timezone.utc).isoformat(timespec="seconds"),
        K_NOTES: facts.notes,
    }


def write_engine_and_sidecar(engine_path: Path, engine_bytes: bytes, sidecar: dict[str, Any]) -> Path:
    """Each file goes to a temporary name and is renamed into place only after both are fully written."""
    side = sidecar_path(engine_path)
    with atomic_output(engine_path) as tmp_engine, atomic_output(side) as tmp_side:
        tmp_engine.write_bytes(engine_bytes)
        tmp_side.write_text(json.dumps(sidecar, indent=2) + "\n")
    return side


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
        expected_sha, expected_bytes = sidecar[K_ENGINE_SHA256], int(sidecar[K_ENGINE_BYTES])
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


def sidecar_metadata(sidecar: dict[str, Any]) -> dict[str, str]:
    """The `lama.*` metadata of the ONNX the engine was built from."""
    return {str(k): str(v) for k, v in _section(sidecar, K_LAMA).items()}


def sidecar_weights(sidecar: dict[str, Any]) -> str:
    """The weights label the ONNX carried (says 'random weights' for demo exports)."""
    from .contract import META_WEIGHTS

    return sidecar_metadata(sidecar).get(META_WEIGHTS, "")


def sidecar_tensorrt(sidecar: dict[str, Any]) -> dict[str, Any]:
    """{"flavour": ..., "version": ...} of the TensorRT that built the engine."""
    return _section(sidecar, K_TENSORRT)


def sidecar_flavour(sidecar: dict[str, Any]) -> str | None:
    return sidecar_tensorrt(sidecar).get(K_FLAVOUR)


def sidecar_io(sidecar: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: info for name, info in _section(sidecar, K_IO).items() if isinstance(info, dict)}


def sidecar_profiles(sidecar: dict[str, Any]) -> list[Profile]:
    """The build profiles; UserError when the sidecar has none readable."""
    try:
        profiles = [Profile.from_lists(entry) for entry in sidecar.get(K_PROFILES) or []]
    except ValueError:
        profiles = []
    if not profiles:
        raise UserError("the engine sidecar lists no readable optimisation profiles (min/opt/max N x H x W); "
                        "rebuild the engine with `lama-deploy build`")
    return profiles


def describe_sidecar(sidecar: dict[str, Any]) -> str:
    """Human-readable lines for `lama-deploy build --inspect`."""
    trt = sidecar_tensorrt(sidecar)
    lines = [f"engine      {sidecar[K_ENGINE]} ({sidecar[K_ENGINE_BYTES] / 2**20:.1f} MiB, sha256 ok)",
             f"tensorrt    {trt.get(K_FLAVOUR)} {trt.get(K_VERSION)}, compute capability "
             f"{sidecar.get(K_COMPUTE_CAPABILITY) or 'of the build GPU'}",
             f"precision   {sidecar.get(K_PRECISION)} (ONNX {sidecar.get(K_ONNX_PRECISION)}, "
             f"{'strongly typed' if sidecar.get(K_STRONGLY_TYPED) else 'weakly typed'})",
             f"onnx        {sidecar.get(K_ONNX)} sha256 {str(sidecar.get(K_ONNX_SHA256))[:16]}..."]
    for index, profile in enumerate(sidecar_profiles(sidecar)):
        shapes = " / ".join(format_nhw(getattr(profile, which)) for which in ("min", "opt", "max"))
        lines.append(f"profile {index}   N x H x W min / opt / max: {shapes}")
    weights = sidecar_weights(sidecar)
    if weights:
        lines.append(f"weights     {weights}")
    return "\n".join(lines)
