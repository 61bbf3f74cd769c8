"""Self-verification of an exported ONNX file: checker, ORT vs torch on real data, zeros kept.

Three checks, each a hard failure (``VerificationError``):
1. ``onnx.checker.check_model(full_check=True)``;
2. ONNX Runtime (CPU, 1 thread) vs the torch module on real test inputs at several batch sizes
   (incl. 1), max |difference| of the logits within ``EXPORT_ATOL`` (scaled by the logit size);
3. every masked weight is still exactly zero in the exported initializers (counted per layer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsekit.errors import VerificationError

#: max |ORT - torch| on logits, relative to max(1, max |torch logits|): float32 reassociation in
#: fused kernels (BN folded into Conv, MLAS GEMM blocking) stays around 1e-6 for sparsekit's models.
EXPORT_ATOL = 1e-4
#: batch sizes verified, on consecutive slices of the test split
VERIFY_BATCHES = (1, 7, 64)


def real_batches(data_spec: str, data_dir: str | None, sizes: Sequence[int]) -> Iterator[torch.Tensor]:
    """Consecutive slices of the test split with the given batch sizes: each (B, C, H, W)."""
    from sparsekit.data import load_dataset

    bundle = load_dataset(data_spec, data_dir)
    x, _ = next(iter(bundle.batches("test", sum(sizes))))
    start = 0
    for b in sizes:
        if start + b > len(x):
            break
        yield x[start : start + b]
        start += b


def ort_session(path: str | Path, threads: int = 1, provider: str = "CPUExecutionProvider") -> Any:
    """An ONNX Runtime session with an explicit thread count and quiet logging."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=[provider])


def verify_export(
    path: Path, model: nn.Module, ticket: Any, mask: Any, data_dir: str | None = None
) -> dict[str, Any]:
    """Run all three checks on ``path``; returns the measured numbers (raises on failure)."""
    import onnx

    proto = onnx.load(str(path))
    # onnx's shape inference (full_check) does not accept sparse_tensor inputs of Gemm/Conv, so
    # files with sparse initializers get the structural check only (ORT parity below still runs)
    full = len(proto.graph.sparse_initializer) == 0
    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as exc:
        raise VerificationError(f"exported model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    parity = check_parity(path, model, real_batches(ticket.data_spec, data_dir, VERIFY_BATCHES))
    zeros = check_zeros(proto, mask)
    return {"checker": "ok (full)" if full else "ok (structural)", "parity": parity, "zeros": zeros}


def check_parity(path: Path, model: nn.Module, batches: Iterator[torch.Tensor]) -> dict[str, Any]:
    """ORT vs torch on each batch; raises VerificationError beyond EXPORT_ATOL."""
    try:
        sess = ort_session(path)
    except Exception as exc:
        raise VerificationError(f"ONNX Runtime cannot load the export: {str(exc).splitlines()[0]}") from None
    name = sess.get_inputs()[0].name
    rows = []
    model.eval()
    for x in batches:
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise VerificationError(f"ONNX output shape {got.shape} != torch {ref.shape} at batch {len(x)}")
        diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        allowed = EXPORT_ATOL * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
        rows.append({"batch": len(x), "max_abs_diff": diff, "allowed": allowed})
        if not diff <= allowed:  # also catches NaN
            raise VerificationError(
                f"ONNX output differs from torch at batch {len(x)}: max |diff| {diff:.3g} > {allowed:.3g} "
                f"(EXPORT_ATOL {EXPORT_ATOL})"
            )
    if not rows:
        raise VerificationError("no test inputs to verify the export with")
    return {"tolerance": "EXPORT_ATOL", "atol": EXPORT_ATOL, "batches": rows,
            "max_abs_diff": max(r["max_abs_diff"] for r in rows)}


def initializer_arrays(proto: Any) -> dict[str, np.ndarray]:
    """All initializers of a graph as numpy arrays, sparse initializers densified."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for sp in proto.graph.sparse_initializer:
        dense = np.zeros(int(np.prod(sp.dims)), dtype=numpy_helper.to_array(sp.values).dtype)
        idx = numpy_helper.to_array(sp.indices)
        vals = numpy_helper.to_array(sp.values)
        if idx.ndim == 2:  # (NNZ, rank) coordinates -> linear indices
            idx = np.ravel_multi_index(tuple(idx.T), tuple(sp.dims))
        dense[idx] = vals
        out[sp.values.name] = dense.reshape(tuple(sp.dims))
    return out


def check_zeros(proto: Any, mask: Any) -> dict[str, Any]:
    """Match every mask tensor to an exported weight and count its zeros.

    Initializers are matched by name, else by shape (or transposed shape) whose zeros cover the
    masked positions: exporters rename weights when they fold BatchNorm into Conv (a per-channel
    scale, which keeps zeros zero).
    """
    arrays = {k: v for k, v in initializer_arrays(proto).items() if v.ndim >= 2}
    total_zeros = int(sum(int((a == 0).sum()) for a in arrays.values()))
    if mask is None:
        return {"masked_total": 0, "zeros_total": total_zeros, "layers": []}
    used: set[str] = set()
    layers = []
    for name, m in mask.items():
        keep = m.numpy()
        found = None
        candidates = [name] if name in arrays else []
        candidates += [k for k, a in arrays.items() if k not in used and k != name and a.shape in (keep.shape, keep.T.shape)]
        for k in candidates:
            a = arrays[k]
            a = a if a.shape == keep.shape else a.T
            if k not in used and not np.any(a[~keep] != 0):
                found = k
                break
        masked = int((~keep).sum())
        if found is None:
            raise VerificationError(
                f"exported weights lost the zeros of {name}: no initializer of shape {list(keep.shape)} "
                f"is zero at its {masked} masked positions"
            )
        used.add(found)
        layers.append({"name": name, "initializer": found, "masked": masked,
                       "zeros_in_onnx": int((arrays[found] == 0).sum())})
    masked_total = sum(r["masked"] for r in layers)
    return {"masked_total": masked_total, "zeros_total": total_zeros, "layers": layers}
