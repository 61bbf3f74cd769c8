"""sparse-cpu fusions of the torchvision blocks: SiLU (x * Sigmoid(x)) into the producing conv's epilogue, and a
squeeze-excitation block (GlobalAveragePool -> 1x1 conv -> SiLU -> 1x1 conv -> Sigmoid -> Mul), at several
batch sizes, every ISA and kernel family, threads 1/2 identical (check_all)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.unit.test_engine_graphs import model, rand_weight

engine = pytest.importorskip("sparsekit.engine")
from tests.unit.test_engine import check_all  # noqa: E402


@pytest.fixture(autouse=True)
def _channel_parallel_always(monkeypatch):
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")


def _se_silu(tmp_path, rng, C=8, H=9, W=11, k=3, s=1, gate_first=False) -> str:
    r = 4
    inits = {"w": rand_weight(rng, (C, C, k, k), 0.5), "b": rng.standard_normal(C).astype(np.float32),
             "w1": rand_weight(rng, (r, C, 1, 1), 0.8), "b1": rng.standard_normal(r).astype(np.float32),
             "w2": rand_weight(rng, (C, r, 1, 1), 0.8), "b2": rng.standard_normal(C).astype(np.float32)}
    p = k // 2
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[p, p, p, p], strides=[s, s], name="conv"),
        helper.make_node("Sigmoid", ["c"], ["cs"], name="sig"),
        helper.make_node("Mul", ["c", "cs"], ["a"], name="silu"),  # x * sigmoid(x)
        helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "w1", "b1"], ["s1"], name="se_reduce"),
        helper.make_node("Sigmoid", ["s1"], ["s1s"], name="se_sig1"),
        helper.make_node("Mul", ["s1s", "s1"], ["s1a"], name="se_silu"),  # sigmoid first: both orders fuse
        helper.make_node("Conv", ["s1a", "w2", "b2"], ["s2"], name="se_expand"),
        helper.make_node("Sigmoid", ["s2"], ["gate"], name="se_gate"),
        # torchvision's SqueezeExcitation multiplies scale * input: the broadcast operand first
        helper.make_node("Mul", ["gate", "a"] if gate_first else ["a", "gate"], ["y"], name="se_scale"),
    ]
    return model(nodes, inits, (C, H, W), tmp_path / "se.onnx")


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("s", [1, 2])
def test_silu_and_se_block(tmp_path, batch, s):
    rng = np.random.default_rng(batch + 10 * s)
    path = _se_silu(tmp_path, rng, s=s)
    check_all(path, rng.standard_normal((batch, 8, 9, 11)).astype(np.float32))
    plan = engine.load(path, cache=False, verify=False).plan()
    fused = {f for e in plan for f in e["fused"]}
    assert {"Sigmoid:sig", "Mul:silu", "Sigmoid:se_sig1", "Mul:se_silu", "Sigmoid:se_gate"} <= fused
    assert [e["name"] for e in plan if e["kind"] == "binary"] == ["se_scale"]  # the gate Mul stays a broadcast


def test_se_gate_first_operand(tmp_path):
    rng = np.random.default_rng(5)
    path = _se_silu(tmp_path, rng, gate_first=True)
    check_all(path, rng.standard_normal((3, 8, 9, 11)).astype(np.float32))
    plan = engine.load(path, cache=False, verify=False).plan()
    assert [e["name"] for e in plan if e["kind"] == "binary"] == ["se_scale"]


def test_silu_not_fused_when_x_is_used_elsewhere(tmp_path):
    rng = np.random.default_rng(0)
    C = 4
    inits = {"w": rand_weight(rng, (C, C, 3, 3), 0.5)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Sigmoid", ["c"], ["cs"], name="sig"),
             helper.make_node("Mul", ["c", "cs"], ["a"], name="silu"),
             helper.make_node("Add", ["a", "c"], ["y"], name="also_uses_c")]
    path = model(nodes, inits, (C, 6, 7), tmp_path / "m.onnx")
    check_all(path, rng.standard_normal((2, C, 6, 7)).astype(np.float32), isas=engine.available_isas()[:1])
    fused = {f for e in engine.load(path, cache=False, verify=False).plan() for f in e["fused"]}
    assert "Mul:silu" not in fused



def _residual_chain(tmp_path, rng, C=6, H=10, W=12, reuse_later=False) -> str:
    """t = relu(conv0 x); a = relu(conv1 t); b = relu(conv2 a + t); y = gap(conv3 b + (t if reuse_later else a))."""
    pads = [1, 1, 1, 1]
    w = {f"w{i}": rand_weight(rng, (C, C, 3, 3), 0.4) for i in range(4)}
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["t0"], pads=pads), helper.make_node("Relu", ["t0"], ["t"]),
        helper.make_node("Conv", ["t", "w1"], ["a0"], pads=pads), helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["b0"], pads=pads), helper.make_node("Add", ["b0", "t"], ["b1"]),
        helper.make_node("Relu", ["b1"], ["b"]),
        helper.make_node("Conv", ["b", "w3"], ["c"], pads=pads),
        helper.make_node("Add", ["c", "t" if reuse_later else "a"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["y"]),  # a head: the trunk may run interleaved
    ]
    return model(nodes, w, (C, H, W), tmp_path / f"res{int(reuse_later)}.onnx")


@pytest.mark.parametrize("reuse_later", [False, True])
@pytest.mark.parametrize("strip", [None, 6000])
def test_residual_conv_stores_over_its_residual_only_when_it_dies_there(tmp_path, monkeypatch, reuse_later, strip):
    from sparsekit.engine import planner as P

    if strip:  # 6 input channels over 3 x 10 x 16 lanes x 4 B strips: input-channel blocks of 3 at AVX-512, so
        # the interleaved conv2 runs in one pass over its residual instead of in blocks
        monkeypatch.setattr(P, "IL_STRIP_BYTES", strip)
    from sparsekit.engine.graph import load_graph

    rng = np.random.default_rng(7)
    path = _residual_chain(tmp_path, rng, reuse_later=reuse_later)
    g = load_graph(path)
    nodes, shapes, out = P.lower(g, g.input_shape[1:])
    nodes = P.fuse(nodes, out, shapes)
    lay = P.plan_layouts(nodes, shapes, g.input_name)
    P.plan_memory(nodes, lay, g.input_name, out, 1)
    convs = [n for n in nodes if n.kind == "conv"]
    assert [bool(n.res) for n in convs] == [False, False, True, True]  # the Adds fused into conv2 / conv3
    # conv2's residual t dies there unless conv3 reads it again; conv3's residual dies at conv3, but the graph
    # output has no zero ring (its layout differs from the residual's), so conv3 never stores over it
    assert (lay[convs[2].output].off == lay[convs[2].res].off) == (not reuse_later)
    assert lay[convs[3].output].off != lay[convs[3].res].off
    x = rng.standard_normal((5, 6, 10, 12)).astype(np.float32)
    check_all(path, x)
    # interleaved batches (their trunk convs store over residuals too; kernels="sparse" takes the input-channel
    # blocks wherever they are packed): the same bits as planar
    for isa in engine.available_isas():
        if isa == "baseline":
            continue
        il = engine.load(path, cache=False, interleave=True, verify=False, kernels="sparse", isa=isa)
        planar = engine.load(path, cache=False, interleave=False, verify=False, kernels="sparse", isa=isa)
        assert il.il_lanes == il._engine.vector_width
        xb = rng.standard_normal((2 * il.il_lanes + 1, 6, 10, 12)).astype(np.float32)
        np.testing.assert_array_equal(il.run(xb), planar.run(xb))
