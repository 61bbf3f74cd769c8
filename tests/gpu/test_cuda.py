"""CUDA paths (skipped without a GPU): training on --device cuda and the CUDA runtimes."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from sparsekit.cli.main import app

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
runner = CliRunner()


def test_prune_on_cuda_and_bench_cuda_runtimes(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "magnitude",
                            "--sparsity", "0.9", "--pretrain-epochs", "1", "--finetune-epochs", "1",
                            "--device", "cuda", "--out", str(run)])
    assert r.exit_code == 0, r.output
    report = tmp_path / "bench.json"
    r = runner.invoke(app, ["bench", str(run), "--data", "synthetic", "--runtime", "torch-cuda",
                            "--batch", "1,32", "--warmup", "2", "--min-time", "0.05", "--json", str(report)])
    assert r.exit_code == 0, r.output
    rows = json.loads(report.read_text())["rows"]
    assert {x["runtime"] for x in rows} == {"torch-cuda"} and all(x["latency_ms"]["p50"] > 0 for x in rows)
