"""lama-deploy: ship LaMa inpainting to real GPUs (ONNX with DFT-as-matmul, TensorRT, a thin runtime).

Installed, the checkout's `export/`, `runtime/` and `scripts/` folders become `lama_deploy.export`,
`lama_deploy.runtime` and `lama_deploy.scripts` (see `[tool.setuptools]` in pyproject.toml), so the only
top-level import names this distribution adds are `lama_deploy` and `lama_model`. From a plain checkout the
same names resolve through this package's `__path__`, which then also lists the checkout root: that is
what lets `python export/to_onnx.py` run without an install.

Public API: `from lama_deploy.runtime import Inpainter` (see README).
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

#: Sub-packages that live in top-level folders of the checkout (their names in the wheel are mapped).
CHECKOUT_SUBPACKAGES = ("export", "runtime", "scripts")


def _extend_path_in_checkout() -> None:
    root = _Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and all((root / name / "__init__.py").is_file() for name in CHECKOUT_SUBPACKAGES):
        if str(root) not in __path__:
            __path__.append(str(root))


_extend_path_in_checkout()
