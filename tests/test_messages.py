"""User messages name real command-line flags, not Python parameter names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("export", "runtime", "scripts", "lama_deploy") for p in (ROOT / folder).rglob("*.py")]
#: Flags of other tools that our messages and generated commands quote on purpose.
OTHER_TOOLS = {
    "scripts/trtexec_commands.py": "trtexec / polygraphy command lines",
    "export/trt_builder.py": "polygraphy flags in a generated script",
    "export/validation_report.py": "the `polygraphy run` replay line",
    "runtime/triton/serve.py": "the `tritonserver` command line",
    "lama_deploy/polygraphy_json.py": "`polygraphy run --load-inputs/--save-inputs` in its docs",
    "scripts/commands/check_engine.py": "`polygraphy run --load-outputs` in its docs",
    "export/polygraphy_hooks.py": "`polygraphy convert` flags in its usage line",
    "scripts/gpu_lane/lane.py": "pytest flags of the GPU lane's child runs",
    "scripts/gpu_lane/report.py": "the `nvidia-smi` query",
    "scripts/gpu_lane/wheelhouse.py": "pip and zstd flags of the wheelhouse install",
}
OTHER_FLAGS = {"--help", "--index-url", "--no-deps", "--model-repository"}  # pip, tritonserver


def _add_argument_calls(text: str) -> list[str]:
    """The argument text of every `add_argument(...)` call, parentheses balanced (help texts hold some)."""
    calls = []
    for start in (m.end() for m in re.finditer(r"add_argument\(", text)):
        depth, end = 1, start
        while depth and end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        calls.append(text[start:end - 1])
    return calls


def _defined_flags() -> set[str]:
    flags = set()
    for path in SOURCES:
        text = path.read_text()
        for call in _add_argument_calls(text):
            names = re.findall(r'"(--[a-z0-9-]+)"', call)
            flags.update(names)
            if "BooleanOptionalAction" in call:  # argparse adds the `--no-` form of each name
                flags.update("--no-" + name[2:] for name in names)
        # option tables such as the server's _GUARD_OPTIONS: ("--flag", type, default, help)
        flags.update(re.findall(r'\(\s*"(--[a-z0-9-]+)",\s*(?:str|int|float|bool)\b', text))
        if "add_option_group" in text:  # flags of the declared options (lama_deploy.runtime.options.OPTIONS)
            from lama_deploy.runtime.options import OPTIONS

            flags.update(spec.flag for spec in OPTIONS)
        if "def add_profile_options" in text:  # f"--{which}" over lama_deploy.profiles.WHICH
            from lama_deploy.profiles import WHICH

            flags.update(f"--{which}" for which in WHICH)
    return flags


def test_boolean_optional_flags_count_with_their_no_forms() -> None:
    """The `--no-` form of a BooleanOptionalAction flag is a real flag (and only of such flags)."""
    import argparse

    from lama_deploy.scripts.commands.triton_repo import build_parser

    defined = _defined_flags()
    parser = build_parser()
    optional = {option for action in parser._actions if isinstance(action, argparse.BooleanOptionalAction)
                for option in action.option_strings}
    assert optional == {"--dynamic-batching", "--no-dynamic-batching"} and optional <= defined
    assert "--no-export" not in defined and "--no-precision" not in defined


def test_every_flag_a_message_names_exists() -> None:
    defined = _defined_flags()
    unknown = {}
    for path in SOURCES:
        relative = str(path.relative_to(ROOT))
        if relative in OTHER_TOOLS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for flag in re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]+)', line):
                if flag not in defined and flag not in OTHER_FLAGS:
                    unknown[f"{relative}:{number}"] = flag
    assert unknown == {}


def test_messages_name_flags_not_parameters() -> None:
    """`raise max_pixels` means nothing on a command line; `--max-pixels` does."""
    found = {}
    for path in SOURCES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r'f?"[^"]*\b(raise|limit \()\s*(max_pixels|max_side)\b', line):
                found[f"{path.relative_to(ROOT)}:{number}"] = line.strip()
    assert found == {}
