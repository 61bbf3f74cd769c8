"""Measurement child process: ``python -m sparsekit.bench.worker JOB.json RESULT.json``.

Two kinds of job, each in a fresh process so no measurement inherits another's state:

- ``time``: load every variant of one (run, runtime) -- e.g. the dense reference and the ticket --
  then per batch size warm each up and time them INTERLEAVED: in every round the variants run one
  block each, in a freshly shuffled order, so drift of the machine (other jobs, frequency, caches)
  hits all variants alike. Each block is ~``block_s`` of back-to-back calls; its median call is one
  sample, and the per-call times are kept for p50/p90/p99.
- ``memory``: load ONE variant (or an empty model of the same runtime, the baseline), drop whatever
  the loading needed (the dense model a CSR or structured conversion started from, the converter's
  copies), reset the peak RSS counter, then run each batch size and read the peak, and the peak minus
  the file-backed pages (library code, mapped files: shared with every process, and touched
  differently by each code path -- a CSR product pages in 1-2 MB more of libtorch_cpu.so than a
  dense one, more than a small model's weights). Accuracy is computed here too, outside any timed
  region.

An ONNX Runtime job never imports torch (``sparsekit`` and ``sparsekit.bench`` import lazily). Peak
RSS is VmHWM from /proc/self/status (ru_maxrss inherits the parent's RSS across fork+exec), reset by
writing 5 to /proc/self/clear_refs (Linux >= 4.0).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import random
import sys
import time
from typing import Any

import numpy as np


def vm_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # kB -> bytes
    except OSError:
        pass
    return None


def vm_hwm_bytes() -> int | None:
    return vm_status_bytes("VmHWM")


def release_and_reset_peak() -> bool:
    """Free what loading left behind and restart the peak-RSS counter at the current RSS."""
    gc.collect()
    try:  # glibc keeps freed heap pages; hand them back so RSS reflects what is live
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------- runners
def _module_runner(spec: dict[str, Any], threads: int) -> tuple[Any, dict[str, Any]]:
    """An ONNX-file runtime (``runtime_*`` module): its ``load`` or, for the baseline, ``empty``."""
    import importlib

    mod = importlib.import_module(spec["module"])
    if spec.get("empty"):
        # the runtime's library (and, where it can run one, an Identity model) loaded: no weights
        return mod.empty(threads, spec["onnx"], **spec.get("options", {})), {"file_bytes": 0}
    run = mod.load(spec["onnx"], threads, **spec.get("options", {}))
    # what is deployed: the ONNX file, or the runtime's own converted file (MNN)
    return run, {"file_bytes": os.path.getsize(spec.get("deployed_file") or spec["onnx"])}


def _engine_runner(spec: dict[str, Any], threads: int) -> tuple[Any, dict[str, Any]]:
    from sparsekit.engine import load

    # every timing process verifies against ONNX Runtime; the memory process does not, so ORT's
    # session is not part of the engine's measured memory
    sess = load(spec["onnx"], threads=threads, verify=spec.get("verify", True))
    info: dict[str, Any] = {"file_bytes": os.path.getsize(spec["onnx"])}
    try:
        info["engine_plan"] = sess.plan()
    except Exception:  # the plan is a diagnostic; never fail a measurement over it
        pass
    return sess.run, info


def _torch_runner(spec: dict[str, Any], threads: int, x_probe: np.ndarray,
                  batches: list[int]) -> tuple[Any, dict[str, Any]]:
    import torch

    torch.set_num_threads(threads)
    from sparsekit.bench import loaders

    loaders.preload()  # the same imports in model and baseline processes
    if spec.get("empty"):
        loaders.warm_kernels(batches)
        model, info = torch.nn.Identity(), {"file_bytes": 0, "macs": 0}
    else:
        model, info = loaders.load_torch_model(spec, torch.from_numpy(x_probe))
    dev = torch.device(spec["device"])
    model = model.to(dev).eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = model(torch.from_numpy(x).to(dev))
            sync()
        return y.cpu().numpy()

    return run, info


def make_runner(spec: dict[str, Any], threads: int, probe: np.ndarray,
                batches: list[int]) -> tuple[Any, dict[str, Any]]:
    engine = spec["engine"]
    if engine == "torch":
        return _torch_runner(spec, threads, probe, batches)
    if spec.get("module"):
        return _module_runner(spec, threads)
    if engine == "sparse-cpu":
        if spec.get("empty"):  # the engine's baseline: its library and ONNX parser loaded, no model
            import onnx  # noqa: F401

            import sparsekit.engine  # noqa: F401

            return (lambda x: x), {"file_bytes": 0}
        return _engine_runner(spec, threads)
    raise ValueError(f"unknown engine {engine!r}")


def batch_input(x_all: np.ndarray, b: int) -> np.ndarray:
    reps = -(-b // len(x_all))
    return np.ascontiguousarray(np.concatenate([x_all[: min(b, len(x_all))]] * reps)[:b])


# ---------------------------------------------------------------------------------------- timing
def _calls_per_block(fn: Any, block_s: float) -> int:
    t0, n = time.perf_counter(), 0
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= block_s / 2 or n >= 10_000:
            return max(1, round(n * block_s / dt))


def time_interleaved(fns: dict[str, Any], warmup: int, min_time_s: float, block_s: float,
                     min_rounds: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """Rounds of one block per variant in shuffled order; returns per variant block medians and calls (s)."""
    rng = random.Random(seed)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    reps = {k: _calls_per_block(fn, block_s) for k, fn in fns.items()}
    out: dict[str, dict[str, list[float]]] = {k: {"blocks": [], "calls": []} for k in fns}
    order = list(fns)
    spent = dict.fromkeys(fns, 0.0)
    rounds = 0
    while rounds < min_rounds or min(spent.values()) < min_time_s:
        rng.shuffle(order)
        for k in order:
            fn, n = fns[k], reps[k]
            calls = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                calls.append(time.perf_counter() - t)
            spent[k] += sum(calls)
            # the block's median call: robust to a preemption inside the block on a shared machine
            out[k]["blocks"].append(sorted(calls)[n // 2])
            out[k]["calls"].extend(calls)
        rounds += 1
        if rounds >= 100_000:
            break
    return out


def measure_time(job: dict[str, Any]) -> dict[str, Any]:
    x_all = np.load(job["x"], mmap_mode="r")  # (N, ...) float32, paged in lazily
    probe = np.ascontiguousarray(x_all[: min(len(x_all), 64)])
    runners = {}
    for v in job["variants"]:
        runners[v["id"]], _ = make_runner(v, job["threads"], probe, job["batches"])
    batches = {}
    for b in sorted(job["batches"]):
        xb = batch_input(x_all, b)
        fns = {k: (lambda r=r, xb=xb: r(xb)) for k, r in runners.items()}
        res = time_interleaved(fns, job["warmup"], job["min_time_s"], job["block_s"], job["min_rounds"],
                               seed=job.get("seed", 0) * 1000 + b)
        batches[str(b)] = res
    return {"batches": batches, "torch_imported": "torch" in sys.modules}


# ---------------------------------------------------------------------------------------- memory
def measure_memory(job: dict[str, Any]) -> dict[str, Any]:
    x_all = np.load(job["x"], mmap_mode="r")
    probe = np.ascontiguousarray(x_all[: min(len(x_all), 64)])
    spec = {**job["variant"], "verify": False}  # verified in the timing processes
    t0 = time.perf_counter()
    run, info = make_runner(spec, job["threads"], probe, job["batches"])
    load_s = time.perf_counter() - t0
    load_peak = vm_hwm_bytes()
    del probe
    reset = release_and_reset_peak()
    after_load = vm_status_bytes("VmRSS")
    batches = []
    for b in sorted(job["batches"]):  # ascending: the peak for B covers every batch <= B
        xb = batch_input(x_all, b)
        for _ in range(3):
            run(xb)
        peak, file_pages = vm_hwm_bytes(), vm_status_bytes("RssFile")
        batches.append({"batch": b, "peak_rss_bytes": peak,
                        # library code and mapped files are shared with every process, not the model's
                        "peak_private_bytes": None if peak is None or file_pages is None else peak - file_pages})
    accuracy = None
    if job.get("y") and not spec.get("empty"):
        y_all = np.load(job["y"], mmap_mode="r")
        n = len(y_all) if job.get("accuracy_limit") is None else min(len(y_all), job["accuracy_limit"])
        correct, step = 0, job.get("accuracy_batch", 256)
        if job.get("whole_batches_only"):  # a fixed-batch file: the accuracy covers whole batches
            n -= n % step
        for i in range(0, n, step):
            xs = np.ascontiguousarray(x_all[i : min(n, i + step)])
            correct += int((np.asarray(run(xs)).argmax(-1) == np.asarray(y_all[i : i + len(xs)])).sum())
        accuracy = correct / n if n else None
    return {"batches": batches, "accuracy": accuracy, "load_s": load_s, "load_peak_rss_bytes": load_peak,
            "rss_after_load_bytes": after_load, "peak_reset": reset,
            "torch_imported": "torch" in sys.modules, **info}


def main(argv: list[str]) -> int:
    job_path, result_path = argv[1], argv[2]
    with open(job_path) as fh:
        job = json.load(fh)
    try:
        fn = measure_time if job["kind"] == "time" else measure_memory
        result = {"ok": True, **fn(job)}
    except Exception as exc:  # reported to the parent as a failed row, never a crash of bench
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = {"ok": False, "error": f"{type(exc).__name__}: {msg}"}
    with open(result_path + ".tmp", "w") as fh:
        json.dump(result, fh)
    os.replace(result_path + ".tmp", result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
