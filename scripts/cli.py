"""`lama-deploy <command>`: one console script over the project's thin command modules.

Each command lives in its own module with a `main(argv) -> int`; they are imported only when called,
so `lama-deploy inpaint` on an edge box never imports torch or the exporter.
"""

from __future__ import annotations

import importlib
import sys

from lama_deploy.errors import EXIT_USER_ERROR, install_hint, stdout_closed

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lama_deploy.scripts.demo", "export, validate and inpaint a sample on the embedded random-weights model"),
    "export": ("lama_deploy.scripts.commands.export", "export LaMa to dynamic-shape ONNX (DFT-as-matmul)"),
    "validate": ("lama_deploy.scripts.commands.validate", "check an ONNX export against PyTorch with Polygraphy"),
    "build": ("lama_deploy.scripts.commands.build", "build a dynamic-shape TensorRT engine"),
    "inpaint": ("lama_deploy.scripts.commands.inpaint", "inpaint an image (or folders) with an engine, ONNX model or checkpoint"),
    "serve": ("lama_deploy.scripts.commands.serve", "serve POST /inpaint over HTTP"),
    "triton-repo": ("lama_deploy.scripts.commands.triton_repo", "write a Triton Inference Server model repository"),
    "triton-serve": ("lama_deploy.scripts.commands.triton_serve", "run tritonserver on a repository (python backend ready)"),
    "bench": ("lama_deploy.scripts.bench", "benchmark the deployment paths side by side"),
    "fourier-report": ("lama_deploy.scripts.commands.fourier_report", "count nodes and FLOPs per Fourier unit of exports"),
    "check-engine": ("lama_deploy.scripts.commands.check_engine", "check an engine on this device against reference files (numpy + TensorRT only)"),
}
# The runtime runs on Python 3.8+; these need what only 3.10+ installs (torch, onnxscript, fastapi, pytriton).
RUNTIME_COMMANDS = ("inpaint", "check-engine")
PYTHON_FLOOR = (3, 10)


def _usage() -> str:
    lines = ["usage: lama-deploy <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`lama-deploy <command> -h` shows a command's options.")
    lines.append("exit codes: 0 ok, 1 a check or job failed (or NOT CHECKED), 2 user error, 3 internal error")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return dispatch(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        return stdout_closed()


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"lama-deploy: unknown command '{command}'; run `lama-deploy --help` for the list", file=sys.stderr)
        return 2
    if command not in RUNTIME_COMMANDS and sys.version_info[:2] < PYTHON_FLOOR:
        print(f"lama-deploy {command}: error: needs Python {'.'.join(map(str, PYTHON_FLOOR))} or newer (this is "
              f"{sys.version.split()[0]}); only `inpaint` and `check-engine` run on Python 3.8", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except ModuleNotFoundError as exc:  # a runtime-only install (--no-deps, Jetson) running a build command
        hint = install_hint(exc.name or "")
        if hint is None:
            raise
        print(f"lama-deploy {command}: error: {hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
