"""sparse-cpu engine: single-op parity grid vs the numpy reference and ONNX Runtime, every ISA, threads
1 vs 2, fusions, bad inputs, cache, the torch-free runtime path. Graphs are built with onnx.helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.unit.test_engine_graphs import conv_model, fc_model, model, rand_weight

engine = pytest.importorskip("sparsekit.engine")
from sparsekit.engine.reference import run_reference  # noqa: E402

from sparsekit.engine import (  # noqa: E402
    EngineInputError,
    EngineLoadError,
    EngineUnsupported,
    EngineVerifyError,
)
from sparsekit.errors import ArtifactError, SparsekitError  # noqa: E402

ISAS = engine.available_isas()
RTOL = 1e-4


@pytest.fixture(autouse=True)
def _channel_parallel_always(monkeypatch):
    """Batch-1 runs with threads=2 split channels even for tiny plans, so that path is tested."""
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")


def close(a: np.ndarray, b: np.ndarray, tol: float = RTOL) -> None:
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    err = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
    assert err <= tol * scale, f"max|diff| {err} > {tol * scale}"


def check_all(path: str, x: np.ndarray, isas=ISAS, kernels=("sparse", "dense-blocked", "dense-oc")) -> None:
    """Every ISA x kernel family vs the numpy reference; threads 1 and 2 bitwise identical; batch-1 agrees."""
    ref = run_reference(path, x)
    for isa in isas:
        for k in kernels:
            s1 = engine.load(path, threads=1, isa=isa, cache=False, kernels=k)
            assert s1.isa == isa
            y1 = s1.run(x)
            assert y1.shape == ref.shape
            close(y1, ref)
            s2 = engine.load(path, threads=2, isa=isa, cache=False, verify=False, kernels=k)
            np.testing.assert_array_equal(s2.run(x), y1)
            np.testing.assert_allclose(s1.run(x[:1]), y1[:1], rtol=1e-5, atol=1e-5)


CONV_GRID = [
    dict(k=1, pads=(0, 0, 0, 0)),
    dict(k=3),
    dict(k=5, pads=(2, 2, 2, 2), density=0.01),
    dict(k=7, pads=(3, 3, 3, 3), C=3, O=5, H=17, W=15),
    dict(k=3, s=2),
    dict(k=1, s=2, pads=(0, 0, 0, 0)),
    dict(k=7, s=2, pads=(3, 3, 3, 3), C=3, O=9, H=21, W=19),
    dict(k=3, pads=(0, 1, 2, 0)),  # asymmetric
    dict(k=3, s=2, pads=(1, 0, 0, 1)),
    dict(k=3, d=2, pads=(2, 2, 2, 2)),
    dict(k=3, s=2, d=2, pads=(1, 2, 2, 1), H=13, W=11),
    dict(k=3, g=2, C=8, O=12),
    dict(k=3, g=8, C=8, O=8, density=1.0),  # depthwise
    dict(k=5, g=6, C=6, O=12, pads=(2, 2, 2, 2), s=2),  # depthwise multiplier 2, stride 2
    dict(k=3, density=0.0),  # all-zero layer
    dict(k=3, density=1.0, C=17, O=23, act="LeakyRelu"),
    dict(k=3, density=0.5, zero_channel=True, act=None),
    dict(k=3, auto_pad="SAME_UPPER", s=2, H=9, W=8),
    dict(k=(1, 3), pads=(0, 1, 0, 1), act="HardSwish"),
    dict(k=3, residual=True, act="Relu"),
    dict(k=3, bias=False, act="Sigmoid", H=1, W=1, pads=(1, 1, 1, 1)),
    dict(k=3, C=33, O=40, H=31, W=29, density=0.1, s=1),
    dict(k=3, s=2, C=16, O=8, density=0.05),  # stride 2, most (phase, channel) planes unread: not gathered
    dict(k=3, s=2, g=8, C=8, O=8, density=0.2, residual=True),  # sparse depthwise stride 2
    # stride-2 direct sparse kernel: wide rows (4-vector segments + tail), 3 / 2 vectors per row, residual,
    # an activation dispatched at run time
    dict(k=3, s=2, C=4, O=6, H=9, W=70, density=0.3),
    dict(k=3, s=2, C=4, O=6, H=12, W=40, density=0.3, act="Clip"),
    dict(k=3, s=2, C=4, O=6, H=7, W=20, density=0.3, residual=True, act=None),
    dict(k=3, s=2, d=2, C=4, O=6, H=15, W=33, pads=(2, 2, 2, 2), density=0.3, act="HardSwish"),
    # depthwise kernel sizes 5 / 7, stride 2, dilation
    dict(k=5, g=8, C=8, O=8, pads=(2, 2, 2, 2), density=1.0, H=12, W=12),
    dict(k=7, g=8, C=8, O=8, s=2, pads=(3, 3, 3, 3), density=1.0, H=15, W=15),
    dict(k=3, g=8, C=8, O=8, d=2, pads=(2, 2, 2, 2), density=1.0),
]


@pytest.mark.parametrize("cfg", CONV_GRID, ids=[str(i) for i in range(len(CONV_GRID))])
def test_conv_grid(tmp_path, cfg):
    rng = np.random.default_rng(abs(hash(str(cfg))) % 2**32)
    path = conv_model(tmp_path / "c.onnx", rng, **cfg)
    C, H, W = cfg.get("C", 8), cfg.get("H", 10), cfg.get("W", 9)
    check_all(path, rng.standard_normal((3, C, H, W)).astype(np.float32))


@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_fc_batches(tmp_path, density, batch):
    rng = np.random.default_rng(int(density * 100) + batch)
    path = fc_model(tmp_path / "f.onnx", rng, F=53, O=21, density=density)
    check_all(path, rng.standard_normal((batch, 53)).astype(np.float32), isas=ISAS if batch != 64 else ISAS[:1])


@pytest.mark.parametrize("kw", [dict(alpha=0.5, beta=2.0), dict(transB=0), dict(op="MatMul", act=None)])
def test_gemm_attrs(tmp_path, kw):
    rng = np.random.default_rng(1)
    path = fc_model(tmp_path / "g.onnx", rng, **kw)
    check_all(path, rng.standard_normal((5, 37)).astype(np.float32))


def test_conv_batch64_threads(tmp_path):
    rng = np.random.default_rng(3)
    path = conv_model(tmp_path / "c.onnx", rng, C=16, O=16, H=16, W=16, density=0.05)
    x = rng.standard_normal((64, 16, 16, 16)).astype(np.float32)
    s1, s2 = engine.load(path, threads=1, cache=False), engine.load(path, threads=2, cache=False)
    np.testing.assert_array_equal(s1.run(x), s2.run(x))
    close(s1.run(x), run_reference(path, x))


def _cnn(tmp_path, rng, opset=17) -> str:
    """BN, SE-style broadcast Mul, Concat, pools, Clip-as-inputs, ReduceMean, Reshape, Dropout, Constant."""
    C = 6
    w1 = rand_weight(rng, (C, 3, 3, 3), 0.7)
    w2 = rand_weight(rng, (C, C, 1, 1), 0.5)
    bn = [rng.uniform(0.5, 1.5, C), rng.standard_normal(C), rng.standard_normal(C) * 0.1, rng.uniform(0.5, 2, C)]
    fcw = rand_weight(rng, (10, 2 * C), 0.8)
    inits = {"w1": w1, "w2": w2, "s": bn[0].astype(np.float32), "bb": bn[1].astype(np.float32),
             "m": bn[2].astype(np.float32), "v": bn[3].astype(np.float32), "fcw": fcw,
             "fcb": rng.standard_normal(10).astype(np.float32), "lo": np.array(0.0, np.float32),
             "hi": np.array(6.0, np.float32), "cshift": rng.standard_normal((1, C, 1, 1)).astype(np.float32),
             "axes": np.array([2, 3], np.int64)}
    shape = helper.make_tensor("shp", 7, [2], [-1, 2 * C])
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["b1"], name="bn1"),
        helper.make_node("Clip", ["b1", "lo", "hi"], ["r1"], name="relu6"),
        helper.make_node("GlobalAveragePool", ["r1"], ["g1"], name="gap"),
        helper.make_node("HardSigmoid", ["g1"], ["hs"], name="hsig"),
        helper.make_node("Mul", ["r1", "hs"], ["se"], name="se_mul"),
        helper.make_node("Add", ["se", "cshift"], ["se2"], name="bias_add"),
        helper.make_node("Conv", ["se2", "w2"], ["c2"], name="c2"),
        helper.make_node("BatchNormalization", ["c2", "s", "bb", "m", "v"], ["b2"], name="bn_standalone_src"),
        helper.make_node("Concat", ["b2", "se2"], ["cat"], axis=1, name="cat"),
        helper.make_node("LeakyRelu", ["cat"], ["lr"], alpha=0.1, name="lrelu"),
        helper.make_node("MaxPool", ["lr"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="mp"),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0],
                         count_include_pad=1, ceil_mode=1, name="ap"),
        helper.make_node("BatchNormalization", ["ap", "s2", "bb2", "m2", "v2"], ["bn3"], name="bn_affine"),
        helper.make_node("ReduceMean", ["bn3", "axes"], ["rm"], keepdims=1, name="rmean"),
        helper.make_node("Dropout", ["rm"], ["dr"], name="drop"),
        helper.make_node("Constant", [], ["shp"], value=shape, name="const_shape"),
        helper.make_node("Reshape", ["dr", "shp"], ["fl"], name="reshape"),
        helper.make_node("Gemm", ["fl", "fcw", "fcb"], ["y0"], transB=1, name="fc"),
        helper.make_node("HardSwish", ["y0"], ["y"], name="hswish"),
    ]
    C2 = 2 * C
    inits.update({"s2": rng.uniform(0.5, 1.5, C2).astype(np.float32), "bb2": rng.standard_normal(C2).astype(np.float32),
                  "m2": np.zeros(C2, np.float32), "v2": np.ones(C2, np.float32)})
    return model(nodes, inits, (3, 15, 14), tmp_path / "cnn.onnx", opset=opset)


def test_mixed_ops_graph(tmp_path):
    rng = np.random.default_rng(7)
    path = _cnn(tmp_path, rng, opset=18)
    x = rng.standard_normal((4, 3, 15, 14)).astype(np.float32)
    check_all(path, x)
    s = engine.load(path, cache=False)
    kinds = [p["kind"] for p in s.plan()]
    assert kinds.count("conv") == 2 and "concat" in kinds and "gap" in kinds
    c1 = next(p for p in s.plan() if p["name"] == "c1")
    assert any("BatchNormalization" in f for f in c1["fused"]) and any("Clip" in f for f in c1["fused"])
    v = s.verification
    assert v["verified"] and v["reference"] == "onnxruntime" and v["atol"] == engine.VERIFY_ATOL and v["batch"] == 8


@pytest.mark.parametrize("pool", [
    dict(op="MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
    dict(op="MaxPool", kernel_shape=[3, 3], strides=[2, 2]),  # windows inside: unchecked fast path
    dict(op="MaxPool", kernel_shape=[2, 2], strides=[1, 1], dilations=[2, 2]),
    dict(op="MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
    dict(op="MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(op="MaxPool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 0, 1, 2], dilations=[2, 1]),
    dict(op="AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(op="AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(op="AveragePool", kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1, pads=[0, 1, 0, 1]),
    dict(op="AveragePool", kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
])
def test_pools(tmp_path, pool):
    rng = np.random.default_rng(5)
    pool = dict(pool)
    op = pool.pop("op")
    path = model([helper.make_node(op, ["x"], ["y"], **pool)], {}, (5, 11, 10), tmp_path / "p.onnx")
    check_all(path, rng.standard_normal((2, 5, 11, 10)).astype(np.float32))


def test_broadcast_binary_and_flatten(tmp_path):
    rng = np.random.default_rng(9)
    inits = {"k": rng.standard_normal((1, 1, 7)).astype(np.float32), "d": rng.uniform(1, 2, (4, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["a"]),           # broadcast over W (general binary)
        helper.make_node("Div", ["a", "d"], ["b"]),           # per-channel -> affine
        helper.make_node("Sub", ["d", "b"], ["c"]),           # const - tensor
        helper.make_node("Add", ["c", "x"], ["e"]),           # tensor + tensor, no producer to fuse into
        helper.make_node("Relu", ["e"], ["f"]),
        helper.make_node("Flatten", ["f"], ["y"], axis=1),
    ]
    path = model(nodes, inits, (4, 6, 7), tmp_path / "b.onnx")
    check_all(path, rng.standard_normal((3, 4, 6, 7)).astype(np.float32))


def test_channel_broadcast_binary_paths(tmp_path):
    """Tensor x per-channel tensor (the SE gate, both operand orders: the flat per-channel path) and tensor x a
    (C, H, 1) constant (varies along H: must not take the per-channel path), on a padded output."""
    rng = np.random.default_rng(12)
    inits = {"kh": rng.standard_normal((4, 6, 1)).astype(np.float32),
             "w": rand_weight(rng, (4, 4, 3, 3), 1.0)}
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"]),
        helper.make_node("Mul", ["x", "g"], ["a"]),            # full x per-channel
        helper.make_node("Add", ["g", "a"], ["b"]),            # per-channel + full (other order)
        helper.make_node("Mul", ["b", "kh"], ["c"]),           # full x (C, H, 1): one value per row
        helper.make_node("Mul", ["kh", "c"], ["d"]),           # the other order
        helper.make_node("Conv", ["d", "w"], ["y"], pads=[1, 1, 1, 1]),  # its input plane is padded
    ]
    path = model(nodes, inits, (4, 6, 7), tmp_path / "bc.onnx")
    check_all(path, rng.standard_normal((3, 4, 6, 7)).astype(np.float32))


def test_sparse_initializers(tmp_path):
    rng = np.random.default_rng(11)
    w = rand_weight(rng, (12, 4, 3, 3), 0.1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["z"], ["y"])]
    path = model(nodes, {}, (4, 9, 9), tmp_path / "s.onnx", sparse={"w": w})
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    s = engine.load(path, cache=False)
    close(s.run(x), run_reference(path, x))
    assert abs(s.plan()[0]["density"] - float((w != 0).mean())) < 1e-9


def test_external_data(tmp_path):
    import onnx

    rng = np.random.default_rng(12)
    path = conv_model(tmp_path / "e.onnx", rng, C=16, O=32, density=0.3)
    m = onnx.load(path)
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    x = rng.standard_normal((2, 16, 10, 9)).astype(np.float32)
    close(engine.load(tmp_path / "ext.onnx", cache=False).run(x), run_reference(path, x))


def test_plan_contents(tmp_path):
    rng = np.random.default_rng(13)
    path = conv_model(tmp_path / "c.onnx", rng, C=16, O=16, density=0.25)
    p = engine.load(path, cache=False).plan()[0]
    assert p["kernel"] in ("sparse", "dense") and set(p["us"]) == {"sparse", "dense"}
    assert p["macs_dense"] == 16 * 16 * 3 * 3 * 10 * 9
    assert 0.15 < p["density"] < 0.35
    assert p["macs_sparse"] <= p["macs_dense"]


def test_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(14)
    path = conv_model(tmp_path / "c.onnx", rng)
    assert not any(p["cached"] for p in engine.load(path).plan())
    f = tmp_path / "cache" / "sparsekit" / "engine" / "choices.json"
    assert f.exists() and json.loads(f.read_text())
    assert all(p["cached"] for p in engine.load(path).plan() if p["kind"] == "conv")
    assert not any(p["cached"] for p in engine.load(path, cache=False).plan())
    monkeypatch.setenv("SPARSEKIT_ENGINE_CACHE", "0")
    assert not any(p["cached"] for p in engine.load(path).plan())


def test_cache_dir_env_keeps_choices_apart(tmp_path, monkeypatch):
    """SPARSEKIT_ENGINE_CACHE_DIR (bench-engine's own choices): a fresh directory times afresh and keeps
    the user's cache untouched."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = conv_model(tmp_path / "c.onnx", np.random.default_rng(14))
    engine.load(path).plan()
    user = tmp_path / "cache" / "sparsekit" / "engine" / "choices.json"
    before = user.read_text()
    monkeypatch.setenv("SPARSEKIT_ENGINE_CACHE_DIR", str(tmp_path / "own"))
    assert not any(p["cached"] for p in engine.load(path).plan())
    assert json.loads((tmp_path / "own" / "choices.json").read_text())
    assert all(p["cached"] for p in engine.load(path).plan() if p["kind"] == "conv")
    assert user.read_text() == before


def test_freed_kernel_variant_is_refused_not_read(tmp_path):
    """After load each conv / fc keeps only its chosen format's storage; asking the native engine to run or
    time another variant raises (it used to read the freed stand-in arrays and could crash)."""
    from sparsekit_engine.session import DENSE_FORMS

    for path in (conv_model(tmp_path / "c.onnx", np.random.default_rng(3)),
                 fc_model(tmp_path / "f.onnx", np.random.default_rng(4))):
        s = engine.load(path, cache=False, verify=False)
        eng = s._engine
        for idx, p in enumerate(s.plan()):
            if p["kind"] not in ("conv", "fc"):
                continue
            kept = 0 if p["kernel"] == "sparse" else DENSE_FORMS.get(p.get("dense_form", "blocked"), 1)
            other = 1 if kept == 0 else 0
            assert eng.time_op(idx, kept, 1, 1, 1) > 0
            with pytest.raises(ValueError, match="freed"):
                eng.time_op(idx, other, 1, 1, 1)
            with pytest.raises(ValueError, match="freed"):
                eng.set_variant(idx, other)
        x = np.random.default_rng(0).standard_normal((2, *s.input_shape)).astype(np.float32)
        assert np.isfinite(s.run(x)).all()  # the session still runs its kept variants


def test_isa_env(tmp_path, monkeypatch):
    rng = np.random.default_rng(15)
    path = conv_model(tmp_path / "c.onnx", rng)
    monkeypatch.setenv("SPARSEKIT_ENGINE_ISA", "baseline")
    assert engine.load(path, cache=False, verify=False).isa == "baseline"
    monkeypatch.setenv("SPARSEKIT_ENGINE_ISA", "nonsense")
    with pytest.raises(SparsekitError, match="not available"):
        engine.load(path, cache=False, verify=False)


# --------------------------------------------------------------------------------------------- bad inputs
@pytest.fixture
def conv_session(tmp_path):
    return engine.load(conv_model(tmp_path / "c.onnx", np.random.default_rng(0)), cache=False)


def test_wrong_shape(conv_session):
    with pytest.raises(EngineInputError, match=r"expected input \(N, 8, 10, 9\) float32, got \(8, 10, 9\)"):
        conv_session.run(np.zeros((8, 10, 9), np.float32))
    with pytest.raises(EngineInputError, match="got \\(2, 8, 10, 10\\)"):
        conv_session.run(np.zeros((2, 8, 10, 10), np.float32))


def test_dtypes(conv_session):
    x = np.random.default_rng(0).standard_normal((2, 8, 10, 9))
    np.testing.assert_array_equal(conv_session.run(x), conv_session.run(x.astype(np.float32)))  # float64 converted
    with pytest.raises(EngineInputError, match="int64"):
        conv_session.run(np.zeros((2, 8, 10, 9), np.int64))
    xt = np.asfortranarray(x.astype(np.float32))
    np.testing.assert_array_equal(conv_session.run(xt), conv_session.run(x.astype(np.float32)))
    assert conv_session.run(np.zeros((0, 8, 10, 9), np.float32)).shape == (0, 16, 10, 9)


@pytest.mark.parametrize("op", ["Softmax", "Erf"])
def test_unsupported_op(tmp_path, op):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["r"], ["y"], name=f"{op.lower()}_3")]
    path = model(nodes, {}, (10,), tmp_path / "u.onnx")
    with pytest.raises(EngineUnsupported) as ei:
        engine.load(path)
    msg = str(ei.value)
    assert msg == f"op '{op}' (node '{op.lower()}_3') is not supported by sparse-cpu; use --runtime ort-cpu"
    assert isinstance(ei.value, SparsekitError) and ei.value.exit_code == 1


def test_corrupt_and_missing(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    for p in (bad, tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(EngineLoadError) as ei:
            engine.load(p)
        assert isinstance(ei.value, ArtifactError) and "\n" not in str(ei.value)
    txt = tmp_path / "t.onnx"
    txt.write_text("not onnx at all")
    with pytest.raises(EngineLoadError):
        engine.load(txt)


def test_verify_failure_and_vacuous(tmp_path, monkeypatch):
    rng = np.random.default_rng(16)
    path = conv_model(tmp_path / "z.onnx", rng, density=0.0, bias=False)
    s = engine.load(path, cache=False)
    assert s.verification["vacuous"] and "note" in s.verification
    path = conv_model(tmp_path / "c.onnx", rng)
    import sparsekit.engine as E

    monkeypatch.setattr(E, "VERIFY_ATOL", -1.0)  # impossible tolerance -> the check must fire
    with pytest.raises(EngineVerifyError, match="differs from onnxruntime"):
        engine.load(path, cache=False)
    assert engine.load(path, cache=False, verify=False).verification == {"verified": False}


def test_verify_input(tmp_path):
    rng = np.random.default_rng(17)
    path = conv_model(tmp_path / "c.onnx", rng)
    s = engine.load(path, cache=False, verify_input=rng.standard_normal((5, 8, 10, 9)).astype(np.float32))
    assert s.verification["batch"] == 5


def test_runtime_path_imports_no_torch(tmp_path):
    rng = np.random.default_rng(18)
    path = conv_model(tmp_path / "c.onnx", rng)
    block = tmp_path / "block"
    block.mkdir()
    (block / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    code = (
        "import sys, numpy as np\n"
        "import sparsekit.engine as E\n"
        f"s = E.load({str(path)!r}, threads=2)\n"
        "y = s.run(np.ones((2, 8, 10, 9), np.float32))\n"
        "assert 'torch' not in sys.modules or getattr(sys.modules['torch'], '__file__', '').startswith("
        f"{str(block)!r})\n"
        "print('ok', y.shape, s.isa)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(Path.cwd())]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok (2, 16, 10, 9)")


SMALL_MAP_GRID = [
    dict(k=3, H=4, W=4),
    dict(k=3, H=2, W=2, density=0.3),
    dict(k=1, pads=(0, 0, 0, 0), H=3, W=5, C=16, O=24),
    dict(k=3, H=4, W=4, residual=True),
    dict(k=3, g=8, C=8, O=8, H=4, W=4, density=1.0),  # depthwise
    dict(k=3, pads=(0, 1, 2, 0), H=5, W=3, act="HardSwish"),  # asymmetric: output rows narrower than the work rows
    dict(k=3, H=4, W=4, density=0.0),
]


@pytest.mark.parametrize("cfg", SMALL_MAP_GRID, ids=[str(i) for i in range(len(SMALL_MAP_GRID))])
def test_small_map_conv_multi_image(tmp_path, cfg):
    """Small maps run several images per register tile (chunk > 1): every batch size agrees with the reference
    and each image is bitwise identical to running it alone."""
    from sparsekit.engine import planner as P

    rng = np.random.default_rng(abs(hash(str(cfg))) % 2**32)
    cfg = dict(cfg)
    path = conv_model(tmp_path / "s.onnx", rng, **cfg)
    C, H, W = cfg.get("C", 8), cfg["H"], cfg["W"]
    x = rng.standard_normal((19, C, H, W)).astype(np.float32)
    ref = run_reference(path, x)
    for isa in ISAS:
        s = engine.load(path, isa=isa, cache=False, kernels="sparse")
        assert s.chunk == max(P.CONV_CHUNKS) or (isa == "baseline" and H > 2)  # 4-wide: L <= 16 only
        alone = np.concatenate([s.run(x[i:i + 1]) for i in range(len(x))])
        close(alone, ref)
        for b in (2, 3, 5, 8, 13, 19):
            np.testing.assert_array_equal(s.run(x[:b]), alone[:b])
        s2 = engine.load(path, threads=2, isa=isa, cache=False, verify=False, kernels="sparse")
        np.testing.assert_array_equal(s2.run(x), alone)


# ------------------------------------------------------------------------- sparse kernels of another ISA
def _narrower_isa_models(tmp_path, rng) -> list[tuple[str, tuple]]:
    return [
        (conv_model(tmp_path / "s1.onnx", rng, C=12, O=10, H=14, W=13, density=0.3), (12, 14, 13)),
        (conv_model(tmp_path / "s2.onnx", rng, C=6, O=8, H=15, W=40, s=2, density=0.3, residual=False), (6, 15, 40)),
        (conv_model(tmp_path / "sm.onnx", rng, C=8, O=8, H=4, W=4, density=0.4, residual=True), (8, 4, 4)),
        (fc_model(tmp_path / "fc.onnx", rng, F=53, O=21, density=0.2), (53,)),
        (_cnn(tmp_path, rng), (3, 15, 14)),
    ]


@pytest.mark.skipif(len(ISAS) < 2, reason="one ISA on this CPU/build")
@pytest.mark.parametrize("model_i", range(5))
def test_sparse_kernels_of_a_narrower_isa(tmp_path, model_i):
    """The engine's sparse layers may run a narrower ISA's kernels (same CSR format): every conv/fc op set to
    that ISA gives exactly the outputs of a session pinned to it at batch 7 (1 and 2 threads); at batch 1 the
    same up to float rounding (the batch-1 fc kernel reduces across vector lanes, so its order follows the width)."""
    rng = np.random.default_rng(40 + model_i)
    path, shape = _narrower_isa_models(tmp_path, rng)[model_i]
    x = rng.standard_normal((7, *shape)).astype(np.float32)
    top = ISAS[0]
    for narrow in ISAS[1:]:
        pinned = engine.load(path, isa=narrow, cache=False, kernels="sparse", verify=False)
        want = pinned.run(x)
        close(want, run_reference(path, x))
        for threads in (1, 2):
            mixed = engine.load(path, isa=top, threads=threads, cache=False, kernels="sparse", verify=False)
            assert mixed.sparse_isas == [top]  # pinned: no other ISA is timed
            for i, e in enumerate(mixed.plan()):
                if e["kind"] in ("conv", "fc"):
                    mixed._engine.set_sparse_isa(i, narrow)
                    assert mixed._engine.sparse_isa(i) == narrow
            np.testing.assert_array_equal(mixed.run(x), want)
            close(mixed.run(x[:1]), want[:1], tol=1e-6)


def test_sparse_isa_choice(tmp_path, monkeypatch):
    """Unpinned, each sparse layer takes the fastest of the vector ISAs at or below the engine's (timed at load,
    cached with the choice); a pinned ISA stays the only one; a wider ISA than the engine's is refused."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEKIT_ENGINE_ISA", raising=False)
    rng = np.random.default_rng(50)
    path = _cnn(tmp_path, rng)
    s = engine.load(path, kernels="sparse")
    assert s.sparse_isas[0] == ISAS[0] and "baseline" not in s.sparse_isas[1:]
    assert set(s.sparse_isas) <= set(ISAS)
    layers = [e for e in s.plan() if e["kind"] in ("conv", "fc")]
    assert layers and all(e["isa"] in s.sparse_isas for e in layers)
    auto = engine.load(path)  # fresh timings for the auto choice, then the cached ones again
    again = engine.load(path)
    for a, b in zip(auto.plan(), again.plan(), strict=True):
        assert b["cached"] == (b["kind"] in ("conv", "fc")) and a.get("isa") == b.get("isa")
        if a["kind"] in ("conv", "fc"):
            assert a["isa"] in auto.sparse_isas if a["kernel"] == "sparse" else a["isa"] == auto.isa
    pinned = engine.load(path, isa=ISAS[-1], cache=False, verify=False)
    assert pinned.sparse_isas == [ISAS[-1]]
    if len(ISAS) > 1:
        with pytest.raises(ValueError, match="wider"):
            pinned._engine.set_sparse_isa(0, ISAS[0])
    with pytest.raises(ValueError, match="not available"):
        s._engine.set_sparse_isa(0, "nonsense")


# ------------------------------------------------------------------------------ the two dense conv forms
@pytest.mark.parametrize("cfg", [
    dict(C=8, O=40, H=4, W=4),  # short map: one vector of positions
    dict(C=16, O=33, H=13, W=11, s=2, act="HardSwish"),  # stride 2 (phase planes), a partial unit
    dict(C=12, O=24, k=1, pads=(0, 0, 0, 0), H=9, W=30, residual=True),  # 1x1, residual
    dict(C=8, O=40, g=2, H=7, W=7, act="Sigmoid"),  # grouped, 20 channels per group
    dict(C=8, O=16, H=6, W=5, pads=(0, 1, 2, 0), act="LeakyRelu"),  # asymmetric: scratch epilogue
])
def test_dense_forms_agree_bitwise(tmp_path, cfg):
    """The oc form (output channels in the vector lanes) computes per output exactly what the blocked form
    does (bias first, taps in order): same bits at batch 1 and 5, 1 and 2 threads, every ISA."""
    rng = np.random.default_rng(abs(hash(str(cfg))) % 2**32)
    path = conv_model(tmp_path / "d.onnx", rng, density=1.0, **cfg)
    x = rng.standard_normal((5, cfg["C"], cfg["H"], cfg["W"])).astype(np.float32)
    for isa in ISAS:
        blocked = engine.load(path, isa=isa, cache=False, kernels="dense-blocked")
        oc = engine.load(path, isa=isa, cache=False, kernels="dense-oc")
        convs = sum(e["kind"] == "conv" for e in oc.plan())  # residual: two convs (one fused into the other)
        assert convs and [e.get("dense_form") for e in oc.plan() if e["kind"] == "conv"] == ["oc"] * convs
        assert [e.get("dense_form") for e in blocked.plan() if e["kind"] == "conv"] == ["blocked"] * convs
        want = blocked.run(x)
        close(want, run_reference(path, x))
        np.testing.assert_array_equal(oc.run(x), want)
        np.testing.assert_array_equal(oc.run(x[:1]), want[:1])
        two = engine.load(path, isa=isa, threads=2, cache=False, verify=False, kernels="dense-oc")
        np.testing.assert_array_equal(two.run(x), want)


def test_dense_form_choice(tmp_path, monkeypatch):
    """kernels='dense' times both forms per conv and keeps the faster; a grouped conv whose groups are narrower
    than half an oc unit has only the blocked form (a depthwise one on a small map has the channels-in-lanes
    form instead, tests/unit/test_engine_dense_dw.py); unknown modes are refused."""
    rng = np.random.default_rng(61)
    path = conv_model(tmp_path / "c.onnx", rng, C=16, O=32, H=8, W=8, density=1.0)
    e = next(p for p in engine.load(path, cache=False, kernels="dense").plan() if p["kind"] == "conv")
    assert e["kernel"] == "dense" and e["dense_form"] in ("blocked", "oc") and e["us"]["dense"] > 0
    # settled in the whole plan's run: both forms timed there, the faster kept
    t = e["us_in_plan"]
    assert set(t) == {"blocked", "oc"} and e["dense_form"] == min(t, key=t.get)
    grouped = conv_model(tmp_path / "g.onnx", rng, C=8, O=8, g=4, density=1.0)
    s = engine.load(grouped, cache=False, kernels="dense-oc")
    assert [p["dense_form"] for p in s.plan() if p["kind"] == "conv"] == ["blocked"]
    with pytest.raises(SparsekitError, match="kernels must be one of"):
        engine.load(path, cache=False, kernels="dense-fast")
    # auto: the settled form is cached with the layer's choice and reused as is
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = [p for p in engine.load(path).plan() if p["kind"] == "conv"][0]
    again = [p for p in engine.load(path).plan() if p["kind"] == "conv"][0]
    assert again["cached"] and not first["cached"] and again.get("dense_form") == first.get("dense_form")


@pytest.mark.parametrize("O", [5, 16, 150])  # under one panel, exactly one, several with a partial last one
def test_dense_fc_output_per_image_does_not_depend_on_batch_or_threads(tmp_path, monkeypatch, O):  # noqa: E741
    """Dense FC (weights in panels, outputs in the vector lanes): an image's outputs are the same bits at
    batch 1, inside a batch of 23 (register tiles of several images plus a remainder) and with 1-3 threads
    (threads split whole panels), on every ISA; and they match the float64 reference."""
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")  # split even this small a layer between threads
    rng = np.random.default_rng(O)
    path = fc_model(tmp_path / "f.onnx", rng, F=61, O=O, density=1.0)
    x = rng.standard_normal((23, 61)).astype(np.float32)
    ref = run_reference(path, x)
    for isa in ISAS:
        s = engine.load(path, threads=1, isa=isa, cache=False, kernels="dense")
        assert [e["kernel"] for e in s.plan() if e["kind"] == "fc"] == ["dense"]
        y = s.run(x)
        close(y, ref)
        one_by_one = np.concatenate([s.run(x[i:i + 1]) for i in range(len(x))])
        np.testing.assert_array_equal(y, one_by_one)
        for threads in (2, 3):
            st = engine.load(path, threads=threads, isa=isa, cache=False, kernels="dense")
            np.testing.assert_array_equal(st.run(x), y)  # two chunks: one per thread
            np.testing.assert_array_equal(st.run(x[:5]), y[:5])  # one chunk: the threads split its panels
