"""advise: one recommendation per masked layer; convs never CSR; whole free channels -> structured."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparsekit.bench import advise as advise_mod
from sparsekit.cli.main import app
from tests.unit._deploy_runs import make_run


@pytest.fixture(autouse=True)
def _quick_timing(monkeypatch):
    monkeypatch.setattr(advise_mod, "_BLOCK_S", 0.001)
    monkeypatch.setattr(advise_mod, "_BLOCKS", 1)


def test_advise_linear_layers_get_a_measured_choice(tmp_path_factory, tmp_path):
    run = make_run(tmp_path_factory, "lenet300", sparsity=0.95)
    out = tmp_path / "a.json"
    r = CliRunner().invoke(app, ["advise", str(run), "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert [x["name"] for x in res["layers"]] == ["1", "3", "5"]
    for layer in res["layers"]:
        assert layer["recommendation"] in ("csr", "dense", "structured", "sparse-cpu")
        if layer["recommendation"] == "sparse-cpu":  # only on the engine's own measurement
            assert layer["engine"]["sparse_speedup"] >= advise_mod.ADVISE_MIN_GAIN
        assert layer["batch1"]["dense_us"] > 0 and layer["batch32"]["csr_us"] > 0
        if layer["recommendation"] == "csr":
            assert min(layer["batch1"]["csr_speedup"], layer["batch32"]["csr_speedup"]) >= advise_mod.ADVISE_MIN_GAIN
    assert res["summary"]
    if res["engine"] is not None:  # sparse-cpu built: per-layer sparse vs dense kernel timings
        assert res["engine"]["available"] and len(res["engine"]["layers"]) == 3
        assert all(x["engine"]["sparse_us"] > 0 and x["engine"]["dense_us"] > 0 for x in res["layers"])


def test_advise_convs_structured_or_dense(tmp_path_factory):
    run = make_run(tmp_path_factory, "resnet20", "synthetic:3x16x16", 0.5, granularity="channel")
    res = advise_mod.advise_run(str(run))
    convs = [x for x in res["layers"] if x["kind"] == "Conv2d"]
    assert convs and all(x["recommendation"] in ("structured", "dense", "sparse-cpu") for x in convs)
    assert any(x["recommendation"] == "structured" and x["free_channels"] > 0 for x in convs)


def test_advise_errors(tmp_path):
    r = CliRunner().invoke(app, ["advise", str(tmp_path / "missing")])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
