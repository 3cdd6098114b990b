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
    "runtime/triton_serve.py": "the `tritonserver` command line",
    "export/polygraphy_hooks.py": "`polygraphy convert` flags in its usage line",
    "scripts/gpu_lane/lane.py": "pytest flags of the GPU lane's child runs",
    "scripts/gpu_lane/report.py": "the `nvidia-smi` query",
    "scripts/gpu_lane/wheelhouse.py": "pip and zstd flags of the wheelhouse install",
}
OTHER_FLAGS = {"--help", "--index-url", "--no-deps", "--model-repository"}  # pip, tritonserver


def _defined_flags() -> set[str]:
    flags = set()
    for path in SOURCES:
        for call in re.finditer(r"add_argument\(([^)]*)", path.read_text()):
            flags.update(re.findall(r'"(--[a-z0-9-]+)"', call.group(1)))
        # option tables such as the server's _GUARD_OPTIONS: ("--flag", type, default, help)
        flags.update(re.findall(r'\(\s*"(--[a-z0-9-]+)",\s*(?:str|int|float|bool)\b', path.read_text()))
        if "def add_profile_options" in path.read_text():  # f"--{which}" over lama_deploy.profiles.WHICH
            from lama_deploy.profiles import WHICH

            flags.update(f"--{which}" for which in WHICH)
            if "BooleanOptionalAction" in call.group(1):
                flags.update("--no-" + f[2:] for f in re.findall(r'"--([a-z0-9-]+)"', call.group(1)))
    return flags


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
