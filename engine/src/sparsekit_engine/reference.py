"""Pure numpy reference executor: runs the ONNX graph op by op (float64 math, float32 result).

This is the ground truth of the parity tests (next to ONNX Runtime) and the constant folder of the
loader. It implements exactly the op set sparse-cpu accepts plus a few shape/cast ops that only ever
see constants. No torch, no native code.

Example:
    >>> from sparsekit_engine.reference import run_reference
    >>> y = run_reference("model.onnx", x)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sparsekit_engine.errors import unsupported
from sparsekit_engine.graph import Graph, Node, load_graph


def _pads_2d(attrs: dict, in_hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], d: tuple[int, int],
             ceil_mode: bool = False) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pads incl. auto_pad."""
    ap = attrs.get("auto_pad", "NOTSET")
    if ap in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i in range(2):
            o = -(-in_hw[i] // s[i])
            total = max((o - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_hw[i], 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if ap == "SAME_UPPER" else (big, small))
        return out[0][0], out[1][0], out[0][1], out[1][1]
    if ap == "VALID":
        return 0, 0, 0, 0
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(p) != 4:
        raise ValueError("only 2-D pads are supported")
    return int(p[0]), int(p[1]), int(p[2]), int(p[3])


def pool_out_dim(n: int, k: int, s: int, d: int, p0: int, p1: int, ceil_mode: bool) -> int:
    eff = (k - 1) * d + 1
    num = n + p0 + p1 - eff
    o = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (o - 1) * s >= n + p0:  # the last window must start inside input or head pad
        o -= 1
    return o


def conv_geometry(attrs: dict, x_shape: tuple, w_shape: tuple) -> dict:
    kh, kw = int(w_shape[2]), int(w_shape[3])
    s = tuple(int(v) for v in attrs.get("strides", [1, 1]))
    d = tuple(int(v) for v in attrs.get("dilations", [1, 1]))
    H, W = int(x_shape[-2]), int(x_shape[-1])
    pt, pl, pb, pr = _pads_2d(attrs, (H, W), (kh, kw), s, d)
    Ho = (H + pt + pb - (kh - 1) * d[0] - 1) // s[0] + 1
    Wo = (W + pl + pr - (kw - 1) * d[1] - 1) // s[1] + 1
    return dict(kh=kh, kw=kw, sh=s[0], sw=s[1], dh=d[0], dw=d[1], pt=pt, pl=pl, pb=pb, pr=pr, Ho=Ho, Wo=Wo,
                groups=int(attrs.get("group", 1)))


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict) -> np.ndarray:
    g = conv_geometry(attrs, x.shape, w.shape)
    N, C, H, W = x.shape
    O = w.shape[0]  # noqa: E741
    G = g["groups"]
    Cg, Og = C // G, O // G
    xp = np.zeros((N, C, H + g["pt"] + g["pb"], W + g["pl"] + g["pr"]), np.float64)
    xp[:, :, g["pt"]:g["pt"] + H, g["pl"]:g["pl"] + W] = x
    y = np.zeros((N, O, g["Ho"], g["Wo"]), np.float64)
    sh, sw, dh, dw, Ho, Wo = g["sh"], g["sw"], g["dh"], g["dw"], g["Ho"], g["Wo"]
    for gi in range(G):
        wg = w[gi * Og:(gi + 1) * Og].astype(np.float64)
        xg = xp[:, gi * Cg:(gi + 1) * Cg]
        for i in range(g["kh"]):
            for j in range(g["kw"]):
                win = xg[:, :, i * dh:i * dh + sh * (Ho - 1) + 1:sh, j * dw:j * dw + sw * (Wo - 1) + 1:sw]
                y[:, gi * Og:(gi + 1) * Og] += np.einsum("nchw,oc->nohw", win, wg[:, :, i, j], optimize=True)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def pool2d(x: np.ndarray, attrs: dict, kind: str) -> np.ndarray:
    k = tuple(int(v) for v in attrs["kernel_shape"])
    s = tuple(int(v) for v in attrs.get("strides", [1, 1]))
    d = tuple(int(v) for v in attrs.get("dilations", [1, 1]))
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    N, C, H, W = x.shape
    pt, pl, pb, pr = _pads_2d(attrs, (H, W), k, s, d)
    Ho = pool_out_dim(H, k[0], s[0], d[0], pt, pb, ceil_mode)
    Wo = pool_out_dim(W, k[1], s[1], d[1], pl, pr, ceil_mode)
    cip = bool(attrs.get("count_include_pad", 0))
    y = np.zeros((N, C, Ho, Wo), np.float64)
    for oh in range(Ho):
        for ow in range(Wo):
            hs, ws = oh * s[0] - pt, ow * s[1] - pl
            hh = [hs + i * d[0] for i in range(k[0])]
            ww = [ws + j * d[1] for j in range(k[1])]
            hv = [h for h in hh if 0 <= h < H]
            wv = [w for w in ww if 0 <= w < W]
            win = x[:, :, hv][:, :, :, wv].astype(np.float64)
            if kind == "max":
                y[:, :, oh, ow] = win.max(axis=(2, 3)) if win.size else -np.inf
            else:
                if cip:
                    he = min(hs + (k[0] - 1) * d[0] + 1, H + pb)
                    we = min(ws + (k[1] - 1) * d[1] + 1, W + pr)
                    div = (he - hs) * (we - ws)
                else:
                    div = len(hv) * len(wv)
                y[:, :, oh, ow] = win.sum(axis=(2, 3)) / max(div, 1)
    return y


def _act(name: str, x: np.ndarray, attrs: dict, extra: list) -> np.ndarray:
    if name == "Relu":
        return np.maximum(x, 0)
    if name == "LeakyRelu":
        a = float(attrs.get("alpha", 0.01))
        return np.where(x >= 0, x, x * a)
    if name == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "HardSigmoid":
        a, b = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        return np.clip(x * a + b, 0, 1)
    if name == "HardSwish":
        return x * np.clip(x / 6.0 + 0.5, 0, 1)
    if name == "Clip":
        lo, hi = clip_bounds(attrs, extra)
        return np.clip(x, lo, hi)
    raise KeyError(name)


def clip_bounds(attrs: dict, extra: list) -> tuple[float, float]:
    lo = float(attrs.get("min", -np.inf))
    hi = float(attrs.get("max", np.inf))
    if len(extra) > 0 and extra[0] is not None:
        lo = float(np.asarray(extra[0]).reshape(-1)[0])
    if len(extra) > 1 and extra[1] is not None:
        hi = float(np.asarray(extra[1]).reshape(-1)[0])
    return lo, hi


ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip")


def _reduce_axes(node: Node, ins: list, rank: int) -> tuple[tuple[int, ...] | None, bool]:
    axes = node.attrs.get("axes")
    if axes is None and len(ins) > 1 and ins[1] is not None:
        axes = [int(a) for a in np.asarray(ins[1]).reshape(-1)]
    keep = bool(node.attrs.get("keepdims", 1))
    if axes is None or len(axes) == 0:
        return None, keep
    return tuple(sorted(int(a) % rank for a in axes)), keep


def _reshape_target(x_shape: tuple, shape: np.ndarray, allowzero: int) -> tuple:
    out = []
    for i, s in enumerate(int(v) for v in shape):
        out.append(x_shape[i] if (s == 0 and not allowzero) else s)
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1]))
        out[out.index(-1)] = int(np.prod(x_shape)) // max(known, 1)
    return tuple(out)


def eval_node(node: Node, ins: list) -> list[np.ndarray]:
    """Evaluate one node on numpy inputs (None = missing optional input)."""
    op, a = node.op, node.attrs
    x = ins[0] if ins else None
    if op in ("Identity", "Dropout"):
        return [x]
    if op == "Conv":
        return [conv2d(x, ins[1], ins[2] if len(ins) > 2 else None, a)]
    if op == "Gemm":
        return [_gemm(ins, a)]
    if op == "MatMul":
        return [np.matmul(ins[0].astype(np.float64), ins[1].astype(np.float64))]
    if op == "BatchNormalization":
        sc, bi, mean, var = (np.asarray(v, np.float64) for v in ins[1:5])
        eps = float(a.get("epsilon", 1e-5))
        shp = (1, -1) + (1,) * (x.ndim - 2)
        return [(x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + eps) * sc.reshape(shp) + bi.reshape(shp)]
    if op in ACTIVATIONS:
        return [_act(op, np.asarray(x, np.float64), a, ins[1:])]
    if op in ("Add", "Mul", "Sub", "Div"):
        f: Callable = {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract, "Div": np.divide}[op]
        r = f(np.asarray(ins[0]), np.asarray(ins[1]))
        return [r]
    if op == "Concat":
        return [np.concatenate([np.asarray(v) for v in ins], axis=int(a["axis"]))]
    if op == "MaxPool":
        return [pool2d(x, a, "max")]
    if op == "AveragePool":
        return [pool2d(x, a, "avg")]
    if op == "GlobalAveragePool":
        return [np.asarray(x, np.float64).mean(axis=(2, 3), keepdims=True)]
    if op == "GlobalMaxPool":
        return [np.asarray(x, np.float64).max(axis=(2, 3), keepdims=True)]
    if op == "ReduceMean":
        axes, keep = _reduce_axes(node, ins, x.ndim)
        return [np.asarray(x, np.float64).mean(axis=axes, keepdims=keep)]
    if op == "Flatten":
        ax = int(a.get("axis", 1)) % max(x.ndim, 1)
        return [x.reshape(int(np.prod(x.shape[:ax])), -1)]
    if op == "Reshape":
        return [x.reshape(_reshape_target(x.shape, ins[1], int(a.get("allowzero", 0))))]
    if op in ("Squeeze", "Unsqueeze"):
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
        if op == "Squeeze":
            return [np.squeeze(x, axis=tuple(int(v) % x.ndim for v in axes) if axes else None)]
        out = x
        for ax in sorted(int(v) % (x.ndim + len(axes)) for v in axes):
            out = np.expand_dims(out, ax)
        return [out]
    if op in CONST_ONLY_OPS:
        return [_eval_const_only(node, x, ins)]
    raise unsupported(op, node.name)


#: ops the reference can evaluate (the data-path subset is what sparse-cpu supports)
CONST_ONLY_OPS = {"Constant", "Cast", "Transpose", "Shape", "Gather", "Sqrt", "Neg", "Reciprocal", "Unsqueeze"}


def _gemm(ins: list, a: dict) -> np.ndarray:
    A, B = ins[0].astype(np.float64), ins[1].astype(np.float64)
    if a.get("transA", 0):
        A = A.T
    if a.get("transB", 0):
        B = B.T
    y = float(a.get("alpha", 1.0)) * (A @ B)
    if len(ins) > 2 and ins[2] is not None:
        y = y + float(a.get("beta", 1.0)) * ins[2]
    return y


def _eval_const_only(node: Node, x: Any, ins: list) -> np.ndarray:
    """The constant-only helpers (the loader folds these; never on the data path)."""
    op, a = node.op, node.attrs
    if op == "Constant":
        for k in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if k in a:
                v = a[k]
                return np.asarray(v, np.float32 if "float" in k else (np.int64 if "int" in k else None))
        raise unsupported(op, node.name, "unsupported Constant attribute")
    if op == "Cast":
        from onnx import helper

        return np.asarray(x).astype(helper.tensor_dtype_to_np_dtype(int(a["to"])))
    if op == "Transpose":
        perm = a.get("perm")
        return np.transpose(x, perm)
    if op == "Shape":
        return np.asarray(x.shape, np.int64)
    if op == "Gather":
        return np.take(x, np.asarray(ins[1]).astype(np.int64), axis=int(a.get("axis", 0)))
    if op == "Sqrt":
        return np.sqrt(x)
    if op == "Neg":
        return -x
    if op == "Reciprocal":
        return 1.0 / x
    raise unsupported(op, node.name)


def run_graph(graph: Graph, x: np.ndarray) -> np.ndarray:
    env: dict[str, Any] = dict(graph.consts)
    env[graph.input_name] = np.asarray(x, np.float32)
    env[""] = None
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx"):
            raise unsupported(f"{node.domain}.{node.op}", node.name)
        ins = [env.get(i) if i else None for i in node.inputs]
        outs = eval_node(node, ins)
        for name, v in zip(node.outputs, outs, strict=False):
            env[name] = v
    y = env[graph.output_name]
    return np.asarray(y, np.float32)


def run_reference(path_or_graph: Any, x: np.ndarray) -> np.ndarray:
    """Run an ONNX file (or a loaded Graph) on ``x`` with numpy; returns float32."""
    graph = path_or_graph if isinstance(path_or_graph, Graph) else load_graph(path_or_graph)
    return run_graph(graph, x)


__all__ = ["run_reference", "run_graph", "eval_node", "conv2d", "pool2d", "pool_out_dim", "conv_geometry",
           "ACTIVATIONS", "clip_bounds", "math"]
