"""Triton `config.pbtxt` text from plain dicts, and model folders written whole (staged, then renamed in)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from lama_deploy.errors import UserError


class Enum(str):
    """A protobuf enum value: written without quotes."""


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum) or isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render(fields: dict[str, Any], depth: int) -> list[str]:
    pad, lines = "  " * depth, []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", *_render(value, depth + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines += [f"{pad}  {{", *_render(item, depth + 2), f"{pad}  }}" + ("," if i < len(value) - 1 else "")]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def render_pbtxt(fields: dict[str, Any], comments: Sequence[str] = ()) -> str:
    """Protobuf text format of a ModelConfig given as dicts (messages), lists (repeated) and scalars."""
    return "\n".join([f"# {' '.join(c.split())}" for c in comments] + _render(fields, 0)) + "\n"


def assemble(final: Path, files: dict[str, str | Path]) -> None:
    """Write a model folder (relative path -> text, or a Path to copy) next to `final`, then rename it in."""
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a non-root tritonserver
        for relative, content in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            else:
                target.write_text(content)
        if final.exists():  # --force: keep the old folder until the new one is in place
            retired = final.with_name(f".{final.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            final.rename(retired)
            staging.rename(final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def check_output(output: Path, names: list[str], force: bool) -> None:
    """Refuse an output that cannot take these model folders; writes nothing (a failed command leaves no folder)."""
    if not output.exists() and not output.parent.is_dir():
        raise UserError(f"output folder's parent {output.parent} does not exist; create it first")
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder for the model repository")
    taken = [n for n in names if (output / n).exists()]
    if taken and not force:
        raise UserError(f"{output / taken[0]} already exists; pass --force to replace it or choose another --name")


@contextlib.contextmanager
def new_output(output: Path) -> Iterator[Path]:
    """The repository folder for the writes inside the block: created if missing, and removed again (with
    whatever the block wrote) when the block fails, so a failed command leaves no folder behind."""
    created = not output.exists()
    output.mkdir(exist_ok=True)
    try:
        yield output
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
