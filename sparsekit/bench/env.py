"""Environment fingerprint stored with every benchmark report."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fingerprint() -> dict[str, Any]:
    """CPU model, cores, memory, OS, library versions, CUDA device, UTC date."""
    import psutil

    from sparsekit.ticket import library_versions

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    env: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "versions": library_versions(),
    }
    import torch

    env["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return env
