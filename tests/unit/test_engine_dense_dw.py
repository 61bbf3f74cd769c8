"""sparse-cpu dense depthwise kernel (one channel at a time, bias in the accumulators): parity with the numpy
reference over kernel size x stride x dilation x batch, every ISA, plus wide rows, activations, residual."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper

from tests.unit.test_engine_graphs import conv_model, model

engine = pytest.importorskip("sparsekit.engine")
from sparsekit.engine.reference import run_reference  # noqa: E402

ISAS = engine.available_isas()


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> None:
    scale = max(1.0, float(np.max(np.abs(b))))
    err = float(np.max(np.abs(a.astype(np.float64) - b)))
    assert err <= tol * scale, f"max|diff| {err} > {tol * scale}"


def run_dense(path, x, isa, threads=1):
    s = engine.load(path, threads=threads, isa=isa, cache=False, verify=False, kernels="dense")
    return s.run(x)


GRID = list(itertools.product((3, 5, 7), (1, 2), (1, 2)))


@pytest.mark.parametrize("k,s,d", GRID, ids=[f"k{k}s{s}d{d}" for k, s, d in GRID])
def test_dense_depthwise_grid(tmp_path, k, s, d):
    rng = np.random.default_rng(100 * k + 10 * s + d)
    p = d * (k - 1) // 2
    C, H, W = 6, 13, 11
    path = conv_model(tmp_path / "dw.onnx", rng, C=C, O=C, H=H, W=W, k=k, s=s, d=d, g=C, pads=(p, p, p, p),
                      density=1.0, act="Relu")
    x = rng.standard_normal((8, C, H, W)).astype(np.float32)
    ref = run_reference(path, x)
    for isa in ISAS:
        for b in (1, 3, 8):
            close(run_dense(path, x[:b], isa), ref[:b])


WIDE = [
    dict(W=70, H=5),  # 8-vector tiles and a tail tile on every ISA
    dict(W=70, H=6, s=2, act="Clip"),
    dict(W=37, H=9, act=None, bias=False),
    dict(W=21, H=7, residual=True, act="HardSwish"),
    dict(W=12, H=12, act="Sigmoid"),  # activation dispatched at run time
    dict(W=9, H=1, pads=(1, 1, 1, 1)),
    dict(W=15, H=11, pads=(0, 2, 1, 0)),  # asymmetric padding
    # stride 2 (per-channel phase planes in the kernel, conv_dw_s2): asymmetric / odd extents, tiny maps,
    # a residual, dilation with a 5x5 kernel, wide rows
    dict(W=15, H=11, s=2, pads=(0, 2, 1, 0)),
    dict(W=6, H=6, s=2, k=5, pads=(2, 2, 2, 2), act="Sigmoid"),
    dict(W=3, H=4, s=2, pads=(1, 1, 1, 1), residual=True, act="Clip"),
    dict(W=19, H=9, s=2, k=3, d=2, pads=(2, 2, 2, 2), bias=False),
    dict(W=97, H=7, s=2, pads=(1, 0, 0, 1), act=None),
]


@pytest.mark.parametrize("cfg", WIDE, ids=[str(i) for i in range(len(WIDE))])
def test_dense_depthwise_shapes(tmp_path, cfg):
    rng = np.random.default_rng(len(str(cfg)))
    cfg = dict(cfg)
    C, H, W = 5, cfg.pop("H"), cfg.pop("W")
    path = conv_model(tmp_path / "dw.onnx", rng, C=C, O=C, H=H, W=W, g=C, density=1.0, **cfg)
    x = rng.standard_normal((3, C, H, W)).astype(np.float32)
    ref = run_reference(path, x)
    for isa in ISAS:
        y1 = run_dense(path, x, isa)
        close(y1, ref)
        np.testing.assert_array_equal(run_dense(path, x, isa, threads=2), y1)


# dense (non-depthwise) convs: OB-channel blocks with a partial last block, NVD-vector tiles, then a tail
# computed one vector at a time (1x1 = a GEMM over the flat positions)
DENSE = [
    dict(k=1, C=13, O=19, H=5, W=7, pads=(0, 0, 0, 0)),
    dict(k=1, C=29, O=7, H=3, W=3, pads=(0, 0, 0, 0), act=None),
    dict(k=1, C=11, O=25, H=9, W=10, s=2, pads=(0, 0, 0, 0), act="Clip"),
    dict(k=1, C=5, O=17, H=1, W=1, pads=(0, 0, 0, 0), residual=True),
    dict(k=3, C=7, O=13, H=6, W=11),
    dict(k=3, g=3, C=9, O=15, H=7, W=5, act="HardSwish"),
]


@pytest.mark.parametrize("cfg", DENSE, ids=[str(i) for i in range(len(DENSE))])
def test_dense_conv_tails(tmp_path, cfg):
    rng = np.random.default_rng(7 + len(str(cfg)))
    cfg = dict(cfg)
    C, H, W = cfg["C"], cfg.pop("H"), cfg.pop("W")
    path = conv_model(tmp_path / "c.onnx", rng, H=H, W=W, density=1.0, **cfg)
    x = rng.standard_normal((8, C, H, W)).astype(np.float32)
    ref = run_reference(path, x)
    for isa in ISAS:
        for b in (1, 3, 8):
            close(run_dense(path, x[:b], isa), ref[:b])


# inputs larger than L1 (> 32 KB) with several OB-channel blocks (the shapes a cache-blocked loop order
# would take a different path for): parity at batch 1 and 3, threads 2 and 3 bit-identical to 1
LARGE = [
    dict(k=1, C=40, O=20, H=16, W=16, pads=(0, 0, 0, 0)),
    dict(k=1, C=36, O=25, H=17, W=19, pads=(0, 0, 0, 0), act=None, bias=False),  # partial block, tails
    dict(k=3, C=24, O=14, H=20, W=20, residual=True, act="Clip"),
    dict(k=3, C=32, O=13, H=24, W=22, s=2, act="HardSwish"),
]


@pytest.mark.parametrize("cfg", LARGE, ids=[str(i) for i in range(len(LARGE))])
def test_dense_conv_large_inputs(tmp_path, cfg):
    rng = np.random.default_rng(11 + len(str(cfg)))
    cfg = dict(cfg)
    C, H, W = cfg["C"], cfg.pop("H"), cfg.pop("W")
    path = conv_model(tmp_path / "c.onnx", rng, H=H, W=W, density=1.0, **cfg)
    x = rng.standard_normal((3, C, H, W)).astype(np.float32)
    ref = run_reference(path, x)
    for isa in ISAS:
        y1 = run_dense(path, x, isa)
        close(y1, ref)
        close(run_dense(path, x[:1], isa), ref[:1])
        np.testing.assert_array_equal(run_dense(path, x, isa, threads=2), y1)
        np.testing.assert_array_equal(run_dense(path, x[:1], isa, threads=3), y1[:1])


# the channels-in-lanes form of a depthwise conv on a small map (native conv_dw_cl, the dense "oc" form of a
# depthwise conv): its padded input transposed so vw channels share a vector; per lane the blocked form's
# arithmetic, so both give the same bits (any kernel size, stride 1 / 2, dilation, channel tails, activations)
CL_GRID = list(itertools.product((3, 5, 7), (1, 2), (1, 2)))
CL_SHAPES = [(5, 3, 3, "Relu"), (16, 6, 6, "Sigmoid"), (37, 7, 5, "Clip"), (20, 1, 4, None), (19, 4, 9, "Silu")]


def dw_model(path, rng, C, H, W, k, s, d, act):
    p = d * (k - 1) // 2
    inits = {"w": rng.standard_normal((C, 1, k, k)).astype(np.float32), "b": rng.standard_normal(C).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], name="conv0", strides=[s, s], dilations=[d, d],
                              group=C, kernel_shape=[k, k], pads=[p, p, p + 1, p])]
    if act == "Silu":
        nodes += [helper.make_node("Sigmoid", ["z"], ["g"], name="sig0"), helper.make_node("Mul", ["z", "g"], ["y"], name="mul0")]
    else:
        nodes.append(helper.make_node(act or "Identity", ["z"], ["y"], name="act0"))
    return model(nodes, inits, (C, H, W), path)


@pytest.mark.parametrize("k,s,d", CL_GRID, ids=[f"k{k}s{s}d{d}" for k, s, d in CL_GRID])
def test_channels_in_lanes_depthwise_matches_the_blocked_form(tmp_path, k, s, d):
    rng = np.random.default_rng(1000 + 100 * k + 10 * s + d)
    for C, H, W, act in CL_SHAPES:
        path = dw_model(tmp_path / f"dw{C}.onnx", rng, C, H, W, k, s, d, act)
        x = rng.standard_normal((3, C, H, W)).astype(np.float32)
        ref = run_reference(path, x)
        for isa in ISAS:
            cl = engine.load(path, isa=isa, cache=False, verify=False, kernels="dense-oc")
            assert [e.get("dense_form") for e in cl.plan() if e["kind"] == "conv"] == ["oc"], (isa, C, act)
            blocked = engine.load(path, isa=isa, cache=False, verify=False, kernels="dense-blocked")
            y = cl.run(x)
            np.testing.assert_array_equal(y, blocked.run(x), err_msg=f"{isa} C={C} {act}")
            close(y, ref)
            np.testing.assert_array_equal(cl.run(x[:1]), y[:1])
            two = engine.load(path, threads=2, isa=isa, cache=False, verify=False, kernels="dense-oc")
            np.testing.assert_array_equal(two.run(x[:1]), y[:1])


def test_channels_in_lanes_form_only_where_it_applies(tmp_path):
    """A depthwise conv with a fused residual (conv_model's second conv), or a map past
    planner.DW_CL_MAX_POSITIONS, keeps the blocked form."""
    rng = np.random.default_rng(3)
    res = conv_model(tmp_path / "r.onnx", rng, C=8, O=8, g=8, H=5, W=5, density=1.0, residual=True)
    big = conv_model(tmp_path / "b.onnx", rng, C=8, O=8, g=8, H=60, W=60, density=1.0)
    small = conv_model(tmp_path / "s.onnx", rng, C=8, O=8, g=8, H=30, W=30, density=1.0)
    forms = {name: [e.get("dense_form") for e in engine.load(p, cache=False, verify=False, kernels="dense-oc").plan()
                    if e["kind"] == "conv"] for name, p in (("res", res), ("big", big), ("small", small))}
    assert forms == {"res": ["oc", "blocked"], "big": ["blocked"], "small": ["oc"]}
