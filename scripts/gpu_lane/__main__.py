"""`python3 -m scripts.gpu_lane ...` from the checkout root (the root is then on sys.path: no path edits here)."""

import sys

if not __package__:  # run by path: the lane has no bootstrap of its own (see lama_deploy/__init__.py)
    print("gpu_lane: error: run it from the checkout root as `python3 -m scripts.gpu_lane --out DIR`", file=sys.stderr)
    sys.exit(2)

from .lane import main  # noqa: E402

sys.exit(main())
