"""sparse-cpu thread scaling with nothing else in the process: 1 vs 2 (or more) threads on one ONNX file.

    .venv/bin/python benchmarks/engine_threads.py MODEL [...] --batch 1,16 [--threads 1,2]

MODEL: an ONNX file, or NAME@SPARSITY for one of bench_engine's models built its way (short pre-training on
synthetic data, bench_engine --quick's step budget, cached in .bench/engine/, then a global magnitude mask),
e.g. tv:resnet18@0 resnet20@0.99: the models of `make bench-engine BENCH_ENGINE_ARGS=--quick`.

bench_engine's 2-thread rows share the process with ORT, OpenVINO and MNN, whose threads may still spin
when the engine's block starts (on 2 cores that stalls the engine's per-op barriers). Here only engine
sessions are loaded: one per thread count, timed in interleaved rounds (bench_engine's method, 7 rounds,
~0.2 s blocks, median of block means). Prints latency per call and scaling = 1-thread / n-thread time,
with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine as B  # noqa: E402
import sparsekit_engine as E  # noqa: E402


def model_path(spec: str) -> Path:
    """An ONNX file, or NAME@SPARSITY[:layerwise] built bench_engine's way (--quick's training budget; global
    mask unless ``:layerwise``) into .bench/engine/."""
    path = Path(spec)
    if path.exists():
        return path
    name, _, sp = spec.partition("@")
    sp, _, mask = sp.partition(":")
    mask = mask or "global"
    if name not in B.MODELS:
        sys.exit(f"error: {spec!r} is neither a file nor NAME@SPARSITY with NAME in {', '.join(B.MODELS)}")
    shape = B.MODELS[name]
    steps, bs = B.TRAIN[name]
    m, _ = B.train(name, shape, max(1, int(steps * 0.3)), bs, cache_dir=Path(".bench/engine"))
    tag = "" if mask == "global" else f"_{mask}"
    out = Path(".bench/engine/models") / f"{name.replace(':', '_')}_{float(sp or 0)}{tag}.onnx"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        B.prune_export(m, shape, float(sp or 0), out, mask)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batch", default="1", help="comma-separated batch sizes")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (the first is the base)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    print(f"load average before {os.getloadavg()[0]:.2f}")
    for spec in args.models:
        path = model_path(spec)
        sessions = {t: E.load(path, threads=t) for t in threads}
        for b in batches:
            x = np.random.default_rng(0).standard_normal((b, *sessions[threads[0]].input_shape)).astype(np.float32)
            res = B.interleaved({t: (lambda s=s: s.run(x)) for t, s in sessions.items()}, args.rounds, 0.2, seed=b,
                                 settle_s=B.SETTLE_S)  # one session's spinning pool must not slow the other's
            base = res[threads[0]]
            cells = "  ".join(f"T={t} {us:10.1f} us ({base / us:.2f}x)" for t, us in res.items())
            print(f"{path.name:40s} batch {b:3d}  {cells}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
