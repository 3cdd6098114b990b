"""One-line user errors for every command: what is wrong and what to do, then a non-zero exit."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class UserError(Exception):
    """A mistake the user can fix; printed as one line without a traceback."""


def missing_dependency(module: str, install: str) -> UserError:
    return UserError(f"{module} is not installed; install it with `{install}`")


def cli_entry(prog: str) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Decorator for command `main`s: user-facing exceptions become `prog: error: ...` and exit code 2."""

    def wrap(func: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(func)
        def main(argv: list[str] | None = None) -> int:
            try:
                return func(argv)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                print(f"{prog}: error: {message}", file=sys.stderr)
                return 2

        return main

    return wrap


@contextmanager
def atomic_output(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder {parent} does not exist; create it or choose another --output")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write to {parent}; choose a writable --output")
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
