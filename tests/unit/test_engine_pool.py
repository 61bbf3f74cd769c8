"""sparse-cpu MaxPool / AveragePool: the vectorized interior + clipped border path (engine.cpp exec_pool,
KernelTable::pool_rows) against a float32 emulation of the tap-by-tap definition, bit for bit (max: the
first maximum by `v > m` from -inf, so +-0 ties keep the first tap and NaN taps are skipped; avg: the valid
taps summed from +0 in (kh, kw) order, divided by the count or, with count_include_pad, the clipped span),
and against the float64 numpy reference. Odd shapes, kernels 2/3/5, strides 1/2/3, asymmetric pads 0-2,
dilation, ceil_mode, batch 1 and 3, threads 1 and 2, every ISA."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.unit.test_engine_graphs import model

engine = pytest.importorskip("sparsekit.engine")
from sparsekit.engine.reference import _pads_2d, pool_out_dim, run_reference  # noqa: E402

ISAS = engine.available_isas()
SHAPE = (3, 23, 37)  # C, H, W: output rows of 8-37 columns (vector body + overlapping tail) and short ones

GRID = [
    dict(op="MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),  # resnet / densenet stem
    dict(op="MaxPool", kernel_shape=[2, 2], strides=[1, 1]),
    dict(op="MaxPool", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]),
    dict(op="MaxPool", kernel_shape=[3, 3], strides=[3, 3], pads=[0, 1, 2, 0]),
    dict(op="MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[2, 0, 1, 2], dilations=[2, 2]),
    dict(op="MaxPool", kernel_shape=[2, 3], strides=[1, 2], pads=[1, 0, 0, 1], dilations=[1, 2]),
    dict(op="MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),  # squeezenet
    dict(op="MaxPool", kernel_shape=[3, 2], strides=[2, 1], pads=[1, 1, 2, 1], ceil_mode=1),
    dict(op="AveragePool", kernel_shape=[2, 2], strides=[2, 2]),  # densenet transitions
    dict(op="AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(op="AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(op="AveragePool", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 1, 0, 2], count_include_pad=1),
    dict(op="AveragePool", kernel_shape=[3, 2], strides=[3, 2], pads=[0, 1, 2, 1]),
    dict(op="AveragePool", kernel_shape=[3, 3], strides=[3, 3], pads=[1, 2, 2, 1], ceil_mode=1,
         count_include_pad=1),
]


@pytest.fixture(autouse=True)
def _channel_parallel_always(monkeypatch):
    """Batch-1 runs with threads=2 split channels even for these tiny plans, so that path runs too."""
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")


def emulate(x: np.ndarray, attrs: dict, is_max: bool) -> np.ndarray:
    """float32, tap by tap in (kh, kw) order, skipping padded taps: the engine's definition of a pool."""
    k = attrs["kernel_shape"]
    s = attrs.get("strides", [1, 1])
    d = attrs.get("dilations", [1, 1])
    cm, cip = bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0))
    N, C, H, W = x.shape
    pt, pl, pb, pr = _pads_2d(attrs, (H, W), tuple(k), tuple(s), tuple(d))
    Ho = pool_out_dim(H, k[0], s[0], d[0], pt, pb, cm)
    Wo = pool_out_dim(W, k[1], s[1], d[1], pl, pr, cm)
    hs = np.arange(Ho)[:, None] * s[0] - pt  # window origins, (Ho, 1) and (1, Wo)
    ws = np.arange(Wo)[None, :] * s[1] - pl
    acc = np.full((N, C, Ho, Wo), -np.inf if is_max else 0.0, np.float32)
    cnt = np.zeros((Ho, Wo), np.int64)
    for kh in range(k[0]):
        for kw in range(k[1]):
            h, w = hs + kh * d[0], ws + kw * d[1]
            ok = (h >= 0) & (h < H) & (w >= 0) & (w < W)
            v = x[:, :, np.clip(h, 0, H - 1), np.clip(w, 0, W - 1)]
            with np.errstate(invalid="ignore"):
                acc = np.where(ok & (v > acc), v, acc) if is_max else np.where(ok, acc + v, acc)
            cnt += ok
    if is_max:
        return acc
    div = cnt
    if cip:
        he = np.minimum(hs + (k[0] - 1) * d[0] + 1, H + pb)
        we = np.minimum(ws + (k[1] - 1) * d[1] + 1, W + pr)
        div = (he - hs) * (we - ws)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(div > 0, acc / np.maximum(div, 1).astype(np.float32), np.float32(0)).astype(np.float32)


def same_bits(a: np.ndarray, b: np.ndarray) -> None:
    """Equal bit for bit (sign of zero included); any NaN matches any NaN."""
    assert a.shape == b.shape
    na, nb = np.isnan(a), np.isnan(b)
    np.testing.assert_array_equal(na, nb)
    bad = (a.view(np.uint32) != b.view(np.uint32)) & ~na
    assert not bad.any(), f"{int(bad.sum())} of {a.size} differ, first at {np.argwhere(bad)[0]}"


def inputs(rng: np.random.Generator, n: int, special: bool) -> np.ndarray:
    x = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    ties = rng.random(x.shape) < 0.3  # +-0 and +-1 ties: which tap wins shows in the sign of a zero
    x[ties] = rng.choice(np.array([0.0, -0.0, 1.0, -1.0], np.float32), int(ties.sum()))
    if special:
        odd = rng.random(x.shape) < 0.05
        x[odd] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), int(odd.sum()))
    return x


def _id(p: dict) -> str:
    return "-".join(v if k == "op" else k[0] + ("x".join(map(str, v)) if isinstance(v, list) else str(v))
                    for k, v in p.items())


@pytest.mark.parametrize("pool", GRID, ids=_id)
def test_pool_bit_exact(tmp_path, pool):
    rng = np.random.default_rng(17)
    attrs = dict(pool)
    op = attrs.pop("op")
    path = model([helper.make_node(op, ["x"], ["y"], **attrs)], {}, SHAPE, tmp_path / "p.onnx")
    x, xs = inputs(rng, 3, special=False), inputs(rng, 3, special=True)
    ref = run_reference(path, x)
    want, want_s = emulate(x, attrs, op == "MaxPool"), emulate(xs, attrs, op == "MaxPool")
    assert np.max(np.abs(want - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))  # the emulation is a pool
    for isa in ISAS:
        for threads in (1, 2):
            s = engine.load(path, threads=threads, isa=isa, cache=False, verify=False)
            same_bits(s.run(x), want)
            same_bits(s.run(xs), want_s)
            same_bits(s.run(xs[1:2]), want_s[1:2])
