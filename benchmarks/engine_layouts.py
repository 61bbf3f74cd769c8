"""sparse-cpu's two batch layouts on the same file: planar (per image) vs interleaved (images in the vector lanes).

    .venv/bin/python benchmarks/engine_layouts.py resnet20@0.99 tv:mobilenet_v2@0.9:layerwise --batch 16,64

MODEL is NAME@SPARSITY[:layerwise] for one of bench_engine's models (built as engine_threads.py does) or an
ONNX file. Engine only, 1 thread: a session pinned to each layout (``interleave=False`` / ``True``; the
trunk's per-layer kernels chosen as at load) timed in interleaved rounds (bench_engine's method, 7 rounds,
~0.2 s blocks, median of block means); the last column is the layout a default session picks at load (it
times both on two chunks of lanes). The interleaved session runs its convs as row wavefronts; the "op by op"
column is the same session with them off (``Engine.set_row_chains(False)``), timed in the same rounds; a default
session times both at load and keeps the faster. Prints a markdown table with the load average before and after.
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
    ap.add_argument("--batch", default="16,64", help="comma-separated batch sizes (>= the vector width)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"load average before {os.getloadavg()[0]:.2f}")
    print("| model | batch | planar µs | interleaved µs | interleaved op by op µs | planar / interleaved | "
          "op by op / row wavefronts | default picks |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.models:
        path = T.model_path(spec)
        planar = E.load(path, threads=1, interleave=False)
        il = E.load(path, threads=1, interleave=True, verify=False)
        if not il.il_lanes:
            print(f"| {spec} | - | - | - | - | - | - | planar (the graph does not qualify) |", flush=True)
            continue
        flat = E.load(path, threads=1, interleave=True, verify=False)
        flat._il.set_row_chains(False)
        default = E.load(path, threads=1, verify=False)
        picks = ("interleaved" + ("" if default.il_row_chains else " op by op")) if default.il_lanes else "planar"
        for b in [int(v) for v in args.batch.split(",")]:
            x = np.random.default_rng(b).standard_normal((b, *planar.input_shape)).astype(np.float32)
            fns = {"planar": lambda p=planar, x=x: p.run(x), "il": lambda s=il, x=x: s.run(x),
                   "flat": lambda s=flat, x=x: s.run(x)}
            res = B.interleaved(fns, args.rounds, 0.2, seed=b)
            print(f"| {spec} | {b} | {res['planar']:.0f} | {res['il']:.0f} | {res['flat']:.0f} | "
                  f"{res['planar'] / res['il']:.2f}x | {res['flat'] / res['il']:.2f}x | {picks} |", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
