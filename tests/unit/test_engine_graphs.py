"""Tiny ONNX graphs for the sparse-cpu engine tests (onnx.helper only, no torch; no tests in this file)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR = 9


def rand_weight(rng: np.random.Generator, shape: tuple, density: float) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32)
    if density < 1.0:
        w *= rng.random(shape) < density
    return w.astype(np.float32)


def model(nodes: list, inits: dict, in_shape: tuple, path, opset: int = OPSET, sparse: dict | None = None,
          in_name: str = "x", out_name: str = "y") -> str:
    X = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", *in_shape])
    Y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [X], [Y], [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    for k, v in (sparse or {}).items():
        flat = v.reshape(-1)
        nz = np.flatnonzero(flat)
        g.sparse_initializer.append(helper.make_sparse_tensor(
            numpy_helper.from_array(flat[nz].astype(np.float32), k), numpy_helper.from_array(nz.astype(np.int64), k + "_i"),
            list(v.shape)))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = IR
    onnx.save(m, str(path))
    return str(path)


def conv_model(path, rng, C=8, O=16, H=10, W=9, k=3, s=1, pads=(1, 1, 1, 1), d=1, g=1, density=0.5, act="Relu",  # noqa: E741
               bias=True, auto_pad=None, zero_channel=False, residual=False) -> str:
    kk = (k, k) if isinstance(k, int) else k
    w = rand_weight(rng, (O, C // g, *kk), density)
    if zero_channel:
        w[O // 2] = 0
    inits = {"w": w}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(O).astype(np.float32)
        ins.append("b")
    attrs = dict(strides=[s, s], dilations=[d, d], group=g, kernel_shape=list(kk))
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = list(pads)
    nodes = [helper.make_node("Conv", ins, ["z"], name="conv0", **attrs)]
    last = "z"
    if residual:
        inits["r"] = rng.standard_normal((1, O, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["x", "w"], ["z2"], name="conv1", **attrs))
        nodes.append(helper.make_node("Add", ["z", "z2"], ["z3"], name="add0"))
        last = "z3"
    if act:
        nodes.append(helper.make_node(act, [last], ["y"], name="act0"))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"], name="id0"))
    return model(nodes, inits, (C, H, W), path)


def fc_model(path, rng, F=37, O=19, density=0.3, op="Gemm", alpha=1.0, beta=1.0, transB=1, act="Relu") -> str:  # noqa: E741
    if op == "Gemm":
        w = rand_weight(rng, (O, F) if transB else (F, O), density)
        b = rng.standard_normal(O).astype(np.float32)
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["z"], alpha=alpha, beta=beta, transB=transB, name="gemm0")]
        inits = {"w": w, "b": b}
    else:
        w = rand_weight(rng, (F, O), density)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["z"], name="mm0")]
        inits = {"w": w}
    nodes.append(helper.make_node(act, ["z"], ["y"]) if act else helper.make_node("Identity", ["z"], ["y"]))
    return model(nodes, inits, (F,), path)
