"""End to end on real Fashion-MNIST with a small budget: prune -> info -> export -> bench -> check."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparsekit.cli.main import app
from tests.conftest import has_fashion

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not has_fashion(), reason="Fashion-MNIST not installed")]
runner = CliRunner()


def ok(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return r


def test_lenet300_magnitude_99_end_to_end(tmp_path):
    run = tmp_path / "l300"
    ok(["prune", "--model", "lenet300", "--data", "fashion-mnist", "--method", "magnitude", "--sparsity", "0.99",
        "--pretrain-epochs", "1", "--finetune-epochs", "1", "--batch-size", "256", "--out", str(run),
        "--json", str(tmp_path / "prune.json")])
    result = json.loads((tmp_path / "prune.json").read_text())
    assert result["sparsity"] == pytest.approx(0.99, abs=1e-12)
    assert result["accuracy"] > 0.5 and result["dense_accuracy"] > 0.75  # 10 classes: chance is 0.1
    info = json.loads(ok(["info", str(run), "--json", "-"]).stdout)
    assert info["total"]["kept"] == info["total"]["numel"] - round(0.99 * info["total"]["numel"])
    assert "99.00%" in ok(["info", str(run)]).stdout
    onnx_path = tmp_path / "l300.onnx"
    ok(["export", str(run), "--out", str(onnx_path)])
    assert onnx_path.is_file()
    report = tmp_path / "bench.json"
    ok(["bench", str(run), "--data", "fashion-mnist", "--runtime", "ort-cpu", "--batch", "1",
        "--warmup", "2", "--min-time", "0.05", "--accuracy-limit", "2000", "--json", str(report)])
    rows = json.loads(report.read_text())["rows"]
    ticket = [r for r in rows if r["variant"] == "ticket"]
    assert ticket and ticket[0]["accuracy"] > 0.5 and "speedup_vs_dense" in ticket[0]
    passing = runner.invoke(app, ["check", str(report), "--max-accuracy-drop", "100"])
    assert passing.exit_code == 0, passing.output
    failing = runner.invoke(app, ["check", str(report), "--max-size-ratio", "0.0001"])
    assert failing.exit_code == 1
