"""sparse-cpu GlobalAveragePool / ReduceMean (engine.cpp exec_gap): maps below and above the 256-float
switch to 8 running sums, unpadded (one run per channel) and padded input layouts (row by row), against the
float64 reference; the same bits on every ISA, thread count and batch grouping (the sum order is fixed)."""

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
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")


@pytest.mark.parametrize("hw", [(5, 7), (16, 16), (23, 37)])
@pytest.mark.parametrize("padded", [False, True])
def test_gap(tmp_path, hw, padded):
    rng = np.random.default_rng(3)
    C = 6
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["gf"], axis=1)]
    inits = {}
    out = "gf"
    if padded:  # a padded conv also reads x, so x is stored with a zero ring: GAP sums row by row
        inits["w"] = rand_weight(rng, (C, C, 3, 3), 1.0)
        nodes += [helper.make_node("Conv", ["x", "w"], ["z"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="c"),
                  helper.make_node("ReduceMean", ["z"], ["m"], axes=[2, 3], keepdims=1, name="rm"),
                  helper.make_node("Flatten", ["m"], ["mf"], axis=1),
                  helper.make_node("Concat", ["gf", "mf"], ["y"], axis=1)]
        out = "y"
    else:
        nodes[-1] = helper.make_node("Flatten", ["g"], ["y"], axis=1)
        out = "y"
    path = model(nodes, inits, (C, *hw), tmp_path / "g.onnx", out_name=out)
    # an offset makes the summation order visible in the low bits
    x = (rng.standard_normal((3, C, *hw)) + 100.0).astype(np.float32)
    ref = run_reference(path, x)
    first = None
    for isa in ISAS:
        ys = []
        for threads in (1, 2):
            s = engine.load(path, threads=threads, isa=isa, cache=False, verify=False)
            y = s.run(x)
            assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))
            np.testing.assert_array_equal(s.run(x[2:3]), y[2:3])
            ys.append(y)
        np.testing.assert_array_equal(ys[1], ys[0])
        # the GAP of x itself (first C columns) is not ISA code: the same bits everywhere (the conv
        # feeding the ReduceMean rounds per ISA, so only its thread / batch grouping is compared)
        first = ys[0] if first is None else first
        np.testing.assert_array_equal(ys[0][:, :C], first[:, :C])


@pytest.mark.parametrize("hw", [(3, 3), (6, 6), (5, 7)])
def test_gap_small_maps_many_channels(tmp_path, hw):
    """Maps under 256 floats sum 8 channels at once (full blocks and a remainder, split across threads):
    each channel's result is the one-chain float32 sum in row-major order, divided by H * W."""
    rng = np.random.default_rng(5)
    C = 19  # two blocks of 8 and a remainder of 3; at 2 threads the halves start off a block boundary
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], axis=1)]
    path = model(nodes, {}, (C, *hw), tmp_path / "g.onnx", out_name="y")
    x = (rng.standard_normal((2, C, *hw)) + 100.0).astype(np.float32)
    want = np.empty((2, C), np.float32)
    for n in range(2):
        for c in range(C):
            s = np.float32(0.0)
            for v in x[n, c].reshape(-1):
                s = np.float32(s + v)
            want[n, c] = np.float32(s / np.float32(hw[0] * hw[1]))
    for threads in (1, 2):
        s = engine.load(path, threads=threads, cache=False, verify=False)
        np.testing.assert_array_equal(s.run(x), want)
