"""Do the runtimes' thread pools keep a core busy while idle? (a check for the bench's 2-thread rows)

For each runtime: load an ONNX file at --threads, run it 50 times, then sleep 1 s and report the process CPU
seconds used during the sleep (a pool left spinning shows ~1 s per spinning thread).

    .venv/bin/python benchmarks/idle_spin.py FILE.onnx [--threads 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    import sparsekit_engine as se

    from sparsekit.bench.runtimes import RUNTIMES

    s = se.load(args.onnx, threads=args.threads)
    x = np.random.default_rng(0).standard_normal((args.batch, *s.input_shape)).astype(np.float32)
    runners = {"sparse-cpu": lambda: s.run(x)}
    for name in ("ort-cpu", "openvino-cpu", "mnn-cpu"):
        rt = RUNTIMES.get(name)
        if rt.unavailable_reason() is None:
            f = rt.load(args.onnx, threads=args.threads)
            runners[name] = lambda f=f: f(x)
    for name, run in runners.items():
        for _ in range(50):
            run()
        c0 = cpu_s()
        time.sleep(1.0)
        print(f"{name}: {cpu_s() - c0:.2f} CPU s used during 1 s idle after 50 runs ({args.threads} threads)")


if __name__ == "__main__":
    main()
