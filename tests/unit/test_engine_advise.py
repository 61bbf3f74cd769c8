"""`sparsekit advise --runtime sparse-cpu`: where the engine's time goes, per op (the engine's profiler)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparsekit.bench import advise as advise_mod
from sparsekit.cli.main import app
from tests.unit._deploy_runs import make_run

pytest.importorskip("sparsekit_engine._native")  # the native module (sparsekit.engine is sparsekit_engine)


@pytest.fixture(autouse=True)
def _quick_timing(monkeypatch):
    monkeypatch.setattr(advise_mod, "_BLOCK_S", 0.001)
    monkeypatch.setattr(advise_mod, "_BLOCKS", 1)


def test_advise_runtime_sparse_cpu_shows_engine_profile(tmp_path_factory, tmp_path):
    run = make_run(tmp_path_factory, "lenet300", sparsity=0.95)
    out = tmp_path / "a.json"
    r = CliRunner().invoke(app, ["advise", str(run), "--runtime", "sparse-cpu", "--json", str(out)])
    assert r.exit_code == 0, r.output
    prof = json.loads(out.read_text())["engine_profile"]
    assert prof["batch"] == 1 and prof["wall_us"] > 0
    assert {o["kind"] for o in prof["ops"]} >= {"fc"}
    us = [o["us"] for o in prof["ops"]]
    assert us == sorted(us, reverse=True)
    assert "slowest ops" in r.output


def test_advise_runtime_other_is_usage_error(tmp_path):
    r = CliRunner().invoke(app, ["advise", str(tmp_path), "--runtime", "ort-cpu"])
    assert r.exit_code == 2 and "sparse-cpu" in r.stderr and len(r.stderr.strip().splitlines()) == 1
