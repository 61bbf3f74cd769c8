"""openvino-cpu: rows in bench when installed, a reasoned skip when not, same function as ORT, f32 pinned.

No timing is asserted; only which rows exist, what they compute and how absence is reported.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sparsekit.bench import runtimes
from sparsekit.cli.main import app
from tests.unit._deploy_runs import make_run

FAST = ["--warmup", "1", "--min-time", "0.02", "--accuracy-limit", "64", "--batch", "1,4"]
needs_openvino = pytest.mark.skipif(not runtimes._installed("openvino"),
                                    reason="openvino is not installed (pip install 'sparsekit[openvino]')")


@pytest.fixture(scope="module")
def l300(tmp_path_factory):
    return make_run(tmp_path_factory, "lenet300", sparsity=0.95)


@pytest.fixture(scope="module")
def l300_onnx(l300, tmp_path_factory):
    from sparsekit.export import export_run

    path = tmp_path_factory.mktemp("ov") / "l300.onnx"
    export_run(str(l300), str(path))
    return path


@pytest.fixture
def without(monkeypatch):
    """Pretend an optional package is not installed."""

    def hide(package: str) -> None:
        real = runtimes._installed
        monkeypatch.setattr(runtimes, "_installed", lambda p: False if p == package else real(p))

    return hide


@needs_openvino
def test_openvino_computes_what_ort_computes_at_f32(l300_onnx):
    from sparsekit.bench.runtime_openvino import compile_config

    cfg = compile_config(2)
    assert cfg["INFERENCE_PRECISION_HINT"] == "f32" and cfg["PERFORMANCE_HINT"] == "LATENCY"
    assert cfg["INFERENCE_NUM_THREADS"] == 2
    dense = runtimes.dense_runtimes()
    assert {"ort-cpu", "openvino-cpu"} <= set(dense)
    x = np.random.default_rng(0).standard_normal((5, 1, 16, 16)).astype(np.float32)
    ref = dense["ort-cpu"].load(str(l300_onnx), 1)(x)
    run = dense["openvino-cpu"].load(str(l300_onnx), 1)
    y1, y2 = run(x), run(x[:2])  # dynamic batch, and the first result is not overwritten by the second
    np.testing.assert_allclose(y1, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y2, ref[:2], rtol=1e-4, atol=1e-5)


@needs_openvino
def test_openvino_rows_in_bench_next_to_ort(l300, tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", str(l300), "--runtime", "ort-cpu,openvino-cpu", "--json", str(out), *FAST])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    rows = {(x["runtime"], x["variant"], x["batch"]): x for x in rep["rows"]}
    assert set(rows) == {(rt, v, b) for rt in ("ort-cpu", "openvino-cpu") for v in ("dense", "ticket") for b in (1, 4)}
    for b in (1, 4):  # the same function: the same test accuracy on both runtimes
        for v in ("dense", "ticket"):
            assert rows[("openvino-cpu", v, b)]["accuracy"] == pytest.approx(rows[("ort-cpu", v, b)]["accuracy"])
    best = {s["batch"]: s for s in rep["best_dense"]}
    assert set(best) == {1, 4}
    for b, s in best.items():
        assert set(s["dense_p50_ms"]) == {"ort-cpu", "openvino-cpu"}
        assert s["runtime"] == min(s["dense_p50_ms"], key=s["dense_p50_ms"].get)
        assert rows[("openvino-cpu", "ticket", b)]["best_dense_runtime"] == s["runtime"]
    assert rep["environment"]["versions"]["openvino"]


def test_missing_openvino_is_skipped_with_reason_or_refused_when_asked(without, l300):
    without("openvino")
    from sparsekit.bench.core import select_runtimes

    chosen, skipped = select_runtimes(None)
    assert "openvino-cpu" not in {c.name for c in chosen} and "ort-cpu" in {c.name for c in chosen}
    reason = next(s["reason"] for s in skipped if s["runtime"] == "openvino-cpu")
    assert "pip install 'sparsekit[openvino]'" in reason
    assert "openvino-cpu" not in runtimes.dense_runtimes()
    r = CliRunner().invoke(app, ["bench", str(l300), "--runtime", "openvino-cpu"])
    assert r.exit_code == 2 and "sparsekit[openvino]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_list_runtimes_says_whether_openvino_is_installed(without):
    r = CliRunner().invoke(app, ["list", "runtimes"])
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("openvino-cpu"))
    assert ("[installed]" in line) == runtimes._installed("openvino")
    without("openvino")
    line = next(ln for ln in CliRunner().invoke(app, ["list", "runtimes"]).stdout.splitlines()
                if ln.startswith("openvino-cpu"))
    assert "[not installed: openvino is not installed (pip install 'sparsekit[openvino]')]" in line


@needs_openvino
def test_latency_budget_can_be_measured_on_openvino():
    import torch

    from sparsekit.bench.latency_table import _cache_key, time_model
    from sparsekit.budget import parse_budget

    assert parse_budget("latency=1", "openvino-cpu").runtime == "openvino-cpu"
    ms = time_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8)), (1, 4, 4), "openvino-cpu", 2, 1)
    assert np.isfinite(ms) and ms > 0  # a measurement happened on OpenVINO, not a fallback
    assert _cache_key("openvino-cpu", 2, 1)["runtime_version"] == runtimes.RUNTIMES.get("openvino-cpu").version()


@needs_openvino
def test_advise_times_the_ticket_on_every_installed_dense_runtime(l300, monkeypatch):
    from sparsekit.bench import advise as advise_mod

    monkeypatch.setattr(advise_mod, "_BLOCK_S", 0.001)
    monkeypatch.setattr(advise_mod, "_BLOCKS", 1)
    monkeypatch.setattr(advise_mod, "_engine_layers", lambda *a: None)  # sparse-cpu: tests/unit/test_advise.py
    res = advise_mod.advise_run(str(l300))
    dense = res["dense_runtimes"]
    assert set(dense["us"]) | set(dense["failed"]) == set(runtimes.dense_runtimes())
    assert "openvino-cpu" in dense["us"] and set(dense["us"]["openvino-cpu"]) == {"1", "32"}
    for b, name in dense["fastest"].items():
        assert dense["us"][name][b] == min(t[b] for t in dense["us"].values())
    assert f"fastest dense runtime here: {dense['fastest']['1']}" in res["summary"]
