"""Environment fingerprint stored with every benchmark report: what a number was measured on."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

#: CPU flags that decide which kernels a runtime can use (x86 /proc/cpuinfo names; "asimd" = NEON)
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "amx_tile", "neon", "asimd", "sve")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)  # first processor's values
    except OSError:
        pass
    return info


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD flags of SIMD_FLAGS this CPU reports (aarch64 always has NEON)."""
    info = _cpuinfo()
    have = set((info.get("flags") or info.get("Features") or "").split())
    if platform.machine() in ("aarch64", "arm64"):
        have.add("neon")
    return [f for f in SIMD_FLAGS if f in have]


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the sparsekit checkout, with '+dirty' for uncommitted changes; None if not a checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) or None


def _versions() -> dict[str, str | None]:
    """Library versions without importing torch (importlib.metadata reads the installed metadata)."""
    from importlib import metadata

    import sparsekit

    out: dict[str, str | None] = {"sparsekit": sparsekit.__version__, "python": platform.python_version()}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "torch-pruning", "openvino", "mnn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def fingerprint(threads: int | None = None) -> dict[str, Any]:
    """CPU model and SIMD flags, cores, threads used, memory, OS, versions, commit, load, UTC date."""
    import psutil

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    env: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "threads": threads,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "versions": _versions(),
        "git_commit": git_commit(),
        "load_average_at_start": load,
    }
    env["cuda_device"] = _cuda_device()
    return env


def others_busy_cores(window_s: float = 1.0) -> float | None:
    """Cores' worth of CPU time that other processes used over the next ``window_s`` seconds.

    The 1-min load average counts this process too and lags by a minute: a benchmark that just ran 2 threads
    reads as "busy" for a minute after. This counts the machine's busy time minus this process's own (all its
    threads) over a short sleep, so it says whether the *other* cores are free now. None where the counters
    are not available.
    """
    import psutil

    try:
        me = psutil.Process()

        def busy() -> tuple[float, float]:
            t = psutil.cpu_times()
            idle = t.idle + getattr(t, "iowait", 0.0)
            own = me.cpu_times()
            return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0), own.user + own.system

        m0, o0 = busy()
        t0 = time.perf_counter()
        time.sleep(window_s)
        m1, o1 = busy()
        return max(0.0, ((m1 - m0) - (o1 - o0)) / (time.perf_counter() - t0))
    except (psutil.Error, OSError, AttributeError):
        return None


def _cuda_device() -> str | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:  # only ask torch when it is already loaded (a bench of ONNX files never needs it)
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
