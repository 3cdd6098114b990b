"""Facts about the machine and this process, for reports and sidecars; portable (no POSIX-only import at
module level: TensorRT-RTX's main platform is Windows)."""

from __future__ import annotations

import platform
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far in MiB, or 0.0 where the OS does not say (Windows)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # macOS: bytes, Linux: KiB


def host_info() -> dict[str, str]:
    return {"node": platform.node(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version()}
