"""One quick engine-vs-ORT figure: a bench_engine model, one sparsity, batch sizes, 1 thread.

    .venv/bin/python benchmarks/engine_vs_ort.py lenet300@0 --batch 8,64

MODEL is NAME@SPARSITY for one of bench_engine's models, built its way with --quick's training budget (see
engine_threads.py), or an ONNX file. The engine and ORT (1 intra-op thread, spinning on) are timed in
interleaved rounds (bench_engine's method, 7 rounds, ~0.2 s blocks, median of block means). For checking one
kernel change between full `make bench-engine` records; the record is what the README cites.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine as B  # noqa: E402
import engine_threads as T  # noqa: E402
import sparsekit_engine as E  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batch", default="1", help="comma-separated batch sizes")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"load average before {os.getloadavg()[0]:.2f}")
    for spec in args.models:
        path = T.model_path(spec)
        eng = E.load(path, threads=1)
        ort = B.ort_session(str(path), 1)
        iname = ort.get_inputs()[0].name
        for b in [int(v) for v in args.batch.split(",")]:
            x = np.random.default_rng(0).standard_normal((b, *eng.input_shape)).astype(np.float32)
            res = B.interleaved({"ort": lambda: ort.run(None, {iname: x}), "engine": lambda: eng.run(x)},
                                args.rounds, 0.2, seed=b)
            print(f"{path.name:40s} batch {b:3d}  ORT {res['ort']:10.1f} us  engine {res['engine']:10.1f} us  "
                  f"speed-up {res['ort'] / res['engine']:.2f}x", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
