"""README's "What is where" table names every module of the tree (patterns such as `server*.py` allowed),
and names no file that does not exist."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("lama_model", "lama_deploy", "export", "runtime", "scripts")
#: every package folder of the tree (sub-packages included), so a new one cannot hide from the table
FOLDERS = sorted({init.parent.relative_to(REPO).as_posix() for root in ROOTS for init in (REPO / root).rglob("__init__.py")})


def _table() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## What is where")
    section = text[start:text.index("\n## ", start + 1)]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))  # the table's rows only


def test_every_module_is_in_the_table_and_every_named_file_exists() -> None:
    named = set(re.findall(r"`([\w*./-]+\.(?:py|sh|md))`", _table()))
    modules = {p.name for folder in FOLDERS for p in (REPO / folder).glob("*.py") if p.name != "__init__.py"}
    missing = sorted(m for m in modules if not any(fnmatch.fnmatch(m, Path(n).name) for n in named))
    assert missing == []
    tree = {p.relative_to(REPO).as_posix() for p in REPO.rglob("*") if ".git" not in p.parts}
    ghosts = sorted(n for n in named if not any(fnmatch.fnmatch(t, f"*{n}") for t in tree))
    assert ghosts == []
