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
    "export": ("lama_deploy.export.to_onnx", "export LaMa to dynamic-shape ONNX (DFT-as-matmul)"),
    "validate": ("lama_deploy.export.validate", "check an ONNX export against PyTorch with Polygraphy"),
    "build": ("lama_deploy.export.build_engine", "build a dynamic-shape TensorRT engine"),
    "inpaint": ("lama_deploy.runtime.cli", "inpaint an image (or folders) with an engine, ONNX model or checkpoint"),
    "serve": ("lama_deploy.runtime.server", "serve POST /inpaint over HTTP"),
    "triton-repo": ("lama_deploy.runtime.triton", "write a Triton Inference Server model repository"),
    "triton-serve": ("lama_deploy.runtime.triton_serve", "run tritonserver on a repository (python backend ready)"),
    "bench": ("lama_deploy.scripts.bench", "benchmark the deployment paths side by side"),
}


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
