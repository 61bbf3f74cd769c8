"""ONNX file -> a minimal graph IR (nodes, constants, input/output) without torch.

Everything that is a compile-time constant (initializers, sparse initializers, Constant nodes and nodes
whose inputs are all constant) ends up in ``Graph.consts`` as float32/int64 numpy arrays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit_engine.errors import EngineLoadError, EngineUnsupported


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    domain: str = ""


@dataclass
class Graph:
    nodes: list[Node]
    consts: dict[str, np.ndarray]
    input_name: str
    input_shape: tuple  # full shape incl. batch; symbolic dims are None
    output_name: str
    opset: int
    path: str = ""
    sparse_names: set = field(default_factory=set)


def _attr_value(a: Any) -> Any:
    from onnx import helper, numpy_helper

    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode("utf-8", "replace") for x in v]
    if hasattr(v, "data_type") and hasattr(v, "dims"):  # TensorProto
        return numpy_helper.to_array(v)
    return v


def _sparse_to_dense(sp: Any, base_dir: str) -> tuple[str, np.ndarray]:
    from onnx import numpy_helper

    vals = numpy_helper.to_array(sp.values, base_dir) if sp.values.data_location else numpy_helper.to_array(sp.values)
    idx = numpy_helper.to_array(sp.indices, base_dir) if sp.indices.data_location else numpy_helper.to_array(sp.indices)
    shape = tuple(int(d) for d in sp.dims)
    dense = np.zeros(int(np.prod(shape)) if shape else 1, dtype=vals.dtype)
    idx = idx.astype(np.int64)
    if idx.ndim == 2:  # [NNZ, rank] coordinates
        idx = np.ravel_multi_index(tuple(idx.T), shape) if idx.size else idx.reshape(-1)
    dense[idx] = vals
    return sp.values.name, dense.reshape(shape)


def load_model(path: str | os.PathLike) -> Any:
    """Read an ONNX file (with external data next to it); every failure -> EngineLoadError."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise EngineLoadError(f"model file not found: {p}")
    if not p.is_file():
        raise EngineLoadError(f"model path is not a file: {p}")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except Exception as exc:  # DecodeError, missing external data, ...
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EngineLoadError(f"{p} is not a readable ONNX model: {type(exc).__name__}: {msg}") from None
    if not model.graph.node:
        raise EngineLoadError(f"{p} is not a valid ONNX model (empty graph)")
    return model


def build_graph(model: Any, path: str = "") -> Graph:
    from onnx import numpy_helper

    g = model.graph
    base_dir = str(Path(path).parent) if path else ""
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        try:
            consts[t.name] = numpy_helper.to_array(t, base_dir)
        except Exception as exc:
            raise EngineLoadError(f"cannot read initializer '{t.name}': {type(exc).__name__}: {exc}") from None
    sparse_names = set()
    for sp in g.sparse_initializer:
        name, arr = _sparse_to_dense(sp, base_dir)
        consts[name] = arr
        sparse_names.add(name)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise EngineUnsupported(
            f"sparse-cpu runs graphs with exactly one data input, this one has {len(inputs)}; use --runtime ort-cpu"
        )
    if len(g.output) != 1:
        raise EngineUnsupported(
            f"sparse-cpu runs graphs with exactly one output, this one has {len(g.output)}; use --runtime ort-cpu"
        )
    vi = inputs[0]
    tt = vi.type.tensor_type
    if tt.elem_type != 1:  # FLOAT
        raise EngineUnsupported(f"input '{vi.name}' has element type {tt.elem_type}, sparse-cpu needs float32; use --runtime ort-cpu")
    shape = tuple((d.dim_value if d.HasField("dim_value") else None) for d in tt.shape.dim)
    opset = 0
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            opset = int(o.version)
    nodes = []
    for i, n in enumerate(g.node):
        nodes.append(Node(n.op_type, n.name or f"{n.op_type}_{i}", list(n.input), list(n.output),
                          {a.name: _attr_value(a) for a in n.attribute}, n.domain))
    return Graph(nodes, consts, vi.name, shape, g.output[0].name, opset, str(path), sparse_names)


def load_graph(path: str | os.PathLike) -> Graph:
    return build_graph(load_model(path), str(path))
