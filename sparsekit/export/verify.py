"""Self-verification of an exported ONNX file: checker, ORT vs torch on real data, zeros kept.

Three checks, each a hard failure (``VerificationError``):
1. ``onnx.checker.check_model(full_check=True)``;
2. ONNX Runtime (CPU, 1 thread) vs the torch module on real test inputs at several batch sizes
   (incl. 1), max |difference| of the logits within ``EXPORT_ATOL`` (scaled by the logit size);
3. every masked weight is still exactly zero in the exported initializers (counted per layer).

A parity check on outputs that are constant over the test inputs (all zero, or the same logits for
every sample, e.g. a zero-initialized torchvision head) proves nothing about the graph. Then the
check is repeated on a copy with perturbed weights, exported the same way ("verified":
"perturbed"); if even that is constant the result says "verified": "vacuous" instead of passing
silently.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
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
#: outputs whose spread over the test samples is below this (relative to max |logit|) are "constant"
VACUOUS_RTOL = 1e-6
#: relative size of the perturbation added to every parameter for the re-run of a vacuous check
PERTURB_SCALE = 0.1


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
    path: Path, model: nn.Module, ticket: Any, mask: Any, data_dir: str | None = None,
    static_batch: int | None = None, reexport: Callable[[nn.Module], Any] | None = None,
) -> dict[str, Any]:
    """Run all three checks on ``path``; returns the measured numbers (raises on failure).

    ``static_batch``: the file has a fixed batch size; it is verified on two batches of that size.
    ``reexport(module) -> ModelProto`` exports a perturbed copy when the outputs are constant.
    """
    import onnx

    proto = onnx.load(str(path))
    # onnx's shape inference (full_check) does not accept sparse_tensor inputs of Gemm/Conv, so
    # files with sparse initializers get the structural check only (ORT parity below still runs)
    full = len(proto.graph.sparse_initializer) == 0
    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as exc:
        raise VerificationError(f"exported model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    sizes = (static_batch, static_batch) if static_batch else VERIFY_BATCHES
    batches = list(real_batches(ticket.data_spec, data_dir, sizes))
    parity, refs = _parity(path, model, batches)
    verified, note = "passed", ""
    if is_vacuous(refs):
        verified = "vacuous"
        note = ("the model's outputs are constant on the test inputs, so ONNX Runtime vs torch proves "
                "nothing: the export is unverified")
        if reexport is not None:
            probe = perturbed(model)
            tmp = Path(path).with_name(f".{Path(path).name}.perturbed.{os.getpid()}.tmp")
            try:
                tmp.write_bytes(reexport(probe).SerializeToString())
                parity["perturbed"], refs2 = _parity(tmp, probe, batches)
            finally:
                tmp.unlink(missing_ok=True)
            if not is_vacuous(refs2):
                verified = "perturbed"
                note = ("the model's outputs are constant on the test inputs (e.g. a zero-initialized head), "
                        "so parity was also checked on a copy with perturbed weights exported the same way: "
                        "it matches")
            else:
                note += " (also with perturbed weights)"
    out = {"checker": "ok (full)" if full else "ok (structural)", "parity": parity, "zeros": check_zeros(proto, mask),
           "verified": verified}
    if note:
        out["verified_note"] = note
    return out


def is_vacuous(outputs: Sequence[np.ndarray]) -> bool:
    """True when the outputs are all zero or the same for every sample (a parity check proves nothing)."""
    if not outputs:
        return True
    ref = np.concatenate([o.reshape(len(o), -1) for o in outputs])  # (N, K)
    if ref.size == 0 or not np.any(ref):
        return True
    if len(ref) < 2:
        return False
    spread = float(np.max(np.ptp(ref, axis=0)))
    return not spread > VACUOUS_RTOL * max(1.0, float(np.max(np.abs(ref))))


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with every parameter moved by PERTURB_SCALE x its magnitude (1 for all-zero tensors)."""
    probe = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in probe.parameters():
            scale = float(p.abs().max()) if p.numel() and float(p.abs().max()) > 0 else 1.0
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * PERTURB_SCALE * scale)
    return probe


def check_parity(path: Path, model: nn.Module, batches: Iterator[torch.Tensor]) -> dict[str, Any]:
    """ORT vs torch on each batch; raises VerificationError beyond EXPORT_ATOL."""
    return _parity(path, model, batches)[0]


def _parity(path: Path, model: nn.Module, batches: Iterator[torch.Tensor] | Sequence[torch.Tensor]
            ) -> tuple[dict[str, Any], list[np.ndarray]]:
    try:
        sess = ort_session(path)
    except Exception as exc:
        raise VerificationError(f"ONNX Runtime cannot load the export: {str(exc).splitlines()[0]}") from None
    name = sess.get_inputs()[0].name
    rows = []
    refs = []
    model.eval()
    for x in batches:
        with torch.no_grad():
            ref = model(x).numpy()
        refs.append(ref)
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
            "max_abs_diff": max(r["max_abs_diff"] for r in rows)}, refs


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
