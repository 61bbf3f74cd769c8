"""sparse-cpu interleaved batch layout (images in the vector lanes, native conv_il / gap_il / pool_il): which
graphs qualify, parity with the numpy reference, bitwise identity with the planar layout per image (no FC:
sparse FC layers sum in a batch-dependent order in both layouts), batches that are not whole chunks of lanes,
threads 1/2/3 identical, every ISA."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.unit.test_engine_graphs import model, rand_weight

engine = pytest.importorskip("sparsekit.engine")
from sparsekit.engine.reference import run_reference  # noqa: E402

ISAS = engine.available_isas()


@pytest.fixture(autouse=True)
def _channel_parallel_always(monkeypatch):
    """One chunk with threads > 1 splits output channels even for tiny plans, so that path is tested."""
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> None:
    scale = max(1.0, float(np.max(np.abs(b))))
    err = float(np.max(np.abs(a.astype(np.float64) - b)))
    assert err <= tol * scale, f"max|diff| {err} > {tol * scale}"


def trunk_model(path, rng, C=3, O=8, H=11, W=13, k=3, s=1, pads=(1, 1, 1, 1), d=1, g=1, density=0.4,  # noqa: E741
                act="Relu", pool=None, head="flatten", se=False, concat=False) -> str:
    """conv A (the configuration) -> conv B 3x3 + Add(A) -> Relu -> [SE] -> [pool] -> [concat] -> head: flatten,
    or GAP -> flatten -> Gemm. ``se``: squeeze-excitation (GAP -> Sigmoid -> Mul(trunk, gate)); ``concat``: the
    trunk concatenated with itself (the graph then does not qualify)."""
    inits = {"wa": rand_weight(rng, (O, C // g, k, k), density), "ba": rng.standard_normal(O).astype(np.float32),
             "wb": rand_weight(rng, (O, O, 3, 3), density), "bb": rng.standard_normal(O).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], strides=[s, s], dilations=[d, d], group=g,
                              kernel_shape=[k, k], pads=list(pads)),
             helper.make_node(act, ["a"], ["a1"]),
             helper.make_node("Conv", ["a1", "wb", "bb"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["b", "a1"], ["c"]),
             helper.make_node("Relu", ["c"], ["t"])]
    if se:
        nodes += [helper.make_node("GlobalAveragePool", ["t"], ["sq"]), helper.make_node("Sigmoid", ["sq"], ["sg"]),
                  helper.make_node("Mul", ["t", "sg"], ["t2"])]
        nodes[-1].output[0] = "t2"
    last = "t2" if se else "t"
    if pool == "max":
        nodes.append(helper.make_node("MaxPool", [last], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
        last = "p"
    elif pool == "avg":
        nodes.append(helper.make_node("AveragePool", [last], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                                      pads=[1, 1, 1, 1], count_include_pad=0))
        last = "p"
    if concat:
        nodes.append(helper.make_node("Concat", [last, last], ["cc"], axis=1))
        last = "cc"
    if head == "flatten":
        nodes.append(helper.make_node("Flatten", [last], ["y"]))
    elif head == "gap-fc":
        inits["wf"] = rand_weight(rng, (7, O), 0.6)
        inits["bf"] = rng.standard_normal(7).astype(np.float32)
        nodes += [helper.make_node("GlobalAveragePool", [last], ["gp"]), helper.make_node("Flatten", ["gp"], ["f"]),
                  helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    else:  # the trunk itself is the output
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    return model(nodes, inits, (C, H, W), path)


GRID = [
    {},
    dict(s=2),
    dict(s=2, k=1, pads=(0, 0, 0, 0)),
    dict(s=3, H=14, W=10, pads=(2, 0, 1, 2)),
    dict(d=2, pads=(2, 2, 2, 2)),
    dict(k=5, pads=(2, 1, 2, 3), W=23),
    dict(C=8, g=8, O=8),  # depthwise
    dict(C=4, g=2, O=8, s=2),
    dict(act="Clip"),
    dict(act="HardSwish", W=1, H=3, k=1, pads=(0, 0, 0, 0)),
    dict(act="Sigmoid", pool="max", H=16, W=17),
    dict(pool="avg", W=9),
    dict(density=0.0),  # every conv without a non-zero: act(bias)
    dict(H=20, W=20, head="gap-fc"),  # GAP over 400 positions: the 8-sum order
    dict(se=True),
    dict(se=True, pool="max", head="gap-fc", act="Sigmoid"),
]


@pytest.mark.parametrize("cfg", GRID, ids=[str(i) for i in range(len(GRID))])
def test_interleaved_matches_planar_bitwise(tmp_path, cfg):
    rng = np.random.default_rng(abs(hash(str(cfg))) % 2**32)
    path = trunk_model(tmp_path / "t.onnx", rng, **cfg)
    C, H, W = cfg.get("C", 3), cfg.get("H", 11), cfg.get("W", 13)
    for isa, kernels in [(i, k) for i in ISAS for k in ("sparse", "dense-blocked")]:
        il = engine.load(path, isa=isa, cache=False, kernels=kernels, interleave=True)
        planar = engine.load(path, isa=isa, cache=False, kernels=kernels, interleave=False, verify=False)
        K = il.il_lanes
        assert K == engine.load(path, isa=isa, cache=False, verify=False)._engine.vector_width
        assert planar.il_lanes == 0
        x = rng.standard_normal((2 * K + 3, C, H, W)).astype(np.float32)
        ref = run_reference(path, x)
        y = il.run(x)
        close(y, ref)
        if cfg.get("head") != "gap-fc":  # no FC: the same bits per image in either layout, any batch
            np.testing.assert_array_equal(y, planar.run(x))
        for b in (1, K - 1, K, K + 1):  # whole chunks of lanes interleaved, the rest planar
            m = b - b % K
            want = y[:b] if cfg.get("head") != "gap-fc" else np.concatenate([y[:m], planar.run(x[m:b])])
            np.testing.assert_array_equal(il.run(x[:b]), want)
        for t in (2, 3):
            st = engine.load(path, threads=t, isa=isa, cache=False, verify=False, kernels=kernels, interleave=True)
            np.testing.assert_array_equal(st.run(x), y)
        prof = il.profile(batch=K)
        assert prof["layout"] == "interleaved" and prof["batch"] == K
        want = "sparse" if kernels == "sparse" else "dense"
        assert [o["kernel"] for o in prof["ops"] if o["kind"] == "conv"] == [want, want]
        assert il.profile(batch=1)["layout"] == "planar"


def test_interleaved_trunk_eligibility(tmp_path):
    from sparsekit.engine import planner as P

    rng = np.random.default_rng(0)
    ok = engine.load(trunk_model(tmp_path / "a.onnx", rng), cache=False, interleave=True, verify=False)
    assert ok.il_lanes > 0
    # a trunk tensor read by a Concat, or the trunk as the graph's output: planar only
    for name, kw in (("concat", dict(concat=True)), ("out", dict(head="none"))):
        s = engine.load(trunk_model(tmp_path / f"{name}.onnx", rng, **kw), cache=False, interleave=True)
        assert s.il_lanes == 0, name
    # the planner's rule on its own
    from sparsekit.engine.graph import load_graph

    g = load_graph(tmp_path / "concat.onnx")
    nodes, shapes, out = P.lower(g, g.input_shape[1:])
    assert P.interleaved_tensors(P.fuse(nodes, out, shapes), g.input_name, out, shapes) is None


def test_interleave_choice_is_timed_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    path = trunk_model(tmp_path / "t.onnx", rng, H=16, W=16, O=16)
    a = engine.load(path, cache=True)
    # the session's ISA and, unpinned, the next narrower vector ISA (AVX-512: AVX2's 8-image chunks) compete
    # ... each with and without row wavefronts (" op-by-op")
    narrower = {f"interleaved-{i}" for i in a.sparse_isas[1:2]}
    plans = {"interleaved"} | narrower
    assert set(a.interleave_us) == {"planar"} | plans | {p + " op-by-op" for p in plans}
    assert all(k in ("sparse", "dense") for k in a.il_kernels if k) and a.il_kernels.count(None) == 1
    il_us = {k: v for k, v in a.interleave_us.items() if k != "planar"}
    assert (a.il_lanes > 0) == (min(il_us.values()) < 0.95 * a.interleave_us["planar"])
    if a.il_lanes:  # the faster interleaved candidate, with its ISA's vector width as the chunk
        fastest = min(il_us, key=il_us.get)
        plan = fastest.removesuffix(" op-by-op")
        assert a.il_isa == (a.isa if plan == "interleaved" else plan.removeprefix("interleaved-"))
        assert a.il_row_chains == (plan == fastest)
        assert bool(a._il.row_chains()) == a.il_row_chains  # the trunk's two convs chain when it is on
        assert a.il_lanes == engine.load(path, isa=a.il_isa, cache=False, verify=False)._engine.vector_width
        assert a.profile(batch=a.il_lanes)["layout"] == "interleaved"
    b = engine.load(path, cache=True)
    assert b.interleave_us == a.interleave_us and b.il_lanes == a.il_lanes and b.il_isa == a.il_isa
    assert b.il_row_chains == a.il_row_chains
    pinned = engine.load(path, cache=False, isa=a.isa)  # a pinned ISA: no narrower candidate
    assert set(pinned.interleave_us) == {"planar", "interleaved", "interleaved op-by-op"}
    off = engine.load(path, cache=False, interleave=False)
    assert off.il_lanes == 0 and off.interleave_us == {}


def test_interleaved_memory_counted(tmp_path):
    rng = np.random.default_rng(2)
    path = trunk_model(tmp_path / "t.onnx", rng, H=12, W=12, O=16)
    x = rng.standard_normal((2 * 16, 3, 12, 12)).astype(np.float32)
    planar = engine.load(path, cache=False, interleave=False, kernels="sparse")
    il = engine.load(path, cache=False, interleave=True, kernels="sparse")
    planar.run(x), il.run(x)  # arenas are allocated on first use
    mp, mi = planar.memory(), il.memory()
    assert mi["weight_bytes"] > mp["weight_bytes"] and mi["arena_bytes"] > mp["arena_bytes"]


@pytest.mark.parametrize("cfg", [dict(C=8, O=16), dict(C=8, O=16, s=2), dict(C=8, g=2, O=8, k=5, pads=(2, 2, 2, 2))],
                         ids=["3x3", "stride2", "groups-5x5"])
@pytest.mark.parametrize("strip", [1, 5000])
def test_interleaved_input_channel_blocks(tmp_path, monkeypatch, cfg, strip):
    """Wide convs run their input channels in blocks (partial sums through the output): the same bits as one
    pass and as the planar layout, whatever the block size (1 channel per block at strip=1)."""
    from sparsekit.engine import planner as P

    monkeypatch.setattr(P, "IL_STRIP_BYTES", strip)
    rng = np.random.default_rng(7)
    path = trunk_model(tmp_path / "t.onnx", rng, **cfg)
    planar = engine.load(path, cache=False, kernels="sparse", interleave=False, verify=False)
    il = engine.load(path, cache=False, kernels="sparse", interleave=True)
    x = rng.standard_normal((2 * il.il_lanes + 1, cfg["C"], 11, 13)).astype(np.float32)
    np.testing.assert_array_equal(il.run(x), planar.run(x))
    close(il.run(x), run_reference(path, x))


def resblock_model(path, rng, O=8, H=12, W=10, k=3, d=1, density=0.4) -> str:  # noqa: E741
    """stem conv -> Relu (x0) -> conv1 (k x k, dilation d) -> Relu -> conv2 3x3 + Add(x0) -> Relu -> conv3 ->
    Relu -> Flatten: conv2 stores over x0 (its residual, conv1's input)."""
    p = d * (k - 1) // 2
    inits = {f"w{i}": rand_weight(rng, (O, 3 if i == 0 else O, k if i == 1 else 3, k if i == 1 else 3), density)
             for i in range(4)} | {f"b{i}": rng.standard_normal(O).astype(np.float32) for i in range(4)}
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["s"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["s"], ["x0"]),
             helper.make_node("Conv", ["x0", "w1", "b1"], ["a"], kernel_shape=[k, k], dilations=[d, d],
                              pads=[p, p, p, p]),
             helper.make_node("Relu", ["a"], ["t"]),
             helper.make_node("Conv", ["t", "w2", "b2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["b", "x0"], ["c"]),
             helper.make_node("Relu", ["c"], ["y0"]),
             helper.make_node("Conv", ["y0", "w3", "b3"], ["e"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["e"], ["f"]),
             helper.make_node("Flatten", ["f"], ["y"])]
    return model(nodes, inits, (3, H, W), path)


@pytest.mark.parametrize("cfg", [{}, dict(k=5, d=2, H=9, W=14), dict(H=1, W=3), dict(density=0.0)],
                         ids=["3x3", "5x5-dilated", "one-row", "empty"])
def test_row_chains_match_sequential_bitwise(tmp_path, cfg):
    """Consecutive interleaved convs run as a row wavefront (native exec_row_chain): conv2 stores over its
    residual, which conv1 reads, so its rows wait until conv1 has read past them; the memory plan may reuse a
    dead tensor's block inside the chain. The outputs are bit for bit those of running the convs one after the
    other, on every ISA, sparse and dense, 1 and 2 threads, and match the reference."""
    rng = np.random.default_rng(11)
    path = resblock_model(tmp_path / "r.onnx", rng, **cfg)
    H, W = cfg.get("H", 12), cfg.get("W", 10)
    for isa, kernels in [(i, k) for i in ISAS for k in ("sparse", "dense-blocked")]:
        for threads in (1, 2):
            s = engine.load(path, isa=isa, cache=False, kernels=kernels, interleave=True, threads=threads,
                            verify=False)
            il = s._il
            assert il.row_chains() == [(0, 4)]  # the four convs (Flatten ends the chain)
            x = rng.standard_normal((2 * s.il_lanes + 3, 3, H, W)).astype(np.float32)
            y = s.run(x)
            il.set_row_chains(False)
            assert il.row_chains() == []
            np.testing.assert_array_equal(y, s.run(x))
            close(y, run_reference(path, x))
