"""Graph IR -> fused engine plan -> native Engine (layouts, memory, per-layer kernel choice).

Stages (all numpy, no torch):
1. ``lower``: ONNX nodes -> engine nodes (conv, fc, pools, gap, binary, affine, concat, flatten) with
   per-image shapes; constant subgraphs are folded with the numpy reference.
2. ``fuse``: BatchNormalization / constant per-channel Mul/Add folded into the producing conv/fc,
   residual Add, activations and SiLU (x * Sigmoid(x)) fused into the producer's epilogue.
3. layouts: every activation is stored per image as C x (H+pads) x (W+pads) with a zero ring sized for
   its stride-1 and stride-2 conv consumers, so those convs read shifted runs in place (no im2col, no
   copy; stride 2 sparse: even lanes of two vectors); other strides (and dense stride-2 kernels)
   de-interleave their input into stride^2 phase planes.
4. memory: liveness-based first-fit placement of all tensors in one arena per thread.
5. native ops (``build_op``: one builder per node kind in ``BUILDERS``; op / activation codes from the
   native module, ``native_codes``; conv / fc parameters named by ``ConvParams`` / ``FcParams``) + per-layer
   choice sparse/dense by timing both (cached in a JSON file).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit_engine.errors import EngineUnsupported, unsupported
from sparsekit_engine.graph import Graph
from sparsekit_engine.reference import (
    ACTIVATIONS,
    _pads_2d,
    clip_bounds,
    conv_geometry,
    eval_node,
    pool_out_dim,
)

#: bump when kernels or layouts change so cached timing decisions are re-measured
KERNEL_VERSION = 26
BIN_CODES = {"Add": 0, "Mul": 1, "Sub": 2, "Div": 3}
#: images per chunk for graphs with small activations (FC layers then vectorize over the batch)
CHUNK_IMAGES = 16
CHUNK_MAX_BYTES = 2 << 20
#: plans with small-map convs (see small_map_conv): images per chunk tried, the largest that fits the budget
CONV_CHUNKS = (2, 4, 8)
CONV_CHUNK_MAX_BYTES = 16 << 20
DENSE_OB = 8  # upper bound of the per-ISA dense block (scratch sizing)
#: interleaved sparse convs: input channels per block so that a tile's input strip fits in this many bytes
#: (L1 is 32-48 KB; the tile's outputs and the weights share it). Sweep (benchmarks/engine_il_strip.py,
#: batch 16, Intel Xeon AVX-512, 2026-12-05): 12 / 24 / 48 KB / no blocks: vgg16 99 % 11.3 / 10.4 / 10.2 /
#: 13.1 ms, tv:resnet18 90 % 16.7 / 16.1 / 15.6 / 19.9, vgg16 90 % 30.3 / 27.0 / 27.5 / 33.9: 24 and 48 tie
IL_STRIP_BYTES = int(os.environ.get("SPARSEKIT_ENGINE_IL_STRIP", 24 << 10))


@dataclass
class ENode:
    kind: str
    name: str
    onnx_op: str
    inputs: list[str]
    output: str
    p: dict[str, Any] = field(default_factory=dict)
    act: int = 0
    a0: float = 0.0
    a1: float = 0.0
    res: str | None = None
    fused: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def native_codes() -> tuple[dict[str, int], dict[str, int]]:
    """(op codes, activation codes), defined once in native/engine.cpp and exported by the native module."""
    from sparsekit_engine.native import lib as _lib

    lib = _lib()
    return dict(lib.OP_CODES), dict(lib.ACT_CODES)


def act_code(op: str) -> int:
    return native_codes()[1][op]


def _act_params(op: str, attrs: dict, extra: list) -> tuple[int, float, float]:
    ACT_CODES = native_codes()[1]  # noqa: N806
    if op == "Clip":
        lo, hi = clip_bounds(attrs, extra)
        return ACT_CODES["Clip"], max(lo, -3.4e38), min(hi, 3.4e38)
    if op == "LeakyRelu":
        return ACT_CODES[op], float(attrs.get("alpha", 0.01)), 0.0
    if op == "HardSigmoid":
        return ACT_CODES[op], float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return ACT_CODES[op], 0.0, 0.0


# ------------------------------------------------------------------------------------------- lowering
@dataclass
class _Lowering:
    """State of one graph's lowering to engine nodes: folded constants, per-sample shapes, aliases."""

    consts: dict[str, np.ndarray]
    shapes: dict[str, tuple]
    alias: dict[str, str] = field(default_factory=dict)
    nodes: list[ENode] = field(default_factory=list)

    def res(self, n: str) -> str:
        while n in self.alias:
            n = self.alias[n]
        return n

    def const(self, n: str, node: Any, what: str) -> np.ndarray:
        n = self.res(n)
        if n not in self.consts:
            raise unsupported(node.op, node.name, f"{what} must be a constant")
        return self.consts[n]

    def fold(self, node: Any, ins: list[str]) -> None:
        """Evaluate a node whose inputs are all constants (numpy reference) into new constants."""
        try:
            outs = eval_node(node, [self.consts[i] if i else None for i in ins])
        except EngineUnsupported:
            raise
        except Exception as exc:
            raise unsupported(node.op, node.name, f"constant folding failed: {exc}") from None
        for o, v in zip(node.outputs, outs, strict=False):
            if o:
                arr = np.asarray(v)
                self.consts[o] = arr.astype(np.float32) if arr.dtype == np.float64 else arr


def lower(graph: Graph, in_shape: tuple[int, ...]) -> tuple[list[ENode], dict[str, tuple], str]:
    """ONNX nodes -> engine nodes (one ``LOWERINGS`` entry per ONNX op), constants folded, shapes inferred."""
    L = _Lowering(consts=dict(graph.consts), shapes={graph.input_name: tuple(in_shape)})
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx"):
            raise unsupported(f"{node.domain}.{node.op}", node.name)
        ins = [L.res(i) if i else "" for i in node.inputs]
        data_ins = [i for i in ins if i]
        if node.op == "Constant" or (data_ins and all(i in L.consts for i in data_ins)):
            L.fold(node, ins)
            continue
        if node.op in BIN_CODES:
            _lower_binary(node, ins, L.shapes, L.consts, L.nodes)
            continue
        if ins[0] not in L.shapes:
            raise unsupported(node.op, node.name, "its data input must be the first input")
        lowering = LOWERINGS.get(node.op)
        if lowering is None:
            raise unsupported(node.op, node.name)
        lowering(L, node, ins, L.shapes[ins[0]])
    outn = L.res(graph.output_name)
    if outn not in L.shapes:
        raise EngineUnsupported("the graph output is a constant; use --runtime ort-cpu")
    return L.nodes, L.shapes, outn


# One lowering per ONNX op: (state, node, resolved inputs, per-sample shape of the data input) -> None.
# Each appends its engine node(s) and the output's shape, or aliases the output to an existing tensor.

def _lower_identity(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    if len(node.outputs) > 1 and node.outputs[1]:
        raise unsupported(node.op, node.name, "mask output")
    L.alias[node.outputs[0]] = ins[0]


def _lower_conv(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm, out = node.op, node.name, node.outputs[0]
    w = L.const(node.inputs[1], node, "weight").astype(np.float32)
    if w.ndim != 4 or len(xs) != 3:
        raise unsupported(op, nm, f"only 2-D convolution (weight rank {w.ndim}, input rank {len(xs) + 1})")
    g = conv_geometry(node.attrs, (1,) + xs, w.shape)
    if xs[0] != w.shape[1] * g["groups"] or w.shape[0] % g["groups"]:
        raise unsupported(op, nm, "channel/group mismatch")
    b = L.const(node.inputs[2], node, "bias").astype(np.float32) if len(ins) > 2 and ins[2] else None
    if g["Ho"] < 1 or g["Wo"] < 1:
        raise unsupported(op, nm, "empty output")
    L.nodes.append(ENode("conv", nm, op, [ins[0]], out, dict(w=w, b=b, **g)))
    L.shapes[out] = (w.shape[0], g["Ho"], g["Wo"])


def _lower_fc(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm, out, a = node.op, node.name, node.outputs[0], node.attrs
    if len(xs) != 1:
        raise unsupported(op, nm, f"data input must be 2-D [N, F], got rank {len(xs) + 1}")
    B = L.const(node.inputs[1], node, "weight").astype(np.float32)
    if B.ndim != 2:
        raise unsupported(op, nm, "weight must be 2-D")
    bias = None
    if op == "Gemm":
        if a.get("transA", 0):
            raise unsupported(op, nm, "transA=1")
        W = B if a.get("transB", 0) else B.T
        W = W * np.float32(a.get("alpha", 1.0))
        if len(ins) > 2 and ins[2]:
            C = L.const(node.inputs[2], node, "C").astype(np.float32) * np.float32(a.get("beta", 1.0))
            if C.size not in (1, W.shape[0]) or (C.ndim == 2 and C.shape[0] != 1):
                raise unsupported(op, nm, f"C of shape {C.shape}")
            bias = np.broadcast_to(C.reshape(-1), (W.shape[0],)).astype(np.float32).copy()
    else:
        W = B.T
    if W.shape[1] != xs[0]:
        raise unsupported(op, nm, f"weight expects {W.shape[1]} features, input has {xs[0]}")
    L.nodes.append(ENode("fc", nm, op, [ins[0]], out, dict(w=np.ascontiguousarray(W, np.float32), b=bias)))
    L.shapes[out] = (W.shape[0],)


def _lower_batchnorm(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm = node.op, node.name
    if len(node.outputs) > 1 and any(node.outputs[1:]):
        raise unsupported(op, nm, "training-mode outputs")
    sc, bi, mean, var = (L.const(node.inputs[i], node, "BN parameter").astype(np.float64) for i in range(1, 5))
    s = sc / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    L.nodes.append(ENode("affine", nm, op, [ins[0]], node.outputs[0], dict(scale=s, shift=bi - mean * s)))
    L.shapes[node.outputs[0]] = xs


def _lower_activation(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm, out = node.op, node.name, node.outputs[0]
    if any(i and i not in L.consts for i in ins[1:]):
        raise unsupported(op, nm, "min/max must be constants")
    code, a0, a1 = _act_params(op, node.attrs, [L.consts[i] if i else None for i in ins[1:]])
    L.nodes.append(ENode("affine", nm, op, [ins[0]], out, dict(scale=None, shift=None), act=code, a0=a0, a1=a1))
    L.shapes[out] = xs


def _lower_concat(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm, a = node.op, node.name, node.attrs
    if int(a["axis"]) % (len(xs) + 1) != 1:
        raise unsupported(op, nm, f"axis {a['axis']} (only the channel axis)")
    if any(i not in L.shapes for i in ins):
        raise unsupported(op, nm, "constant inputs")
    ss = [L.shapes[i] for i in ins]
    if any(s[1:] != xs[1:] or len(s) != len(xs) for s in ss):
        raise unsupported(op, nm, "mismatched spatial shapes")
    L.nodes.append(ENode("concat", nm, op, list(ins), node.outputs[0]))
    L.shapes[node.outputs[0]] = (sum(s[0] for s in ss),) + xs[1:]


def _lower_pool(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm, a = node.op, node.name, node.attrs
    if len(xs) != 3 or len(a.get("kernel_shape", [])) != 2:
        raise unsupported(op, nm, "only 2-D pooling")
    if len(node.outputs) > 1 and node.outputs[1]:
        raise unsupported(op, nm, "Indices output")
    k = tuple(int(v) for v in a["kernel_shape"])
    s = tuple(int(v) for v in a.get("strides", [1, 1]))
    d = tuple(int(v) for v in a.get("dilations", [1, 1]))
    pt, pl, pb, pr = _pads_2d(a, xs[1:], k, s, d)
    cm = bool(a.get("ceil_mode", 0))
    Ho = pool_out_dim(xs[1], k[0], s[0], d[0], pt, pb, cm)
    Wo = pool_out_dim(xs[2], k[1], s[1], d[1], pl, pr, cm)
    L.nodes.append(ENode("maxpool" if op == "MaxPool" else "avgpool", nm, op, [ins[0]], node.outputs[0],
                         dict(k=k, s=s, d=d, pads=(pt, pl, pb, pr), cip=int(a.get("count_include_pad", 0)))))
    L.shapes[node.outputs[0]] = (xs[0], Ho, Wo)


def _lower_global_pool(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm, a = node.op, node.name, node.attrs
    if len(xs) != 3:
        raise unsupported(op, nm, "needs an N x C x H x W input")
    keep = True
    if op == "ReduceMean":
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = [int(v) for v in L.consts[ins[1]].reshape(-1)]
        if axes is None or sorted(int(v) % 4 for v in axes) != [2, 3]:
            raise unsupported(op, nm, f"axes {axes} (only H, W)")
        keep = bool(a.get("keepdims", 1))
    L.nodes.append(ENode("gap", nm, op, [ins[0]], node.outputs[0]))
    L.shapes[node.outputs[0]] = (xs[0], 1, 1) if keep else (xs[0],)


def _lower_flatten_op(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    if int(node.attrs.get("axis", 1)) % (len(xs) + 1) != 1:
        raise unsupported(node.op, node.name, f"axis {node.attrs.get('axis')}")
    _flatten(L.nodes, L.shapes, L.alias, ins[0], node.outputs[0], node.name, node.op)


def _lower_reshape(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    op, nm, x, out = node.op, node.name, ins[0], node.outputs[0]
    tgt = [int(v) for v in L.const(node.inputs[1], node, "shape").reshape(-1)]
    F = int(np.prod(xs))
    if len(tgt) == 2 and tgt[0] in (-1, 0, 1) and (tgt[1] == F or (tgt[1] == -1 and tgt[0] != -1)):
        _flatten(L.nodes, L.shapes, L.alias, x, out, nm, op)
    elif len(tgt) == len(xs) + 1 and all(t in (0, s) for t, s in zip(tgt[1:], xs, strict=False)):
        L.alias[out] = x
    else:
        raise unsupported(op, nm, f"reshape of {xs} to {tgt} (only to [N, features])")


def _lower_squeeze(L: _Lowering, node: Any, ins: list[str], xs: tuple) -> None:
    axes = node.attrs.get("axes")
    if axes is None and len(ins) > 1 and ins[1]:
        axes = [int(v) for v in L.consts[ins[1]].reshape(-1)]
    r = len(xs) + 1
    if len(xs) == 3 and xs[1:] == (1, 1) and (axes is None or sorted(int(v) % r for v in axes) == [2, 3]):
        _flatten(L.nodes, L.shapes, L.alias, ins[0], node.outputs[0], node.name, node.op)
    else:
        raise unsupported(node.op, node.name, f"squeeze of {xs} (only [N, C, 1, 1] -> [N, C])")


#: ONNX op -> its lowering (binary ops go through ``_lower_binary``: either input may be the tensor)
LOWERINGS: dict[str, Any] = {
    "Identity": _lower_identity, "Dropout": _lower_identity,
    "Conv": _lower_conv,
    "Gemm": _lower_fc, "MatMul": _lower_fc,
    "BatchNormalization": _lower_batchnorm,
    **{op: _lower_activation for op in ACTIVATIONS},
    "Concat": _lower_concat,
    "MaxPool": _lower_pool, "AveragePool": _lower_pool,
    "GlobalAveragePool": _lower_global_pool, "ReduceMean": _lower_global_pool,
    "Flatten": _lower_flatten_op,
    "Reshape": _lower_reshape,
    "Squeeze": _lower_squeeze,
}


def _flatten(nodes, shapes, alias, x, out, nm, op):
    xs = shapes[x]
    if len(xs) == 1:
        alias[out] = x
        return
    nodes.append(ENode("flatten", nm, op, [x], out))
    shapes[out] = (int(np.prod(xs)),)


def _lower_binary(node, ins, shapes, consts, nodes):
    op, nm = node.op, node.name
    out = node.outputs[0]
    a_t, b_t = ins[0] in shapes, ins[1] in shapes
    if a_t and b_t:
        sa, sb = shapes[ins[0]], shapes[ins[1]]
        try:
            so = tuple(np.broadcast_shapes(sa, sb))
        except ValueError:
            raise unsupported(op, nm, f"shapes {sa} and {sb} do not broadcast") from None
        if len(so) > 3:
            raise unsupported(op, nm, "rank > 4")
        nodes.append(ENode("binary", nm, op, [ins[0], ins[1]], out, dict(op=op, ca=None, cb=None)))
        shapes[out] = so
        return
    t = ins[0] if a_t else ins[1]
    ts = shapes[t]
    c = np.asarray(consts[ins[1] if a_t else ins[0]], np.float32)
    if c.ndim > len(ts) + 1:
        raise unsupported(op, nm, f"constant of shape {c.shape} broadcasts over the batch")
    if c.ndim == len(ts) + 1:
        if c.shape[0] != 1:
            raise unsupported(op, nm, f"constant of shape {c.shape} has a batch dimension")
        c = c[0]
    c = c.reshape((1,) * (len(ts) - c.ndim) + c.shape)
    if tuple(np.broadcast_shapes(ts, c.shape)) != ts:
        raise unsupported(op, nm, f"constant {c.shape} enlarges the tensor {ts}")
    per_channel = all(v == 1 for v in c.shape[1:]) and c.shape[0] in (1, ts[0])
    if per_channel and not (op == "Div" and not a_t):
        v = np.broadcast_to(c.reshape(-1).astype(np.float64), (ts[0],)).copy()
        one, zero = np.ones(ts[0]), np.zeros(ts[0])
        scale, shift = {
            "Mul": (v, zero), "Add": (one, v), "Sub": (one, -v) if a_t else (-one, v), "Div": (1.0 / v, zero),
        }[op]
        nodes.append(ENode("affine", nm, op, [t], out, dict(scale=scale, shift=shift)))
    else:
        p = dict(op=op, ca=None if a_t else c, cb=c if a_t else None)
        nodes.append(ENode("binary", nm, op, [t] if a_t else [t], out, p))
        nodes[-1].p["const_first"] = not a_t
    shapes[out] = ts


# ------------------------------------------------------------------------------------------- fusion
def fuse(nodes: list[ENode], output: str, shapes: dict) -> list[ENode]:
    changed = True
    while changed:
        changed = False
        producer = {n.output: n for n in nodes}
        uses: dict[str, int] = {}
        for n in nodes:
            for i in n.inputs + ([n.res] if n.res else []):
                uses[i] = uses.get(i, 0) + 1
        uses[output] = uses.get(output, 0) + 1
        for idx, n in enumerate(nodes):
            src = producer.get(n.inputs[0]) if n.inputs else None
            single = src is not None and uses.get(src.output, 0) == 1 and src.output != output
            if n.kind == "affine" and single:
                if n.p["scale"] is None:  # pure activation
                    if src.kind in ("conv", "fc", "binary", "affine") and src.act == 0:
                        src.act, src.a0, src.a1 = n.act, n.a0, n.a1
                        src.output = n.output
                        src.fused.append(f"{n.onnx_op}:{n.name}")
                        nodes.pop(idx)
                        changed = True
                        break
                elif src.kind in ("conv", "fc") and src.act == 0 and src.res is None and n.act == 0:
                    s, t = n.p["scale"], n.p["shift"]
                    w = src.p["w"].astype(np.float64)
                    src.p["w"] = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
                    b = src.p["b"].astype(np.float64) if src.p["b"] is not None else np.zeros(w.shape[0])
                    src.p["b"] = (b * s + t).astype(np.float32)
                    src.output = n.output
                    src.fused.append(f"{n.onnx_op}:{n.name}")
                    nodes.pop(idx)
                    changed = True
                    break
                elif src.kind == "affine" and src.act == 0 and src.p["scale"] is not None and n.act == 0:
                    s1, t1, s2, t2 = src.p["scale"], src.p["shift"], n.p["scale"], n.p["shift"]
                    src.p["scale"], src.p["shift"] = s1 * s2, t1 * s2 + t2
                    src.output = n.output
                    src.fused.append(f"{n.onnx_op}:{n.name}")
                    nodes.pop(idx)
                    changed = True
                    break
            if _fuse_silu(nodes, n, producer, uses, output):
                changed = True
                break
            if n.kind == "binary" and n.p["op"] == "Add" and len(n.inputs) == 2 and n.act == 0:
                a, b = n.inputs
                if a != b and shapes[a] == shapes[b] == shapes[n.output]:
                    for cand, other in ((b, a), (a, b)):
                        s = producer.get(cand)
                        if (s is not None and s.kind in ("conv", "fc") and uses.get(cand, 0) == 1 and cand != output
                                and s.act == 0 and s.res is None):
                            s.res = other
                            s.output = n.output
                            s.fused.append(f"Add:{n.name}")
                            nodes.remove(s)
                            nodes[nodes.index(n)] = s
                            changed = True
                            break
                    if changed:
                        break
    return nodes


def _fuse_silu(nodes: list[ENode], n: ENode, producer: dict, uses: dict, output: str) -> bool:
    """x * Sigmoid(x) (SiLU / Swish) with x a conv/fc output -> that conv/fc with the SiLU epilogue."""
    if n.kind != "binary" or n.p["op"] != "Mul" or len(n.inputs) != 2 or n.act != 0:
        return False
    silu = native_codes()[1].get("Silu")
    if silu is None:  # a native module built before the SiLU epilogue
        return False
    for x, s in (n.inputs, n.inputs[::-1]):
        sig, src = producer.get(s), producer.get(x)
        if (sig is None or src is None or sig.kind != "affine" or sig.p["scale"] is not None
                or sig.act != act_code("Sigmoid") or sig.inputs != [x] or uses.get(s, 0) != 1
                or uses.get(x, 0) != 2 or x == output or s == output):
            continue
        if src.kind not in ("conv", "fc") or src.act != 0:
            continue
        src.act, src.a0, src.a1 = silu, 0.0, 0.0
        src.output = n.output
        src.fused += [f"Sigmoid:{sig.name}", f"Mul:{n.name}"]
        nodes.remove(sig)
        nodes.remove(n)
        return True
    return False


# ------------------------------------------------------------------------------------------- layouts/memory
@dataclass
class TLayout:
    C: int
    H: int
    W: int
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0
    off: int = 0
    istride: int = 0

    @property
    def Hp(self) -> int:
        return self.H + self.pt + self.pb

    @property
    def Wp(self) -> int:
        return self.W + self.pl + self.pr

    @property
    def plane(self) -> int:
        return self.Hp * self.Wp

    def image_floats(self) -> int:
        n = self.C * self.plane + 2 * self.Wp + 320  # slack: vector over-reads of garbage columns
        return (n + 15) // 16 * 16


def native_shape(s: tuple) -> tuple[int, int, int]:
    return (s[0], 1, 1) if len(s) == 1 else (s[0], s[1], s[2]) if len(s) == 3 else (1, 1, 1)


def conv_mode(n: ENode) -> int:
    return 0 if (n.p["sh"], n.p["sw"]) == (1, 1) else 1


def s2_direct(n: ENode) -> bool:
    """Stride-2 conv whose sparse kernel reads the zero-padded input in place (even lanes of two vectors per
    output vector) instead of de-interleaved phase planes; its dense kernel still uses the phase planes.
    Not 1x1 convs: their one phase plane is gathered once per input channel, and then every non-zero is one
    aligned load per output vector instead of two line-splitting loads and a shuffle (resnet20-at-99 %'s
    stride-2 shortcuts at batch 1, Engine.time_op: 6.3 -> 3.9 us and 5.3 -> 3.6 us, now faster than their dense
    form; its 3x3 stride-2 convs stay direct: phase planes measured 5.8 -> 7.8 us and 2.6 -> 4.7 us)."""
    return (n.p["sh"], n.p["sw"]) == (2, 2) and (n.p["kh"], n.p["kw"]) != (1, 1)


def plan_layouts(nodes: list[ENode], shapes: dict, input_name: str) -> dict[str, TLayout]:
    lay = {t: TLayout(*native_shape(s)) for t, s in shapes.items()}
    for n in nodes:  # zero rings for the convs that read their input in place (stride 1, stride-2 direct)
        if n.kind == "conv" and (conv_mode(n) == 0 or s2_direct(n)):
            L = lay[n.inputs[0]]
            L.pt, L.pl, L.pb, L.pr = max(L.pt, n.p["pt"]), max(L.pl, n.p["pl"]), max(L.pb, n.p["pb"]), max(L.pr, n.p["pr"])
    for n in nodes:  # widen outputs / residuals so the conv can store its padded-width rows in place
        if n.kind != "conv":
            continue
        wrow = conv_wrow(n, lay)
        for t in [n.output] + ([n.res] if n.res else []):
            L = lay[t]
            if L.Wp < wrow:
                L.pr += wrow - L.Wp
    return lay


def conv_wrow(n: ENode, lay: dict) -> int:
    """Row length of a conv's flat output rows (and, stride > 1, of its phase planes). Stride 1: the input's
    padded width. Stride > 1: the phase-plane width, widened to the output tensor's padded width when that is
    wider, so the conv stores its rows in place (flat epilogue; pad columns masked) instead of through a
    scratch plane and a second pass (resnet20's stride-2 convs at batch 1: 32x32 -> 16x16 with the output
    padded to 18 wide had 17-wide phase rows). The extra phase columns are zero-filled by their builders."""
    L = lay[n.inputs[0]]
    if conv_mode(n) == 0:
        return L.Wp
    return max(-(-(L.W + n.p["pl"] + n.p["pr"]) // n.p["sw"]), lay[n.output].Wp)


def _il_strip_bytes(n: ENode, K: int) -> int:
    """Bytes per input channel of the strip an interleaved tile of 8 outputs reads (its rows and positions)."""
    p = n.p
    return ((p["kh"] - 1) * p["dh"] + 1) * (8 * p["sw"] + (p["kw"] - 1) * p["dw"]) * K * 4


def il_block_channels(n: ENode, K: int) -> int:
    """Input channels per block of an interleaved trunk conv (K lanes): its tile strip fits IL_STRIP_BYTES; a
    conv with more input channels per group than this also packs input-channel blocks (partial sums pass
    through its output between blocks), unless it stores over its residual (see _writes_over_residual)."""
    return max(1, IL_STRIP_BYTES // _il_strip_bytes(n, K))


def _writes_over_residual(n: ENode, lay: dict, il_lanes: int) -> bool:
    """Whether conv ``n`` may store its output over its residual operand (when that dies at ``n``): a
    stride-1 conv reads each residual value once, right before it stores the output value at the same
    position in the same layout. Not stride > 1 (a row's last vector may spill into the next row's first
    columns before that row reads its residual). Interleaved input-channel blocks pass partial sums through
    the output before the residual is added, so an interleaved conv that stores over its residual runs in one
    pass (build_conv_il packs no blocks for it): allowed while its one-pass strip fits 2 x IL_STRIP_BYTES
    (48 KB, an x86 L1d). resnet20 at 99 %, batch 64, AVX-512 (16 input channels, 30 KB strips): its 32x32
    residual convs ran ~460 us per op in blocks without, ~280 in one pass over their residuals."""
    if n.kind != "conv" or not n.res or conv_mode(n) != 0:
        return False
    a, b = lay[n.res], lay[n.output]
    if (a.C, a.H, a.W, a.pt, a.pb, a.pl, a.pr) != (b.C, b.H, b.W, b.pt, b.pb, b.pl, b.pr):
        return False
    return not il_lanes or n.p["w"].shape[1] * _il_strip_bytes(n, il_lanes) <= 2 * IL_STRIP_BYTES


def plan_memory(nodes: list[ENode], lay: dict, input_name: str, output: str, bc: int,
                group: frozenset | set = frozenset(), il_lanes: int = 0) -> int:
    """Assign arena offsets (floats) by liveness; returns the arena size. Tensors in ``group`` hold the whole
    chunk in one block (the interleaved batch layout with ``il_lanes`` lanes: istride 0). A residual conv's
    output takes its residual's place when the residual dies there (see _writes_over_residual): one tensor
    fewer in cache (resnet20's 32x32 residual convs at batch 64 streamed three 1.2 MB chunk tensors)."""
    first = {input_name: -1}
    last = {input_name: -1}
    over: dict[str, str] = {}  # output -> the residual it overwrites
    for i, n in enumerate(nodes):
        first.setdefault(n.output, i)
        last[n.output] = max(last.get(n.output, i), i)
        for t in n.inputs + ([n.res] if n.res else []):
            last[t] = i
    last[output] = len(nodes)
    for i, n in enumerate(nodes):
        if (n.res and last.get(n.res) == i and n.res not in n.inputs and n.res not in (output, input_name)
                and first[n.output] == i and (n.res in group) == (n.output in group)
                and _writes_over_residual(n, lay, il_lanes if n.output in group else 0)):
            over[n.output] = n.res
    placed: list[tuple[int, int, int, int]] = []  # (off, size, first, last)
    top = 0
    for t in sorted(first, key=lambda k: first[k]):
        L = lay[t]
        L.istride = 0 if t in group else L.image_floats()
        size = L.image_floats() if t in group else L.istride * bc
        f, l_ = first[t], last.get(t, first[t])
        if t in over:  # the residual's block, same size: nothing else lives there from step f on
            L.off = lay[over[t]].off
            placed.append((L.off, size, f, l_))
            continue
        busy = sorted((o, s) for o, s, f2, l2 in placed if not (l2 < f or l_ < f2))
        off = 0
        for o, s in busy:
            if off + size <= o:
                break
            off = max(off, o + s)
        L.off = off
        placed.append((off, size, f, l_))
        top = max(top, off + size)
    return top


# ------------------------------------------------------------------------------------------- native build
def _tap_grid(n: ENode, lay: dict) -> tuple[Any, int, np.ndarray, np.ndarray, np.ndarray]:
    """Input layout and the broadcastable (channel [Cg,1,1], row [1,KH,1], column [1,1,KW]) tap grids of a conv."""
    p = n.p
    Cg = p["w"].shape[1]
    c = np.arange(Cg).reshape(-1, 1, 1)
    r = (np.arange(p["kh"]) * p["dh"]).reshape(1, -1, 1)
    t = (np.arange(p["kw"]) * p["dw"]).reshape(1, 1, -1)
    return lay[n.inputs[0]], Cg, c, r, t


def _offsets(n: ENode, lay: dict) -> tuple[np.ndarray, int, int, int, int]:
    """Per-tap input offsets (group 0) for the conv's work view: (offs[Cg,KH,KW], Wrow, Hq, gofs, pstride)."""
    L, Cg, c, r, t = _tap_grid(n, lay)
    p = n.p
    if conv_mode(n) == 0:
        wrow = L.Wp
        offs = c * L.plane + r * wrow + t
        return offs.astype(np.int64), wrow, L.Hp, Cg * L.plane, 0
    sh, sw = p["sh"], p["sw"]
    hq = -(-(L.H + p["pt"] + p["pb"]) // sh)
    wq = conv_wrow(n, lay)
    qplane = hq * wq
    pstride = L.C * qplane + 64
    phase = (r % sh) * sw + (t % sw)
    offs = phase * pstride + c * qplane + (r // sh) * wq + (t // sw)
    return offs.astype(np.int64), wq, hq, Cg * qplane, pstride


def phase_mask(n: ENode) -> int:
    p = n.p
    m = 0
    for i in range(p["kh"]):
        for j in range(p["kw"]):
            m |= 1 << (((i * p["dh"]) % p["sh"]) * p["sw"] + (j * p["dw"]) % p["sw"])
    return m


def small_map_conv(n: ENode, lay: dict, vw: int) -> bool:
    """Stride-1 conv whose flat output row span L fits 4 vectors: at batch > 1 its sparse kernel puts several
    images into one register tile (each non-zero's offset/weight loaded once for all of them)."""
    if n.kind != "conv" or conv_mode(n) != 0:
        return False
    L = (n.p["Ho"] - 1) * conv_wrow(n, lay) + n.p["Wo"]
    return L <= 4 * vw


#: dense convs whose flat output spans at most this many vectors are timed with image-batched tiles too
BATCHED_MAX_VECS = 8


def batched_candidate(ip: list[int], vw: int) -> bool:
    """Stride-1 conv (``ip``: ConvParams.ip()) with a small map: its dense kernel can tile across the images of a
    chunk (native conv_dense_multi); larger maps measured slower that way (the chunk's inputs leave L1/L2)."""
    c = ConvParams(*ip)
    return c.mode == 0 and (c.Ho - 1) * c.wrow + c.Wo <= BATCHED_MAX_VECS * vw


@dataclass
class ConvParams:
    """Integer parameters of a native conv op: one field per ``C_*`` index of native/engine.cpp, same order."""
    inp: int
    out: int
    res: int
    O: int  # noqa: E741
    Cg: int
    groups: int
    KH: int
    KW: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    pb: int
    pr: int
    Ho: int
    Wo: int
    act: int
    mode: int  # 0: stride-1 view of the input, 1: phase planes (stride > 1)
    wrow: int
    hq: int
    gofs: int
    ntaps: int
    nblk: int
    has_bias: int
    phases: int  # bitmask of the phase planes any tap reads
    s2_direct: int  # 1: the sparse offsets address the padded input itself (see s2_direct)

    def ip(self) -> list[int]:
        return [int(getattr(self, f.name)) for f in fields(self)]


@dataclass
class FcParams:
    """Integer parameters of a native fc op (``F_*`` of native/engine.cpp, same order)."""
    inp: int
    out: int
    res: int
    F: int
    O: int  # noqa: E741
    act: int
    has_bias: int

    def ip(self) -> list[int]:
        return [int(getattr(self, f.name)) for f in fields(self)]


def _sparse_offsets(n: ENode, lay: dict, flat_off: np.ndarray, gofs: int) -> tuple[np.ndarray, int]:
    """Per-tap offsets (and group stride) the sparse kernel uses: the dense ones, except for stride-2 direct
    convs, which address the zero-padded input plane itself (row stride Wp)."""
    if not s2_direct(n):
        return flat_off, gofs
    L, Cg, c, r, t = _tap_grid(n, lay)
    return (c * L.plane + r * L.Wp + t).reshape(-1).astype(np.int64), Cg * L.plane


def _csr(wf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row-major non-zeros of a 2-D weight: (rowptr uint32 [rows + 1], row index, column index, values float32)."""
    nzr, nzc = np.nonzero(wf)
    rowptr = np.concatenate([[0], np.cumsum(np.bincount(nzr, minlength=wf.shape[0]))]).astype(np.uint32)
    return rowptr, nzr, nzc, wf[nzr, nzc].astype(np.float32)


def _dense_blocks(wf: np.ndarray, G: int, ob: int) -> np.ndarray:
    """Dense conv weights (O, ntaps) in blocks of ``ob`` output channels per group: [G][nblk][ntaps][ob]."""
    O, ntaps = wf.shape  # noqa: E741
    Og = O // G
    nblk = -(-Og // ob)
    dw = np.zeros((G, nblk * ob, ntaps), np.float32)
    dw[:, :Og] = wf.reshape(G, Og, ntaps)
    return dw.reshape(G, nblk, ob, ntaps).transpose(0, 1, 3, 2).copy()


#: largest padded input (rows x columns the taps reach) of a depthwise conv given the channels-in-lanes form:
#: its transposed unit (x 16 lanes at AVX-512, 128 KB) stays in L2; on larger maps conv_dense's depthwise
#: path fills its vectors anyway. Which form runs is timed at load (Session), like the other dense forms.
DW_CL_MAX_POSITIONS = 2048


def dw_cl_scratch(n: ENode, vw: int, out_plane: int) -> int:
    """Scratch floats of the channels-in-lanes depthwise form (native conv_dw_cl) at ``vw`` lanes, its output
    tensor's padded plane ``out_plane`` floats, or 0 when conv ``n`` cannot take it: not depthwise, a fused
    residual, stride other than 1 (in place) or 2 (direct), more taps than the kernel holds, or a padded
    input over DW_CL_MAX_POSITIONS."""
    p = n.p
    O, Cg, KH, KW = p["w"].shape  # noqa: E741
    if Cg != 1 or O != p["groups"] or n.res or KH * KW > 64 or not (conv_mode(n) == 0 or s2_direct(n)):
        return 0
    rows = (p["Ho"] - 1) * p["sh"] + (KH - 1) * p["dh"] + 1
    cols = (p["Wo"] - 1) * p["sw"] + (KW - 1) * p["dw"] + 1
    if rows * cols > DW_CL_MAX_POSITIONS:
        return 0
    # the padded input and output planes in lanes, + vw positions read past the output's by its transpose
    return (rows * cols + out_plane + vw) * vw + 64


def build_conv(n: ENode, lay: dict, ti: dict, ob: int = DENSE_OB, oc: int = 0) -> tuple[list, list, list, list, dict]:
    """The native conv op. ``ob``: the engine's dense block; ``oc`` (> 0): also pack the "oc" dense form
    (blocks of ``oc`` output channels in the vector lanes, native conv_dense_oc) when a group has >= oc / 2
    output channels (fewer would leave most lanes empty)."""
    p = n.p
    w = p["w"]
    O, Cg, KH, KW = w.shape  # noqa: E741
    G = p["groups"]
    Og = O // G
    offs, wrow, hq, gofs, pstride = _offsets(n, lay)
    flat_off = offs.reshape(-1)
    sp_off, sp_gofs = _sparse_offsets(n, lay, flat_off, gofs)
    wf = w.reshape(O, -1)
    rowptr, nzr, nzc, val = _csr(wf)
    goff = (np.arange(O) // Og) * sp_gofs
    off = (sp_off[nzc] + goff[nzr]).astype(np.uint32)
    nblk = -(-Og // ob)
    ntaps = Cg * KH * KW
    dw = _dense_blocks(wf, G, ob)
    dw_oc = _dense_blocks(wf, G, oc).reshape(-1) if oc and 2 * Og >= oc else np.zeros(1, np.float32)
    cl_floats = dw_cl_scratch(n, oc // 2, lay[n.output].plane) if oc else 0
    if cl_floats:  # depthwise on a small map: the channels-in-lanes form (native conv_dw_cl) instead
        vw = oc // 2
        dw_oc = np.zeros((-(-G // vw) * vw, KH * KW), np.float32)
        dw_oc[:G] = wf
        dw_oc = dw_oc.reshape(-1, vw, KH * KW).transpose(0, 2, 1).reshape(-1).copy()  # [unit][tap][vw]
    Lo = lay[n.output]
    max_reach = int(max(flat_off.max() + (G - 1) * gofs + (p["Ho"] - 1) * wrow + p["Wo"],
                        sp_off.max() + (G - 1) * sp_gofs + 2 * (p["Ho"] * lay[n.inputs[0]].Wp + p["Wo"])))
    if max_reach >= 2**32 - 1024:
        raise unsupported("Conv", n.name, "too large for 32-bit offsets")
    ip = ConvParams(
        inp=ti[n.inputs[0]], out=ti[n.output], res=ti[n.res] if n.res else -1, O=O, Cg=Cg, groups=G, KH=KH, KW=KW,
        sh=p["sh"], sw=p["sw"], dh=p["dh"], dw=p["dw"], pt=p["pt"], pl=p["pl"], pb=p["pb"], pr=p["pr"], Ho=p["Ho"],
        Wo=p["Wo"], act=n.act, mode=conv_mode(n), wrow=wrow, hq=hq, gofs=gofs, ntaps=ntaps, nblk=nblk,
        has_bias=1 if p["b"] is not None else 0, phases=phase_mask(n), s2_direct=int(s2_direct(n))).ip()
    fa = [val if val.size else np.zeros(1, np.float32), dw.reshape(-1), p["b"] if p["b"] is not None else np.zeros(1, np.float32),
          dw_oc]
    ua = [rowptr, off if off.size else np.zeros(1, np.uint32), flat_off.astype(np.uint32)]
    info = dict(nnz=int(val.size), numel=int(w.size), macs_dense=int(O * p["Ho"] * p["Wo"] * Cg * KH * KW),
                macs_sparse=int(val.size * p["Ho"] * p["Wo"]), wrow=wrow, Lo=Lo,
                # the oc form: channel rows + the tiles' partial sums, oc planes each
                scratch_private=max(DENSE_OB, 2 * oc if dw_oc.size > 1 else 0) * (p["Ho"] * wrow + 512),
                scratch_shared=(p["sh"] * p["sw"] * pstride + 4 * wrow + 1024) if conv_mode(n) else 0)
    info["scratch_private"] = max(info["scratch_private"], cl_floats)
    if conv_mode(n) and s2_direct(n) and Cg == 1 and Og == 1:  # dense depthwise stride 2 (native conv_dw_s2):
        # the epilogue's plane, then 4 phase planes of hq x wrow (+ 32 floats of slack each) per channel
        info["scratch_private"] = max(info["scratch_private"], p["Ho"] * wrow + 512 + 4 * (hq * wrow + 32) + 64)
    return ip, [n.a0, n.a1], fa, ua, info


# ------------------------------------------------------------------------------ interleaved batch layout
# A chunk of K images (K = the ISA's vector width) stored as one block, image k in lane k of every vector
# (native KernelTable::conv_il): all tap offsets are whole vectors (aligned, no line splits, no row tails)
# and strides are index arithmetic (no phase planes). The trunk of convs from the input runs this way, up to
# the global average pools that end it; what follows (FC layers) runs in the planar layout with the same
# chunk. Used by Session for batches of >= K images when it measures faster than the planar plan.
def interleaved_tensors(nodes: list[ENode], input_name: str, output: str, shapes: dict) -> set[str] | None:
    """The trunk's tensors (the input and every conv / pool / affine / binary output fed from it), or None when
    the graph has no such trunk: a trunk tensor read by anything but a conv (as its input or residual), a
    pool, an affine, a binary op (whose other operand is a trunk tensor of the same shape, a constant, or one
    value per channel and image: a squeeze-excitation gate), a global average pool or a flatten (those two
    end the trunk); a conv mixing trunk and planar tensors; a trunk tensor as the graph's output."""
    il = {input_name}
    for n in nodes:
        reads = n.inputs + ([n.res] if n.res else [])
        if n.kind == "conv" and n.inputs[0] in il:
            if n.res and n.res not in il:
                return None
            il.add(n.output)
        elif n.kind in ("maxpool", "avgpool", "affine") and n.inputs[0] in il:
            il.add(n.output)
        elif n.kind == "binary" and any(t in il for t in n.inputs):
            # trunk operands of the output's shape; others one value per channel (or scalar) per image
            out3 = native_shape(shapes[n.output])
            for t in n.inputs:
                s3 = native_shape((1,) * (len(shapes[n.output]) - len(shapes[t])) + tuple(shapes[t]))
                if (t in il and s3 != out3) or (t not in il and s3[1:] != (1, 1)):
                    return None
            il.add(n.output)
        elif n.kind in ("gap", "flatten") and n.inputs[0] in il:
            continue
        elif any(t in il for t in reads):
            return None
    return None if output in il or len(il) == 1 else il


def interleaved_layouts(nodes: list[ENode], shapes: dict, input_name: str, il: set[str], K: int) -> dict[str, TLayout]:
    """Layouts of the interleaved plan: trunk tensors padded for every conv reading them (any stride: the
    kernel reads the padded input in place) with widths in floats (positions x K); the rest as planned for
    the planar layout."""
    lay = plan_layouts(nodes, shapes, input_name)
    pos = {t: TLayout(*native_shape(shapes[t])) for t in il}
    for n in nodes:
        if n.kind == "conv" and n.inputs[0] in il:
            L = pos[n.inputs[0]]
            L.pt, L.pl, L.pb, L.pr = max(L.pt, n.p["pt"]), max(L.pl, n.p["pl"]), max(L.pb, n.p["pb"]), max(L.pr, n.p["pr"])
    for t, L in pos.items():
        lay[t] = TLayout(L.C, L.H, L.W * K, L.pt, L.pb, L.pl * K, L.pr * K)
    return lay


def build_conv_il(n: ENode, lay: dict, ti: dict, K: int, ob: int = DENSE_OB) -> tuple[list, list, list, list, dict]:
    """A trunk conv of the interleaved plan: CSR of the non-zeros (native conv_il, variant 0) and the dense
    blocks of ``ob`` output channels (conv_il_dense, variant 1); tap offsets from the padded input origin in
    floats (channel planes, rows, K floats per column)."""
    p = n.p
    w = p["w"]
    O, Cg, KH, KW = w.shape  # noqa: E741
    G = p["groups"]
    Og = O // G
    Li = lay[n.inputs[0]]
    c = np.arange(Cg).reshape(-1, 1, 1)
    r = (np.arange(KH) * p["dh"]).reshape(1, -1, 1)
    t = (np.arange(KW) * p["dw"]).reshape(1, 1, -1)
    taps = (c * Li.plane + r * Li.Wp + t * K).reshape(-1).astype(np.int64)
    gofs = Cg * Li.plane
    wf = w.reshape(O, -1)
    rowptr, nzr, nzc, val = _csr(wf)
    off = taps[nzc] + (nzr // Og) * gofs
    reach = int(taps.max() + (G - 1) * gofs + (p["Ho"] - 1) * p["sh"] * Li.Wp + p["Wo"] * p["sw"] * K)
    if reach >= 2**32 - 1024:
        raise unsupported("Conv", n.name, "too large for 32-bit offsets")
    cb = il_block_channels(n, K)
    cbptr = np.zeros(1, np.uint32)
    over_residual = bool(n.res) and lay[n.output].off == lay[n.res].off  # one pass (see _writes_over_residual)
    if Cg > cb and not over_residual:
        ncb = -(-Cg // cb)
        ch = nzc // (KH * KW)  # input channel of each non-zero (in order within its output channel)
        cbptr = np.stack([rowptr[:-1].astype(np.int64) + np.bincount(nzr[ch < b * cb], minlength=O)
                          for b in range(ncb)] + [rowptr[1:].astype(np.int64)], axis=1).astype(np.uint32).reshape(-1)
    ip = ConvParams(
        inp=ti[n.inputs[0]], out=ti[n.output], res=ti[n.res] if n.res else -1, O=O, Cg=Cg, groups=G, KH=KH, KW=KW,
        sh=p["sh"], sw=p["sw"], dh=p["dh"], dw=p["dw"], pt=p["pt"], pl=p["pl"] * K, pb=p["pb"], pr=p["pr"] * K,
        Ho=p["Ho"], Wo=p["Wo"], act=n.act, mode=0, wrow=Li.Wp, hq=0, gofs=gofs, ntaps=Cg * KH * KW,
        nblk=-(-Og // ob), has_bias=1 if p["b"] is not None else 0, phases=1, s2_direct=0).ip()
    zero = np.zeros(1, np.float32)
    fa = [val if val.size else zero, _dense_blocks(wf, G, ob).reshape(-1), p["b"] if p["b"] is not None else zero,
          zero]
    ua = [rowptr, off.astype(np.uint32) if off.size else np.zeros(1, np.uint32), taps.astype(np.uint32), cbptr]
    info = dict(nnz=int(val.size), numel=int(w.size), macs_dense=int(O * p["Ho"] * p["Wo"] * Cg * KH * KW),
                macs_sparse=int(val.size * p["Ho"] * p["Wo"]), scratch_private=0, scratch_shared=0)
    return ip, [n.a0, n.a1], fa, ua, info


def build_fc(n: ENode, lay: dict, ti: dict) -> tuple[list, list, list, list, dict]:
    w = n.p["w"]
    O, F = w.shape  # noqa: E741
    rowptr, _, nzc, val = _csr(w)
    col = nzc.astype(np.uint32)
    b = n.p["b"]
    ip = FcParams(inp=ti[n.inputs[0]], out=ti[n.output], res=ti[n.res] if n.res else -1, F=F, O=O, act=n.act,
                  has_bias=1 if b is not None else 0).ip()
    fa = [val if val.size else np.zeros(1, np.float32), w.reshape(-1), b if b is not None else np.zeros(1, np.float32)]
    ua = [rowptr, col if col.size else np.zeros(1, np.uint32)]
    info = dict(nnz=int(val.size), numel=int(w.size), macs_dense=int(O * F), macs_sparse=int(val.size),
                scratch_shared=F * (CHUNK_IMAGES + 16) + 64, scratch_private=0)
    return ip, [n.a0, n.a1], fa, ua, info


def _strides(shape3: tuple, L: TLayout) -> tuple[int, int, int, int]:
    c, h, w = shape3
    return (0 if c == 1 else L.plane, 0 if h == 1 else L.Wp, 0 if w == 1 else 1, L.pt * L.Wp + L.pl)


def build_binary(n: ENode, lay: dict, ti: dict, shapes: dict) -> tuple[list, list, list, list]:
    r = len(shapes[n.output])
    if r not in (1, 3):
        raise unsupported(n.onnx_op, n.name, f"per-sample rank {r}")

    def pad(shape: tuple) -> tuple:
        return (1,) * (r - len(shape)) + tuple(shape)

    def tensor_operand(t: str) -> tuple[int, tuple, np.ndarray]:
        s3 = native_shape(pad(shapes[t]))
        return ti[t], _strides(s3, lay[t]), np.zeros(1, np.float32)

    def const_operand(c: np.ndarray) -> tuple[int, tuple, np.ndarray]:
        cc = np.asarray(c, np.float32)
        c3 = native_shape(pad(cc.shape))
        C, H, W = c3
        arr = np.ascontiguousarray(cc.reshape(c3)).reshape(-1)
        return -1, (0 if C == 1 else H * W, 0 if H == 1 else W, 0 if W == 1 else 1, 0), arr

    p = n.p
    if p.get("ca") is None and p.get("cb") is None:
        (ta, sa, ca), (tb, sb, cb) = tensor_operand(n.inputs[0]), tensor_operand(n.inputs[1])
    elif p.get("const_first"):
        (ta, sa, ca), (tb, sb, cb) = const_operand(p["ca"]), tensor_operand(n.inputs[0])
    else:
        (ta, sa, ca), (tb, sb, cb) = tensor_operand(n.inputs[0]), const_operand(p["cb"])
    ip = [ti[n.output], ta, tb, BIN_CODES[p["op"]], n.act, *sa, *sb]
    return ip, [n.a0, n.a1], [ca, cb], []


# ------------------------------------------------------------------------------------------- op table
@dataclass
class NativeOp:
    """Arguments of ``Engine.add_op`` for one engine node (``code``: native op code) + planning info."""
    code: int
    ip: list[int]
    fp: list[float]
    fa: list[np.ndarray]
    ua: list[np.ndarray]
    info: dict


def _op_conv(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int, oc: int = 0) -> tuple:
    return build_conv(n, lay, ti, ob, oc)


def _op_fc(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int) -> tuple:
    return build_fc(n, lay, ti)


def _op_pool(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int) -> tuple:
    pt, pl, pb, pr = n.p["pads"]  # pool ip: in, out, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, count_include_pad
    ip = [ti[n.inputs[0]], ti[n.output], *n.p["k"], *n.p["s"], *n.p["d"], pt, pl, pb, pr, n.p["cip"]]
    return ip, [0.0, 0.0], [], [], {}


def _op_unary(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int) -> tuple:  # gap, flatten: in, out
    return [ti[n.inputs[0]], ti[n.output]], [0.0, 0.0], [], [], {}


def _op_binary(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int) -> tuple:
    return (*build_binary(n, lay, ti, shapes), {})


def _op_affine(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int) -> tuple:  # in, out, act; scale, shift
    C = lay[n.output].C
    s = n.p["scale"] if n.p["scale"] is not None else np.ones(C)
    t = n.p["shift"] if n.p["shift"] is not None else np.zeros(C)
    return ([ti[n.inputs[0]], ti[n.output], n.act], [n.a0, n.a1],
            [np.asarray(s, np.float32), np.asarray(t, np.float32)], [], {})


def _op_concat(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int) -> tuple:  # out, n, inputs...
    return [ti[n.output], len(n.inputs)] + [ti[i] for i in n.inputs], [0.0, 0.0], [], [], {}


#: one builder per engine node kind (the native op code of the same name comes from native_codes)
BUILDERS = {"conv": _op_conv, "fc": _op_fc, "maxpool": _op_pool, "avgpool": _op_pool, "gap": _op_unary,
            "binary": _op_binary, "affine": _op_affine, "concat": _op_concat, "flatten": _op_unary}


def build_op(n: ENode, lay: dict, ti: dict, shapes: dict, ob: int = DENSE_OB, oc: int = 0) -> NativeOp:
    """``ob``: the engine's dense conv block (Engine.dense_ob); ``oc``: its oc-form width (Engine.oc_channels,
    0 = no oc form)."""
    builder = BUILDERS.get(n.kind)
    if builder is None:  # pragma: no cover - lower() only emits the kinds above
        raise EngineUnsupported(f"internal: unknown engine node kind {n.kind}")
    ip, fp, fa, ua, info = builder(n, lay, ti, shapes, ob, **({"oc": oc} if n.kind == "conv" else {}))
    return NativeOp(native_codes()[0][n.kind], [int(v) for v in ip], [float(v) for v in fp], fa, ua, info)


def cache_dir() -> Path:
    """Where kernel choices are kept: ``$SPARSEKIT_ENGINE_CACHE_DIR`` if set (a benchmark times its own
    choices there), else ``$XDG_CACHE_HOME/sparsekit/engine``."""
    own = os.environ.get("SPARSEKIT_ENGINE_CACHE_DIR")
    if own:
        return Path(own)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsekit" / "engine"


class ChoiceCache:
    """JSON file of per-layer kernel decisions keyed by a hash of (weights, geometry, ISA, threads, batch class)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.path = cache_dir() / "choices.json"
        self.data: dict[str, Any] = {}
        self.dirty = False
        if enabled:
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.data = {}

    def get(self, key: str) -> dict | None:
        return self.data.get(key) if self.enabled else None

    def put(self, key: str, value: dict) -> None:
        if self.enabled:
            self.data[key] = value
            self.dirty = True

    def save(self) -> None:
        if not (self.enabled and self.dirty):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                merged = json.loads(self.path.read_text())
            except (OSError, ValueError):
                merged = {}
            merged.update(self.data)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".choices.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache directory only costs re-timing


def layer_key(n: ENode, ip: list, isa: str, threads: int, bc: int) -> str:
    h = hashlib.sha256()
    h.update(n.p["w"].tobytes())
    if n.p.get("b") is not None:
        h.update(np.asarray(n.p["b"]).tobytes())
    h.update(json.dumps([KERNEL_VERSION, n.kind, list(n.p["w"].shape), [int(v) for v in ip[3:]], isa, threads, bc]).encode())
    return h.hexdigest()[:32]


__all__ = ["lower", "fuse", "plan_layouts", "plan_memory", "build_conv", "build_fc", "build_binary", "build_op",
           "BUILDERS", "NativeOp", "ConvParams", "FcParams", "native_codes", "ChoiceCache", "layer_key",
           "small_map_conv", "s2_direct", "interleaved_tensors",
           "interleaved_layouts", "build_conv_il", "ENode", "TLayout", "native_shape", "CHUNK_IMAGES", "CHUNK_MAX_BYTES",
           "cache_dir"]
