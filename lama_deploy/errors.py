"""One-line user errors for every command: what is wrong and what to do, then a non-zero exit.

Exit codes, the same for every `lama-deploy` command (README "Exit codes"):

    0  success
    1  a check or a job failed (folder mode: some files failed), or a check the user asked for could not run
       (NOT CHECKED)
    2  user error: a bad option, a missing dependency, or any problem with a named input - missing, a
       directory, unreadable/corrupt/unsupported image, wrong-size mask, damaged checkpoint (one line)
    3  internal error: a bug in lama-deploy (the traceback is kept; please report it)
    0  also when the reader of the output goes away (`lama-deploy --help | head`)
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix; printed as one line without a traceback."""


class UsageError(UserError, ValueError):
    """A bad value given by the user (still a ValueError for library callers that catch those)."""


class InputNotFound(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (still a FileNotFoundError for library callers)."""


def missing_dependency(module: str, install: str) -> UserError:
    return UserError(f"{module} is not installed; install it with `{install}`")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cli_entry(prog: str) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Decorator for command `main`s: the project's `UserError`s become `prog: error: ...` and exit code 2.

    Anything else is a bug: its traceback is printed and the exit code is 3, so it never passes for a
    user mistake.
    """

    def wrap(func: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(func)
        def main(argv: list[str] | None = None) -> int:
            try:
                return func(argv)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except BrokenPipeError:
                return stdout_closed()
            except Exception as exc:
                message = user_message(exc)
                if message is not None:
                    print(f"{prog}: error: {message}", file=sys.stderr)
                    return EXIT_USER_ERROR
                traceback.print_exc()
                print(f"{prog}: internal error (a bug in lama-deploy, not your input); exit {EXIT_INTERNAL_ERROR}",
                      file=sys.stderr)
                return EXIT_INTERNAL_ERROR

        return main

    return wrap


def stdout_closed() -> int:
    """The reader of our output went away (`lama-deploy --help | head`): stop quietly, exit 0.

    stdout is pointed at /dev/null so the interpreter's final flush does not raise again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_OK


#: The project's user-error types outside lama_deploy (lama_model imports nothing of the project; the TensorRT
#: import error is an ImportError), matched by module and name so that no heavy module is imported here.
OTHER_USER_ERRORS = {("lama_model", "CheckpointError"), ("lama_deploy.runtime", "TensorRTUnavailable")}


def user_message(exc: BaseException) -> str | None:
    """The one line to print when `exc` is a mistake the user can fix; None for a bug."""
    if isinstance(exc, UserError) or any(cls.__module__.startswith(package) and cls.__name__ == name
                                         for cls in type(exc).__mro__ for package, name in OTHER_USER_ERRORS):
        return one_line(exc)
    if isinstance(exc, ModuleNotFoundError):  # a runtime-only install running a build-machine command
        return install_hint(exc.name or "")
    return None


#: Third-party modules a runtime-only install (`pip install --no-deps`, the Jetson steps) may lack, with
#: what installs them. Only these become a one-line hint; a missing module of the project itself is a bug.
INSTALL_HINTS = {
    "torch": "pip install torch (CPU: --index-url https://download.pytorch.org/whl/cpu; see the README)",
    "onnx": "pip install onnx",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
    "onnxscript": "pip install onnxscript",
    "polygraphy": "pip install polygraphy",
    "PIL": "pip install pillow",
    "numpy": "pip install numpy",
    "tqdm": "pip install tqdm",
    "fastapi": "pip install fastapi uvicorn",
    "uvicorn": "pip install uvicorn",
    "matplotlib": "pip install matplotlib",
    "psutil": "pip install psutil",
}


def install_hint(module: str) -> str | None:
    """`<module> is not installed; install it with ...` for a known third-party module, else None."""
    top = module.split(".")[0]
    if top not in INSTALL_HINTS:
        return None
    return (f"{top} is not installed (this command needs it; a runtime-only install lacks it); "
            f"install it with `{INSTALL_HINTS[top]}`")
