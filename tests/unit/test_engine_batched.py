"""sparse-cpu image-batched dense convs (native conv_dense_multi): small-map stride-1 convs at batch > 1 tile
across the images of a chunk. Same per-lane arithmetic as the per-image kernel, so the batch grouping never
changes a result: batched == per-image == batch 1, bit for bit, on every ISA and thread count."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_engine_graphs import conv_model

engine = pytest.importorskip("sparsekit.engine")
from sparsekit.engine.reference import run_reference  # noqa: E402

from sparsekit.engine import planner as P  # noqa: E402

ISAS = engine.available_isas()

# maps small enough (flat output L <= 4 vectors of the narrowest ISA) for the session to chunk images
SMALL = [
    dict(k=1, C=13, O=19, H=3, W=3, pads=(0, 0, 0, 0)),  # 1x1 GEMM, L = 9: a tail vector per image
    dict(k=1, C=29, O=7, H=3, W=5, pads=(0, 0, 0, 0), act=None, bias=False),
    dict(k=3, C=7, O=13, H=3, W=3),  # padded rows: the epilogue masks the padding columns
    dict(k=3, C=6, O=6, g=6, H=3, W=3, act="Clip"),  # depthwise
    dict(k=5, C=5, O=5, g=5, H=2, W=2, pads=(2, 2, 2, 2), act="HardSwish"),
    dict(k=3, g=3, C=9, O=15, H=3, W=3, act="Sigmoid"),  # grouped, run-time activation
    dict(k=1, C=12, O=20, H=3, W=3, pads=(0, 0, 0, 0), residual=True),
]


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> None:
    scale = max(1.0, float(np.max(np.abs(b))))
    err = float(np.max(np.abs(a.astype(np.float64) - b)))
    assert err <= tol * scale, f"max|diff| {err} > {tol * scale}"


def dense_session(path, isa, threads=1, batched=True):
    """kernels='dense-blocked' (the form the batched tiles belong to) with the image-batched tiles forced on (or
    off) for every candidate conv (the planner would pick per op by timing, which a test cannot predict)."""
    s = engine.load(path, threads=threads, isa=isa, cache=False, verify=False, kernels="dense-blocked")
    for i, e in enumerate(s.plan()):
        if e["kind"] == "conv":
            s._engine.set_batched(i, batched)
    return s


@pytest.mark.parametrize("cfg", SMALL, ids=[str(i) for i in range(len(SMALL))])
def test_batched_dense_matches_per_image_bitwise(tmp_path, cfg):
    rng = np.random.default_rng(7 + len(str(cfg)))
    cfg = dict(cfg)
    C, H, W = cfg.pop("C"), cfg.pop("H"), cfg.pop("W")
    path = conv_model(tmp_path / "m.onnx", rng, C=C, H=H, W=W, density=1.0, **cfg)
    x = rng.standard_normal((19, C, H, W)).astype(np.float32)  # 2 full chunks + a partial one
    ref = run_reference(path, x)
    for isa in ISAS:
        s = dense_session(path, isa)
        assert s.chunk > 1  # small maps: several images per chunk, so the batched kernel runs
        y = s.run(x)
        close(y, ref)
        per_image = np.concatenate([s.run(x[i:i + 1]) for i in range(len(x))])
        np.testing.assert_array_equal(y, per_image)
        np.testing.assert_array_equal(y, dense_session(path, isa, batched=False).run(x))
        for t in (2, 3):
            np.testing.assert_array_equal(dense_session(path, isa, threads=t).run(x), y)


def test_plan_reports_batched_only_for_candidates(tmp_path):
    rng = np.random.default_rng(3)
    small = conv_model(tmp_path / "small.onnx", rng, C=8, O=16, H=3, W=3, density=1.0)
    s = engine.load(small, cache=False, verify=False, kernels="dense")
    conv = [e for e in s.plan() if e["kind"] == "conv"]
    assert conv and all(isinstance(e["batched"], bool) for e in conv)  # chosen by timing: either value
    big = conv_model(tmp_path / "big.onnx", rng, C=4, O=8, H=40, W=40, density=1.0)  # one image per chunk
    s = engine.load(big, cache=False, verify=False, kernels="dense")
    assert s.chunk == 1
    assert [e["batched"] for e in s.plan() if e["kind"] == "conv"] == [False]
    stride2 = conv_model(tmp_path / "s2.onnx", rng, C=8, O=8, H=6, W=6, s=2, density=1.0)
    s = engine.load(stride2, cache=False, verify=False, kernels="dense")
    assert [e["batched"] for e in s.plan() if e["kind"] == "conv"] == [False]


def test_batched_candidate_by_map_size():
    base = dict(inp=0, out=1, res=-1, O=8, Cg=8, groups=1, KH=1, KW=1, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0,
                pb=0, pr=0, act=0, hq=0, gofs=0, ntaps=8, nblk=2, has_bias=1, phases=1, s2_direct=0)
    small = P.ConvParams(**base, Ho=3, Wo=3, mode=0, wrow=3).ip()
    assert P.batched_candidate(small, 8)
    assert not P.batched_candidate(P.ConvParams(**base, Ho=3, Wo=3, mode=1, wrow=3).ip(), 8)  # stride 2
    wide = P.ConvParams(**base, Ho=12, Wo=12, mode=0, wrow=12).ip()  # L = 144 > 8 vectors of 8
    assert not P.batched_candidate(wide, 8)
    assert P.batched_candidate(wide, 32)


@pytest.mark.parametrize("cfg", [SMALL[0], SMALL[3], SMALL[6]], ids=["gemm", "depthwise", "residual"])
def test_batched_chunks_keep_blocked_weights_next_to_oc(tmp_path, monkeypatch, cfg):
    """A small-map conv whose chunks run image-batched tiles (blocked weights) while one image runs the oc form
    keeps both formats (only those): batch 1 and a chunked batch give the blocked session's bits, and the
    engine runs either variant but refuses the freed sparse one."""
    from sparsekit_engine.session import DENSE_FORMS, Session

    monkeypatch.setattr(Session, "_batched_faster", lambda self, *a, **k: self.chunk > 1)
    rng = np.random.default_rng(11 + len(str(cfg)))
    cfg = dict(cfg)
    C, H, W = cfg.pop("C"), cfg.pop("H"), cfg.pop("W")
    path = conv_model(tmp_path / "m.onnx", rng, C=C, H=H, W=W, density=1.0, **cfg)
    x = rng.standard_normal((19, C, H, W)).astype(np.float32)
    for isa in ISAS:
        s = engine.load(path, isa=isa, cache=False, verify=False, kernels="dense-oc")
        assert s.chunk > 1
        conv = [(i, e) for i, e in enumerate(s.plan()) if e["kind"] == "conv"]
        assert conv and all(e["batched"] and e["dense_form"] == "oc" for _, e in conv), isa
        for i, _ in conv:
            for v in DENSE_FORMS.values():
                assert s._engine.time_op(i, v, 1, 1, 1) > 0
            with pytest.raises(ValueError, match="freed"):
                s._engine.time_op(i, 0, 1, 1, 1)
        want = dense_session(path, isa, batched=False).run(x)
        close(want, run_reference(path, x))
        np.testing.assert_array_equal(s.run(x), want)
        np.testing.assert_array_equal(s.run(x[:1]), want[:1])
        # once the blocked weights are freed the chunks cannot take the batched tiles
        s._engine.keep_variant(conv[0][0], DENSE_FORMS["oc"])
        with pytest.raises(ValueError, match="freed"):
            s._engine.set_batched(conv[0][0], True)
        np.testing.assert_array_equal(s.run(x), want)
