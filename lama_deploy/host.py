"""Facts about the machine and this process, for reports and sidecars; portable (no POSIX-only import at
module level: TensorRT-RTX's main platform is Windows)."""

from __future__ import annotations

import platform
import sys


def proc_status_mb(pid: int | str, field: str) -> float | None:
    """A memory field of /proc/<pid>/status ("VmHWM", "VmRSS", ...) in MiB; None where there is none."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError):
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far in MiB (Linux: VmHWM), or 0.0 where the OS does not say.

    Not ``ru_maxrss`` on Linux: the kernel carries that across exec, so a child spawned by a big parent (a
    test run holding exported models) reports at least the parent's size at fork time. VmHWM belongs to the
    process's own address space and starts fresh at exec.
    """
    peak = proc_status_mb("self", "VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # macOS: bytes, Linux: KiB


def host_info() -> dict[str, str]:
    return {"node": platform.node(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version()}


def cuda_device_count() -> int:
    """NVIDIA GPUs visible through the driver (0 without a driver); no CUDA toolkit needed."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except OSError:
        return 0


def cuda_compute_capability(device: int = 0) -> str | None:
    """'8.9' for the first visible NVIDIA GPU through the driver, None without one."""
    import ctypes

    if cuda_device_count() <= device:
        return None
    cuda = ctypes.CDLL("libcuda.so.1")
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device) or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device):
        return None
    return f"{major.value}.{minor.value}"
