"""``advise``: per layer, which format should be fastest here, from a quick microbenchmark.

For each masked Linear layer, dense ``F.linear`` is timed against a torch CSR (int32) layer with the
layer's real weights and sparsity, at batch 1 and 32, in this process with ``threads`` threads. For
every layer, the structured converter says how many whole output channels can be removed. Conv
layers are never advised to torch CSR (im2col + CSR needs >= 98 % sparsity at 1 thread and loses at
2 threads, docs SPARSE_RUNTIME.md §2). When sparsekit's native engine is built, the ticket is also
exported and loaded in ``sparse-cpu``, which times its sparse and dense kernel for every Conv/Gemm at
load: those per-layer timings are reported, and a layer whose sparse kernel wins is advised to it.
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
    engine = _engine_layers(run_dir, threads, data_dir, layers, mask)
    dense_rts = _dense_runtimes(run_dir, threads, data_dir)
    rep = structured.report
    n_csr = sum(r["recommendation"] == "csr" for r in layers)
    n_engine = sum(r["recommendation"] == "sparse-cpu" for r in layers)
    if rep["mac_ratio"] >= ADVISE_MIN_GAIN:
        summary = (f"export --format structured: {rep['mac_ratio']:.2f}x fewer MACs, faster on every runtime")
    elif n_engine:
        summary = (f"bench on sparse-cpu: its sparse kernels beat its dense ones on {n_engine} layer(s) here "
                   f"(whole model {engine['sparse_over_dense']:.2f}x by per-layer timings; bench confirms vs ORT)")
    elif n_csr:
        summary = f"bench on torch-csr: {n_csr} Linear layer(s) run faster as CSR here (not exportable to ONNX)"
    else:
        summary = "sparsity will not pay for speed here: expect dense latency (file size can still shrink)"
    if dense_rts and len(dense_rts["us"]) > 1:
        summary += f"; fastest dense runtime here: {dense_rts['fastest'][str(ADVISE_BATCHES[0])]} at batch 1 (compare with it)"
    return {"run": run_dir, "threads": threads, "layers": layers, "structured_mac_ratio": rep["mac_ratio"],
            "engine": engine, "dense_runtimes": dense_rts, "summary": summary}


def _dense_runtimes(run_dir: str, threads: int, data_dir: str | None) -> dict[str, Any] | None:
    """Whole-model time of the exported ticket on every installed dense ONNX runtime (ORT, OpenVINO,
    MNN dense): a quick in-process hint of which dense runtime a ticket must beat here (``bench``
    measures it properly, interleaved in fresh processes)."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from sparsekit.bench.runtime_ort import session
    from sparsekit.bench.runtimes import dense_runtimes
    from sparsekit.errors import SparsekitError
    from sparsekit.export import export_run

    rts = dense_runtimes()
    if not rts:
        return None
    us: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sparsekit-advise-") as tmp:
        path = Path(tmp) / "ticket.onnx"
        export_run(run_dir, path, data_dir=data_dir)
        shape = session(str(path), 1).get_inputs()[0].shape[1:]
        for name, rt in rts.items():
            try:
                run = rt.load(str(path), threads)
            except (SparsekitError, RuntimeError) as exc:  # e.g. a graph MNN cannot convert
                failed[name] = str(exc).splitlines()[0]
                continue
            us[name] = {}
            for b in ADVISE_BATCHES:
                x = np.random.default_rng(0).standard_normal((b, *shape)).astype(np.float32)
                us[name][str(b)] = _time_us(lambda run=run, x=x: run(x))
    fastest = {str(b): min(us, key=lambda n, b=b: us[n][str(b)]) for b in ADVISE_BATCHES} if us else {}
    return {"threads": threads, "us": us, "fastest": fastest, "failed": failed}


def _engine_layers(run_dir: str, threads: int, data_dir: str | None, layers: list[dict[str, Any]],
                   mask: Any) -> dict[str, Any] | None:
    """sparse-cpu's per-layer sparse vs dense kernel timings for this ticket (None if not built).

    The engine's layers are ONNX nodes (BatchNorm folded), matched to the torch layers by their
    number of kept weights in execution order; each matched row gets ``engine`` = the timings.
    """
    import tempfile
    from pathlib import Path

    from sparsekit.bench.runtimes import RUNTIMES

    if RUNTIMES.get("sparse-cpu").unavailable_reason():
        return None
    from sparsekit import engine as sparse_engine
    from sparsekit.errors import SparsekitError
    from sparsekit.export import export_run

    with tempfile.TemporaryDirectory(prefix="sparsekit-advise-") as tmp:
        path = Path(tmp) / "ticket.onnx"
        try:
            export_run(run_dir, path, data_dir=data_dir)
            sess = sparse_engine.load(str(path), threads=threads, verify=False, cache=False)
        except SparsekitError as exc:  # e.g. an op the engine does not run: say so, advise the rest
            return {"available": False, "reason": str(exc)}
        plan = [p for p in sess.plan() if p.get("kind") in ("conv", "fc") and p.get("us")]
    unused = list(plan)
    for row, (_fqn, keep) in zip(layers, mask.items(), strict=True):
        nnz = int(keep.sum())
        hit = next((p for p in unused if p.get("nnz") == nnz), None)
        if hit is None:
            continue
        unused.remove(hit)
        us = hit["us"]
        gain = us["dense"] / us["sparse"] if us.get("sparse") and us.get("dense") else None
        row["engine"] = {"node": hit["name"], "kernel": hit["kernel"], "sparse_us": us.get("sparse"),
                         "dense_us": us.get("dense"), "sparse_speedup": gain}
        # sparse-cpu runs the exported ONNX file (deployable, unlike torch CSR), so it wins the tie
        if gain is not None and gain >= ADVISE_MIN_GAIN and row["recommendation"] != "structured":
            row["recommendation"] = "sparse-cpu"
            row["reason"] = f"sparse-cpu's sparse kernel {gain:.2f}x faster than its dense kernel here"
    chosen = sum(min(p["us"].values()) for p in plan)
    dense = sum(p["us"].get("dense", min(p["us"].values())) for p in plan)
    return {"available": True, "isa": sess.isa, "threads": threads, "layers": plan,
            "sparse_over_dense": dense / chosen if chosen else None}


def engine_time_split(run_dir: str, threads: int = 1, batch: int = 1, data_dir: str | None = None) -> dict[str, Any]:
    """Where sparse-cpu's time goes for this ticket: the exported ONNX file run under the engine's per-op
    profiler (``Session.profile``) at ``batch`` images and ``threads``; ops sorted slowest first."""
    import tempfile
    from pathlib import Path

    from sparsekit import engine as sparse_engine
    from sparsekit.export import export_run

    with tempfile.TemporaryDirectory(prefix="sparsekit-advise-") as tmp:
        path = Path(tmp) / "ticket.onnx"
        export_run(run_dir, path, data_dir=data_dir)
        sess = sparse_engine.load(str(path), threads=threads, verify=False, cache=False)
        prof = sess.profile(batch=batch, threads=threads)
    prof["ops"] = sorted(prof["ops"], key=lambda o: -o["us"])
    prof["isa"] = sess.isa
    return prof
