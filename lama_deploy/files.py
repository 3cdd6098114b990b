"""Writing and fingerprinting files: nothing half-written is left behind, one sha256 for every command."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_output(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    check_output_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes files 0600; give the result the permissions a plain open() would (e.g. for a Triton
    # container running as another user).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_output_parent(path: str | Path, flag: str = "--output") -> None:
    """Fail in one line, before any work, when `path`'s folder is missing or read-only."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder {parent} does not exist; create it or choose another {flag}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write to {parent}; choose a writable {flag}")


def check_output_file(path: str | Path, flag: str = "--output") -> None:
    """`check_output_parent`, and `path` must not be a folder."""
    check_output_parent(path, flag)
    if Path(path).is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
