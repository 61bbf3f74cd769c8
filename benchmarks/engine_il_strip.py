"""Interleaved-plan batch-16 time per model at one input-channel block size (SPARSEKIT_ENGINE_IL_STRIP, bytes).

    for st in 12288 24576 49152 1000000000; do SPARSEKIT_ENGINE_IL_STRIP=$st \
        .venv/bin/python benchmarks/engine_il_strip.py vgg16@0.99 tv:resnet18@0.9 vgg16@0.9; done

Engine only, 1 thread, interleaved layout pinned, per-layer kernels timed at load (uncached); best of 15 runs.
"""
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, "benchmarks")
import engine_threads as T
import sparsekit_engine as E

for spec in sys.argv[1:]:
    s = E.load(T.model_path(spec), threads=1, cache=False, interleave=True, verify=False)
    x = np.random.default_rng(0).standard_normal((16, *s.input_shape)).astype(np.float32)
    s.run(x); best = 1e30
    for _ in range(15):
        t = time.perf_counter(); s.run(x); best = min(best, time.perf_counter() - t)
    print(spec, f"{best * 1e6:.0f}", flush=True)
