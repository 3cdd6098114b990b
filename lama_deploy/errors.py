"""One-line user errors for every command: what is wrong and what to do, then a non-zero exit."""

from __future__ import annotations

import functools
import sys
from typing import Callable


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
