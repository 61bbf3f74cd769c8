"""Accuracy of the vector Sigmoid / SiLU conv epilogue (native exp_v: shifter rounding + degree-5 polynomial)
against the exact functions, over a wide input range, on every ISA and both conv kernels.

The conv is an identity 1x1 (weight 1, bias 0), so its output is the activation of the input itself."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.unit.test_engine_graphs import model

engine = pytest.importorskip("sparsekit.engine")

ISAS = engine.available_isas()
# the engine's stated bound for these epilogues (kernels_impl.inc, exp_v): relative error of e^x 2.4e-7,
# so sigmoid / SiLU relative error <= 2.4e-7 + one rounding; absolute floor for results below ~1e-38
# (inputs past the exp clamp: sigmoid(-88) is 6e-39 exactly, the kernel gives <= 1.2e-38, and SiLU scales
# that by |x| <= 1e4)
RTOL, ATOL = 4e-7, 1e-33


def identity_conv(path, act: str) -> str:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], name="conv0", kernel_shape=[1, 1])]
    if act == "Silu":
        nodes += [helper.make_node("Sigmoid", ["z"], ["s"], name="sig0"),
                  helper.make_node("Mul", ["z", "s"], ["y"], name="mul0")]
    else:
        nodes.append(helper.make_node(act, ["z"], ["y"], name="act0"))
    inits = {"w": np.ones((1, 1, 1, 1), np.float32), "b": np.zeros(1, np.float32)}
    return model(nodes, inits, (1, 32, 32), path)


def inputs() -> np.ndarray:
    """1024 values: a dense sweep of [-100, 100], the exp clamp edges, +-1e4, zeros and denormals."""
    special = np.array([0.0, -0.0, 88.0, -88.0, 88.38, -88.38, 87.34, -87.34, 89.0, -89.0, 1e4, -1e4,
                        3e38, -3e38, 1e-30, -1e-30, 1e-40, -1e-40, 1.4e-45, -1.4e-45, 20.0, -20.0, 16.6, -16.6],
                       np.float32)
    rng = np.random.default_rng(5)
    rest = 1024 - len(special) - 600
    x = np.concatenate([special, np.linspace(-100, 100, 600, dtype=np.float32),
                        rng.uniform(-12, 12, rest).astype(np.float32)])
    return x.reshape(1, 1, 32, 32)


def exact(x: np.ndarray, act: str) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-x))
    return s if act == "Sigmoid" else x * s


@pytest.mark.parametrize("act", ["Sigmoid", "Silu"])
@pytest.mark.parametrize("kernels", ["dense", "sparse"])
def test_sigmoid_silu_accuracy_wide_range(tmp_path, act, kernels):
    path = identity_conv(tmp_path / "m.onnx", act)
    x = inputs()
    ref = exact(x, act)
    for isa in ISAS:
        s = engine.load(path, isa=isa, cache=False, verify=False, kernels=kernels)
        assert [e["fused"] != [] for e in s.plan() if e["kind"] == "conv"] == [True]  # act in the epilogue
        y = s.run(x).astype(np.float64)
        assert np.all(np.isfinite(y)), isa
        err = np.abs(y - ref)
        bad = err > RTOL * np.abs(ref) + ATOL
        assert not bad.any(), f"{isa} {act}: x={x.reshape(-1)[bad.reshape(-1)][:5]} err={err[bad][:5]}"
        if act == "Sigmoid":
            assert np.all((y >= 0) & (y <= 1)), isa


@pytest.mark.parametrize("act", ["Sigmoid", "Silu"])
def test_sigmoid_silu_infinities_and_nan(tmp_path, act):
    path = identity_conv(tmp_path / "m.onnx", act)
    x = np.zeros((1, 1, 32, 32), np.float32)
    x.reshape(-1)[:4] = [np.inf, -np.inf, np.nan, 1.0]
    for isa in ISAS:
        y = engine.load(path, isa=isa, cache=False, verify=False, kernels="dense").run(x).reshape(-1)
        assert np.isnan(y[2]), isa  # NaN propagates
        if act == "Sigmoid":
            assert y[0] == 1.0 and 0.0 <= y[1] <= 1e-37, isa  # saturates (-inf: 1 / 2.4e38, the exp clamp)
        else:
            assert y[0] == np.inf and abs(y[1]) <= 1e-30, isa  # SiLU(+inf) = +inf, SiLU(-inf) ~ 0
        assert np.all(y[3:] == y[3:])  # the NaN lane does not leak into its neighbours
