"""``advise``: per layer, which format should be fastest here, from a quick microbenchmark.

For each masked Linear layer, dense ``F.linear`` is timed against a torch CSR (int32) layer with the
layer's real weights and sparsity, at batch 1 and 32, in this process with ``threads`` threads. For
every layer, the structured converter says how many whole output channels can be removed. Conv
layers are never advised to CSR: unstructured sparse convolution (im2col + CSR) needs >= 98 %
sparsity at 1 thread on CPU and loses at 2 threads (docs SPARSE_RUNTIME.md §2).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: CSR is advised only when it is at least this much faster than dense (timing noise margin)
ADVISE_MIN_GAIN = 1.10
ADVISE_BATCHES = (1, 32)
#: wall time per timing block (s) and blocks per variant; the median block is reported
_BLOCK_S, _BLOCKS = 0.01, 5


def _time_us(fn: Callable[[], Any]) -> float:
    """Median per-call time (us) over _BLOCKS blocks of ~_BLOCK_S each, after warm-up."""
    for _ in range(3):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < _BLOCK_S / 4:
        fn()
        n += 1
    reps = max(1, 4 * n)
    blocks = []
    for _ in range(_BLOCKS):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        blocks.append((time.perf_counter() - t) / reps * 1e6)
    return statistics.median(blocks)


def advise_run(run_dir: str, threads: int = 1, data_dir: str | None = None) -> dict[str, Any]:
    """Per-layer format advice for a run (see module docstring).

    Example:
        >>> advise_run("runs/lenet")["layers"][0]["recommendation"]  # doctest: +SKIP
        'csr'
    """
    from sparsekit.errors import UsageError
    from sparsekit.formats import get_format
    from sparsekit.formats.csr import CsrLinear
    from sparsekit.formats.store import probe_batch
    from sparsekit.ticket import Ticket

    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    ticket = Ticket.load(run_dir)
    model, mask = ticket.materialize("final"), ticket.mask()
    structured = get_format("structured").convert(model, mask, probe_batch(ticket, data_dir))
    free = {r["name"]: r["out_before"] - r["out_after"] for r in structured.report["layers"]}
    modules = dict(model.named_modules())
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    layers = []
    try:
        with torch.inference_mode():
            for fqn, keep in mask.items():
                name = fqn.rsplit(".", 1)[0]
                mod = modules[name]
                sparsity = 1.0 - float(keep.float().mean())
                row: dict[str, Any] = {"name": name, "kind": type(mod).__name__, "shape": list(keep.shape),
                                       "sparsity": sparsity, "free_channels": free.get(name, 0),
                                       "out_channels": keep.shape[0]}
                if isinstance(mod, nn.Linear):
                    csr = CsrLinear.from_linear(mod)
                    for b in ADVISE_BATCHES:
                        x = torch.randn(b, mod.in_features)
                        dense_us = _time_us(lambda x=x, m=mod: F.linear(x, m.weight, m.bias))
                        csr_us = _time_us(lambda x=x, c=csr: c(x))
                        row[f"batch{b}"] = {"dense_us": dense_us, "csr_us": csr_us, "csr_speedup": dense_us / csr_us}
                    gain = min(row[f"batch{b}"]["csr_speedup"] for b in ADVISE_BATCHES)
                    if gain >= ADVISE_MIN_GAIN:
                        row["recommendation"], row["reason"] = "csr", f"torch CSR {gain:.2f}x+ faster than dense here"
                    elif row["free_channels"]:
                        row["recommendation"], row["reason"] = "structured", f"{row['free_channels']} whole neurons removable; CSR not faster ({gain:.2f}x)"
                    else:
                        row["recommendation"], row["reason"] = "dense", f"CSR not faster here ({gain:.2f}x at worst batch)"
                elif row["free_channels"]:
                    row["recommendation"], row["reason"] = "structured", f"{row['free_channels']}/{keep.shape[0]} output channels removable"
                else:
                    row["recommendation"] = "dense"
                    row["reason"] = ("no whole channel free; unstructured conv sparsity needs >= 98% to pay on CPU"
                                     if sparsity > 0 else "not pruned")
                layers.append(row)
    finally:
        torch.set_num_threads(old_threads)
    rep = structured.report
    n_csr = sum(r["recommendation"] == "csr" for r in layers)
    if rep["mac_ratio"] >= ADVISE_MIN_GAIN:
        summary = (f"export --format structured: {rep['mac_ratio']:.2f}x fewer MACs, faster on every runtime")
    elif n_csr:
        summary = f"bench on torch-csr: {n_csr} Linear layer(s) run faster as CSR here (not exportable to ONNX)"
    else:
        summary = "sparsity will not pay for speed here: expect dense latency (file size can still shrink)"
    return {"run": run_dir, "threads": threads, "layers": layers, "structured_mac_ratio": rep["mac_ratio"],
            "summary": summary}
