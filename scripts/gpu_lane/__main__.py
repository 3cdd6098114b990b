"""`python3 scripts/gpu_lane ...` (this folder run as a script) or `python3 -m scripts.gpu_lane ...` (checkout root)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: the checkout root makes `scripts.gpu_lane` and `lama_deploy` importable
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.gpu_lane.lane import main
else:
    from .lane import main

sys.exit(main())
