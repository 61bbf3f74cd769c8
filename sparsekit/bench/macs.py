"""Multiply-accumulate counts per sample, from a torch module (forward hooks) or an ONNX graph.

Counted: Conv (any dims), Linear / Gemm / MatMul, and torch CSR linear layers (one MAC per stored
non-zero). Elementwise ops, pooling and normalization are ignored (they are a small share for the
models sparsekit targets and identical between a ticket and its dense reference).
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
    from torch import nn

    total = [0]

    def hook(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
        counter = getattr(mod, "macs_per_sample", None)
        if callable(counter):  # sparse layers count what they execute (e.g. CSR non-zeros)
            total[0] += int(counter(out))
        elif isinstance(mod, nn.modules.conv._ConvNd):
            k = math.prod(mod.kernel_size) * mod.in_channels // mod.groups
            total[0] += out[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total[0] += out[0].numel() * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total[0]


def onnx_macs(model: Any) -> int:
    """MACs per sample of an ONNX model (batch dimension fixed to 1 for shape inference)."""
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
    m = shape_inference.infer_shapes(m)
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    for sp in m.graph.sparse_initializer:
        shapes[sp.values.name] = list(sp.dims)
    total = 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out:
                total += math.prod(out) * math.prod(w[1:])  # out numel * (Cin/groups * kH * kW)
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a and len(a) >= 2 else a[-1]
                total += math.prod(out) * k
    return total
