"""lama-deploy: ship LaMa inpainting to real GPUs (ONNX with DFT-as-matmul, TensorRT, a thin runtime).

Public API: `from lama_deploy.runtime import Inpainter` (see README).

Folders and import names: the one mechanism
-------------------------------------------
The checkout keeps its top-level folders `export/`, `runtime/` and `scripts/`; their import names are
`lama_deploy.export`, `lama_deploy.runtime` and `lama_deploy.scripts`, so the only top-level names this
distribution adds are `lama_deploy` and `lama_model`. How each way of running finds them:

- Installed (wheel or `pip install -e .`): packaging maps the folders (`[tool.setuptools.package-dir]` in
  pyproject.toml); nothing runs at import time for it.
- A plain checkout (the checkout root on `sys.path`, e.g. `python -m lama_deploy.export.validate` from the root):
  `_extend_path_in_checkout` below appends the checkout root to this package's `__path__`, so
  `lama_deploy.export` resolves to `<root>/export`. This is the only code that maps folders to names.
- A file of the checkout run by path (`python export/to_onnx.py` from any directory, Polygraphy loading
  `export/polygraphy_hooks.py`, `python scripts/trtexec_commands.py`): Python puts the file's folder, not the root,
  on `sys.path`, so such a file starts with `CHECKOUT_BOOTSTRAP` (two lines, verbatim; tests/house checks that
  no other file edits `sys.path` for this) and then imports `lama_deploy` as above. Imported as a module it does
  nothing (`__package__` is set), so an installed copy never adds its folders to `sys.path`.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

#: Sub-packages that live in top-level folders of the checkout (their names in the wheel are mapped).
CHECKOUT_SUBPACKAGES = ("export", "runtime", "scripts")

#: The two lines a file of the checkout runs by path starts with (after `import sys` and `from pathlib import
#: Path`): the checkout root goes on `sys.path`, then `lama_deploy` maps the folders.
CHECKOUT_BOOTSTRAP = (
    'if __package__ in (None, ""):  # run by path from a checkout: see lama_deploy/__init__.py\n'
    "    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))\n"
)


def _extend_path_in_checkout() -> None:
    root = _Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and all((root / name / "__init__.py").is_file() for name in CHECKOUT_SUBPACKAGES):
        if str(root) not in __path__:
            __path__.append(str(root))


_extend_path_in_checkout()
