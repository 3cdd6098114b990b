"""Launcher: `python export/to_onnx.py [options]` runs `lama-deploy export` from a checkout, from any directory,
without installing. The command itself lives in scripts/commands/export.py.

This is the one launcher file allowed under export/ (library modules there hold no argparse): it only makes
the checkout importable (`CHECKOUT_BOOTSTRAP`, see lama_deploy/__init__.py) and calls the command's `main`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path from a checkout: see lama_deploy/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lama_deploy.scripts.commands.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
