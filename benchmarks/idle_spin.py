"""Do the runtimes' thread pools keep a core busy while idle? (a check for the bench's 2-thread rows)

For each runtime: load an ONNX file at --threads, run it, then sleep for a window and report the cores'
worth of process CPU time used during the sleep (a pool left spinning shows ~1 per spinning thread). Windows
of 2 ms to 1 s right after a call: in the interleaved bench the next runtime's ~10 ms block starts right
after the previous one's last call, so a pool that spins for a few ms after its work takes the second core
from the runtime timed next. CPU time of other threads is accounted at scheduler ticks (~4 ms), so the 2 ms
window reads low; the 10 and 50 ms windows are the ones to read. Then: sparse-cpu's time per call right
after each runtime's calls vs after a pause (what an in-process interleaved bench would record).

    .venv/bin/python benchmarks/idle_spin.py FILE.onnx|NAME@SPARSITY [--threads 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def cpu_s() -> float:
    return time.process_time()  # every thread of the process, ns resolution (os.times ticks at 10 ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", help="an ONNX file, or NAME@SPARSITY built as engine_threads.py builds it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    import sys

    import sparsekit_engine as se

    sys.path.insert(0, "benchmarks")
    from engine_threads import model_path

    from sparsekit.bench.runtimes import RUNTIMES

    path = str(model_path(args.onnx))
    s = se.load(path, threads=args.threads)
    x = np.random.default_rng(0).standard_normal((args.batch, *s.input_shape)).astype(np.float32)
    runners = {"sparse-cpu": lambda: s.run(x)}
    for name in ("ort-cpu", "openvino-cpu", "mnn-cpu"):
        rt = RUNTIMES.get(name)
        if rt.unavailable_reason() is None:
            f = rt.load(path, threads=args.threads)
            runners[name] = lambda f=f: f(x)
    windows = (0.002, 0.01, 0.05, 1.0)
    for name, run in runners.items():
        for _ in range(20):
            run()
        busy = []
        for w in windows:
            used = []
            for _ in range(5 if w < 1 else 1):
                run()
                c0, t0 = cpu_s(), time.perf_counter()
                time.sleep(w)
                used.append((cpu_s() - c0) / (time.perf_counter() - t0))
            busy.append(sorted(used)[len(used) // 2])
        print(f"{name} ({args.threads} threads): cores busy while idle after a call, "
              + ", ".join(f"{w * 1e3:g} ms: {b:.2f}" for w, b in zip(windows, busy, strict=True)), flush=True)

    # what that does to the runtime timed next: sparse-cpu's µs per call (median of 5 blocks of 20 calls) right
    # after 30 calls of another runtime, and after the same calls plus a 0.2-s pause
    def engine_us() -> float:
        t0 = time.perf_counter()
        for _ in range(20):
            runners["sparse-cpu"]()
        return (time.perf_counter() - t0) / 20 * 1e6

    for name, run in runners.items():
        right_after, paused = [], []
        for _ in range(5):
            for _ in range(30):
                run()
            right_after.append(engine_us())
            for _ in range(30):
                run()
            time.sleep(0.2)
            paused.append(engine_us())
        print(f"sparse-cpu µs/call right after {name}'s calls: {sorted(right_after)[2]:.1f}; after a 0.2-s pause: "
              f"{sorted(paused)[2]:.1f}", flush=True)


if __name__ == "__main__":
    main()
