"""sparse-cpu: the per-op profiler (Session.profile / plan(profile=True)) and thread-count invariance."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_engine_graphs import conv_model

engine = pytest.importorskip("sparsekit.engine")
from sparsekit.engine import EngineError  # noqa: E402


@pytest.fixture
def conv_path(tmp_path):
    rng = np.random.default_rng(5)
    return conv_model(tmp_path / "c.onnx", rng, C=8, O=16, H=12, W=12, density=0.2, residual=True)


@pytest.mark.parametrize("batch,threads", [(1, 1), (4, 2), (1, 2)])
def test_profile_reports_every_op(conv_path, batch, threads):
    s = engine.load(conv_path, threads=1, cache=False)
    p = s.profile(batch=batch, threads=threads, seconds=0.02)
    plan = s.plan()
    assert (p["batch"], p["threads"]) == (batch, threads)
    assert [o["name"] for o in p["ops"]] == [e["name"] for e in plan]
    assert [o["kernel"] for o in p["ops"]] == [e["kernel"] for e in plan]
    assert p["runs"] >= 5
    assert all(o["us"] >= 0 for o in p["ops"])
    assert p["ops_us"] == pytest.approx(sum(o["us"] for o in p["ops"]), rel=1e-3, abs=1e-2)
    assert sum(o["share"] for o in p["ops"]) == pytest.approx(1.0)
    assert p["wall_us"] > 0
    assert p["overhead_us"] == pytest.approx(p["wall_us"] - p["ops_us"])


def test_plan_with_profile(conv_path):
    s = engine.load(conv_path, cache=False)
    plain = s.plan()
    assert all("measured_us" not in e for e in plain)
    prof = s.plan(profile=True, batch=2)
    assert len(prof) == len(plain)
    assert all(e["measured_us"] >= 0 and 0 <= e["measured_share"] <= 1 for e in prof)
    # the profiler leaves the session's results unchanged
    x = np.random.default_rng(0).standard_normal((2, 8, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(s.run(x), engine.load(conv_path, cache=False, verify=False).run(x))


def test_profile_bad_args(conv_path):
    s = engine.load(conv_path, cache=False)
    with pytest.raises(EngineError, match="batch >= 1"):
        s.profile(batch=0)
    with pytest.raises(EngineError, match="threads >= 1"):
        s.profile(threads=0)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_threads_give_identical_outputs(tmp_path, monkeypatch, batch):
    """1, 2 and 3 threads (image-parallel and, with the MAC threshold at 0, channel-parallel) agree bitwise."""
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")
    rng = np.random.default_rng(batch)
    path = conv_model(tmp_path / "c.onnx", rng, C=16, O=24, H=11, W=13, s=2, density=0.3, act="HardSwish")
    x = rng.standard_normal((batch, 16, 11, 13)).astype(np.float32)
    outs = [engine.load(path, threads=t, cache=False, verify=t == 1).run(x) for t in (1, 2, 3)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_op_table_is_defined_once():
    """Op / activation codes come from the native module; every node kind has one builder; the named conv
    parameter struct has exactly the native conv's parameter count."""
    from dataclasses import fields

    from sparsekit.engine import _lib
    from sparsekit.engine import planner as P

    ops, acts = P.native_codes()
    assert ops == dict(_lib().OP_CODES) and acts == dict(_lib().ACT_CODES)
    assert set(P.BUILDERS) == set(ops)
    assert len(set(ops.values())) == len(ops) and len(set(acts.values())) == len(acts)
    assert len(fields(P.ConvParams)) == _lib().CONV_PARAMS
