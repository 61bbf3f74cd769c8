"""Multiply-accumulate counts per sample, from a torch module or an ONNX graph.

Counted: convolutions, Linear / Gemm, every matrix product (attention's QK^T and AV included), and
sparse layers by what they execute (a module with ``macs_per_sample``, e.g. CSR: one MAC per stored
non-zero). Elementwise ops, pooling and normalization are not counted (they are a small share and
identical between a ticket and its dense reference). torch counts come from
``torch.utils.flop_counter`` (MACs = FLOPs / 2), so the torch and ONNX numbers of a model agree.
"""

from __future__ import annotations

import math
from typing import Any


def torch_macs(model: Any, in_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass of a single sample of shape ``in_shape`` (C, H, W).

    Example:
        >>> from torch import nn
        >>> torch_macs(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2))
        8
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sparse_total = [0]

    def hook(mod: Any, inp: Any, out: torch.Tensor) -> None:
        sparse_total[0] += int(mod.macs_per_sample(out))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if callable(getattr(m, "macs_per_sample", None))]
    was_training = model.training
    model.eval()
    try:
        # grad mode on: nn.MultiheadAttention's inference fast path is one fused op the counter
        # cannot see into; with grad enabled it runs as linear + matmul ops, which it counts
        # and the math attention backend decomposes scaled_dot_product_attention into countable bmm's
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with FlopCounterMode(display=False) as counter, torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            model(torch.zeros(1, *in_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(counter.get_total_flops()) // 2 + sparse_total[0]


def onnx_macs(model: Any) -> int:
    """MACs per sample of an ONNX model: Conv, Gemm and every MatMul (attention's too).

    Shapes come from ONNX shape inference with the batch fixed to 1 and data propagation (so
    Reshape targets computed from Shape nodes resolve); whatever is still unknown (attention blocks
    exported by TorchScript) is read off one ONNX Runtime run of a zero sample.
    """
    import onnx
    from onnx import shape_inference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    for vi in list(m.graph.value_info):
        m.graph.value_info.remove(vi)
    try:
        m = shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # an exotic graph: fall back to what ONNX Runtime reports below
        pass
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
        if dims and all(dims):
            shapes[vi.name] = dims
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    for sp in m.graph.sparse_initializer:
        shapes[sp.values.name] = list(sp.dims)
    counted = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    missing = {name for n in counted for name in (n.input[0], n.input[1], n.output[0]) if name not in shapes}
    if missing:
        shapes.update(_shapes_from_ort(m, missing))
    total = 0
    for node in counted:
        if node.op_type == "Conv":
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out:
                total += math.prod(out) * math.prod(w[1:])  # out numel * (Cin/groups * kH * kW)
        else:
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a and len(a) >= 2 else a[-1]
                total += math.prod(out) * k  # every output element is a length-k dot product
    return total


def _shapes_from_ort(m: Any, names: set[str]) -> dict[str, list[int]]:
    """Shapes of intermediate tensors from one ONNX Runtime run at batch 1 (zeros)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    g = onnx.ModelProto()
    g.CopyFrom(m)
    known = {o.name for o in g.graph.output}
    init = {i.name for i in g.graph.initializer}
    for name in sorted(names - known - init):
        g.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    feeds = {}
    for vi in g.graph.input:
        if vi.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        elem = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.zeros(dims, dtype=elem)
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every name
        sess = ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs = [o.name for o in sess.get_outputs()]
        values = sess.run(outs, feeds)
    except Exception:  # MAC counts are a report column, never a reason to fail a bench
        return {}
    return {n: list(v.shape) for n, v in zip(outs, values, strict=True) if n in names and hasattr(v, "shape")}
