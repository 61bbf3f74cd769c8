"""bench: rows per (model, runtime, batch), same-run dense pairing, skips with reasons, CLI errors.

Performance numbers are never asserted; only structure, pairing and exit codes.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparsekit.bench.macs import onnx_macs, torch_macs
from sparsekit.bench.report import REPORT_KEYS
from sparsekit.cli.main import app
from tests.unit._deploy_runs import make_run

FAST = ["--warmup", "1", "--iters", "3", "--accuracy-limit", "64"]


@pytest.fixture(scope="module")
def l300(tmp_path_factory):
    return make_run(tmp_path_factory, "lenet300", sparsity=0.95)


def test_bench_run_dir_pairs_ticket_with_dense(l300, tmp_path):
    rep_path, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    r = CliRunner().invoke(app, ["bench", str(l300), "--runtime", "torch-cpu,ort-cpu", "--batch", "1,4",
                                 "--json", str(rep_path), "--markdown", str(md), "--plot", str(png), *FAST])
    assert r.exit_code == 0, r.output
    rep = json.loads(rep_path.read_text())
    assert {"cpu", "cpu_count", "versions", "date_utc"} <= set(rep["environment"])
    rows = rep["rows"]
    assert len(rows) == 2 * 2 * 2  # (ticket, dense) x (torch-cpu, ort-cpu) x (1, 4)
    for row in rows:
        assert set(REPORT_KEYS) <= set(row)
        assert set(row["latency_ms"]) == {"p50", "p90", "p99"}
        assert row["threads"] == 1 and row["peak_rss_bytes"] > 0 and row["macs"] > 0
        assert 0.0 <= row["accuracy"] <= 1.0
    dense = [x for x in rows if x["variant"] == "dense"]
    assert all(x["speedup_vs_dense"] == 1.0 and x["size_ratio_vs_dense"] == 1.0 for x in dense)
    for t in (x for x in rows if x["variant"] == "ticket"):
        d = next(x for x in dense if (x["runtime"], x["batch"]) == (t["runtime"], t["batch"]))
        assert t["speedup_vs_dense"] == pytest.approx(d["latency_ms"]["p50"] / t["latency_ms"]["p50"])
        assert t["sparsity"] == pytest.approx(0.95, abs=1e-6) and t["note"]
    # ONNX Runtime rows come from a process without torch: ~60 MB instead of ~500 MB
    ort_rss = max(x["peak_rss_bytes"] for x in rows if x["runtime"] == "ort-cpu")
    torch_rss = min(x["peak_rss_bytes"] for x in rows if x["runtime"] == "torch-cpu")
    assert ort_rss < torch_rss
    assert md.read_text().count("\n| dep") + md.read_text().count("| ") > 8
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_onnx_files_pair_by_metadata_and_skip_torch(l300, tmp_path):
    from sparsekit.export import export_run

    export_run(l300, tmp_path / "t.onnx")
    export_run(l300, tmp_path / "d.onnx", dense=True)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", str(tmp_path / "t.onnx"), str(tmp_path / "d.onnx"),
                                 "--runtime", "torch-cpu,ort-cpu", "--batch", "2", "--json", str(out), *FAST])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert {x["runtime"] for x in rep["rows"]} == {"ort-cpu"}
    assert len(rep["skipped"]) == 2 and all("ONNX file" in s["reason"] for s in rep["skipped"])
    ticket = next(x for x in rep["rows"] if x["variant"] == "ticket")
    # the note must say masked-dense runs dense kernels, whatever the (noisy) measured ratio was
    assert ticket["speedup_vs_dense"] is not None and "masked-dense runs" in ticket["note"]


def test_bench_torch_csr_row_is_csr(l300, tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", str(l300), "--runtime", "torch-csr", "--batch", "1", "--json", str(out), *FAST])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    t = next(x for x in rows if x["variant"] == "ticket")
    d = next(x for x in rows if x["variant"] == "dense")
    assert t["format"] == "csr" and t["macs"] < d["macs"] and t["size_ratio_vs_dense"] < 0.5


def test_macs_torch_and_onnx_agree(l300, tmp_path):
    import onnx

    from sparsekit.export import export_run
    from sparsekit.ticket import Ticket

    export_run(l300, tmp_path / "t.onnx")
    t = Ticket.load(l300)
    assert onnx_macs(onnx.load(str(tmp_path / "t.onnx"))) == torch_macs(t.materialize(), t.spec.in_shape)


@pytest.mark.parametrize("args,code,needle", [
    (["--batch", "0"], 2, "--batch"),
    (["--runtime", "ort-cpo"], 2, "did you mean 'ort-cpu'"),
    (["--threads", "0"], 2, "--threads"),
    (["--json", "/nonexistent-dir/r.json"], 2, "cannot write"),
])
def test_bench_usage_errors(l300, args, code, needle):
    r = CliRunner().invoke(app, ["bench", str(l300), *args])
    assert r.exit_code == code and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bench_missing_and_corrupt_inputs(tmp_path):
    r = CliRunner().invoke(app, ["bench", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    r = CliRunner().invoke(app, ["bench", str(bad), "--runtime", "ort-cpu"])
    assert r.exit_code == 1 and "corrupt ONNX" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cuda_runtime_explicit_without_cuda_is_usage_error(l300):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    for rt in ("ort-cuda", "torch-cuda"):
        r = CliRunner().invoke(app, ["bench", str(l300), "--runtime", rt])
        assert r.exit_code == 2 and "CUDA" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_default_runtimes_skip_cuda_with_reason():
    import torch

    from sparsekit.bench.core import select_runtimes

    chosen, skipped = select_runtimes(None)
    assert {"torch-cpu", "ort-cpu"} <= {r.name for r in chosen}
    if not torch.cuda.is_available():
        assert {s["runtime"] for s in skipped} == {"torch-cuda", "ort-cuda"}
        assert all("CUDA" in s["reason"] for s in skipped)
