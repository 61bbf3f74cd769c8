"""Measurement child process: ``python worker.py JOB.json RESULT.json``.

Run as a script (not ``-m``) so an ONNX Runtime measurement never imports torch (sparsekit's package
__init__ does). One process measures one (model, runtime): load, then per batch size (ascending)
warm-up + timed iterations + peak RSS, then accuracy outside the timed region.

Peak RSS is VmHWM from /proc/self/status (ru_maxrss inherits the parent's RSS across fork+exec). It
is read after each batch size; because batch sizes run in ascending order, the value for batch B is
the peak of loading the model and running every batch <= B.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np


def vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB -> bytes
    except OSError:
        pass
    return None


def _ort_runner(job: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = job["threads"]
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(job["onnx"], so, providers=[job["provider"]])
    name = sess.get_inputs()[0].name
    out = [sess.get_outputs()[0].name]
    return (lambda x: sess.run(out, {name: x})[0]), {"file_bytes": os.path.getsize(job["onnx"])}


def _torch_runner(job: dict[str, Any], x_probe: np.ndarray) -> tuple[Any, dict[str, Any]]:
    import torch

    torch.set_num_threads(job["threads"])
    from sparsekit.bench.loaders import load_torch_model

    model, info = load_torch_model(job, torch.from_numpy(x_probe))
    dev = torch.device(job["device"])
    model = model.to(dev).eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = model(torch.from_numpy(x).to(dev))
            sync()
        return y.cpu().numpy()

    return run, info


def measure(job: dict[str, Any]) -> dict[str, Any]:
    x_all = np.load(job["x"], mmap_mode="r")  # (N, C, H, W) float32, paged in lazily
    probe = np.ascontiguousarray(x_all[: min(len(x_all), 64)])
    t0 = time.perf_counter()
    run, info = _ort_runner(job) if job["engine"] == "ort" else _torch_runner(job, probe)
    load_s = time.perf_counter() - t0
    batches = []
    for b in sorted(job["batches"]):
        reps = -(-b // len(x_all))
        xb = np.ascontiguousarray(np.concatenate([x_all[: min(b, len(x_all))]] * reps)[:b])
        for _ in range(job["warmup"]):
            run(xb)
        times = []
        for _ in range(job["iters"]):
            t = time.perf_counter()
            run(xb)
            times.append(time.perf_counter() - t)
        ms = np.asarray(times) * 1e3
        p50 = float(np.percentile(ms, 50))
        batches.append({
            "batch": b,
            "latency_ms": {"p50": p50, "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))},
            "throughput_per_s": b / (p50 / 1e3) if p50 > 0 else None,
            "peak_rss_bytes": vm_hwm_bytes(),
        })
    accuracy = None
    if job.get("y") and job.get("accuracy", True):
        y_all = np.load(job["y"], mmap_mode="r")
        n = len(y_all) if job.get("accuracy_limit") is None else min(len(y_all), job["accuracy_limit"])
        correct = 0
        for i in range(0, n, job.get("accuracy_batch", 256)):
            xs = np.ascontiguousarray(x_all[i : min(n, i + job.get("accuracy_batch", 256))])
            correct += int((run(xs).argmax(-1) == np.asarray(y_all[i : i + len(xs)])).sum())
        accuracy = correct / n if n else None
    return {
        "batches": batches,
        "accuracy": accuracy,
        "load_s": load_s,
        "torch_imported": "torch" in sys.modules,
        **info,
    }


def main(argv: list[str]) -> int:
    job_path, result_path = argv[1], argv[2]
    with open(job_path) as fh:
        job = json.load(fh)
    try:
        result = {"ok": True, **measure(job)}
    except Exception as exc:  # reported to the parent as a failed row, never a crash of bench
        result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
