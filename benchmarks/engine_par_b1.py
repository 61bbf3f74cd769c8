"""Batch-1 intra-op threads on sparse-cpu: is splitting output channels across 2 threads worth its barriers?

    .venv/bin/python benchmarks/engine_par_b1.py model.onnx [...] [--busy]

Per model, interleaved in one process (bench_engine's method, 7 rounds): 1 thread; 2 threads as shipped
(channel splitting only for plans of >= PAR_MIN_MACS executed MACs per sample); 2 threads with splitting
forced on. ``--busy`` keeps one other core busy (a spinning child process) to show the cost on a shared
machine. Used to choose ``sparsekit_engine.PAR_MIN_MACS``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine as B  # noqa: E402
import sparsekit_engine as E  # noqa: E402


def _spin() -> None:
    while True:
        pass


def _row(p: str, busy: bool) -> str:
    shape = E.load(p, verify=False, cache=False).input_shape
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    s1 = E.load(p, threads=1, verify=False)
    s2 = E.load(p, threads=2, verify=False)
    default, E.PAR_MIN_MACS = E.PAR_MIN_MACS, 0
    s2split = E.load(p, threads=2, verify=False)
    E.PAR_MIN_MACS = default
    t = B.interleaved({"t1": lambda: s1.run(x), "t2": lambda: s2.run(x), "split": lambda: s2split.run(x)}, 7, 0.05, 0)
    return (f"{os.path.basename(p)}: {s1.macs_per_sample / 1e6:.1f} M MACs/sample, batch 1: 1 thread "
            f"{t['t1']:.1f} µs, 2 threads as shipped {t['t2']:.1f} µs ({t['t1'] / t['t2']:.2f}x), 2 threads "
            f"split {t['split']:.1f} µs ({t['t1'] / t['split']:.2f}x); load {os.getloadavg()[0]:.2f}"
            f"{' (other core busy)' if busy else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--busy", action="store_true", help="keep one other core busy while timing")
    args = ap.parse_args()
    hog = mp.Process(target=_spin, daemon=True) if args.busy else None
    if hog:
        hog.start()
    try:
        for p in args.models:
            print(_row(p, busy=hog is not None), flush=True)
    finally:
        if hog:
            hog.terminate()


if __name__ == "__main__":
    main()
