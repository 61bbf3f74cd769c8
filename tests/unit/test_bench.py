"""bench: rows per (model, runtime, batch), same-run dense pairing, skips with reasons, CLI errors.

Performance numbers are never asserted; only structure, pairing and exit codes.
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from sparsekit.bench.macs import onnx_macs, torch_macs
from sparsekit.bench.speedup_report import REPORT_KEYS
from sparsekit.cli.main import app
from tests.unit._deploy_runs import make_run

FAST = ["--warmup", "1", "--min-time", "0.02", "--accuracy-limit", "64"]
FINGERPRINT_KEYS = {"cpu", "cpu_flags", "cpu_count", "cpu_usable", "threads", "versions", "git_commit",
                    "load_average_at_start", "date_utc", "machine"}


@pytest.fixture(scope="module")
def l300(tmp_path_factory):
    return make_run(tmp_path_factory, "lenet300", sparsity=0.95)


@pytest.fixture(scope="module")
def l300_99(tmp_path_factory):
    return make_run(tmp_path_factory, "lenet300", data="synthetic:1x28x28", sparsity=0.99)  # the real 784-wide input


@pytest.fixture(scope="module")
def bench_out(l300_99, tmp_path_factory):
    """One bench of a 99 %-sparse lenet300 run on three runtimes, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("bench")
    rep_path, md, png = tmp / "r.json", tmp / "r.md", tmp / "r.png"
    r = CliRunner().invoke(app, ["bench", str(l300_99), "--runtime", "torch-cpu,torch-csr,ort-cpu", "--batch", "1,4",
                                 "--json", str(rep_path), "--markdown", str(md), "--plot", str(png), *FAST])
    assert r.exit_code == 0, r.output
    return json.loads(rep_path.read_text()), md, png, r.stdout


def test_bench_run_dir_pairs_ticket_with_dense(bench_out):
    rep, md, png, _ = bench_out
    assert FINGERPRINT_KEYS <= set(rep["environment"])
    assert {"sparsekit", "torch", "onnxruntime", "numpy"} <= set(rep["environment"]["versions"])
    assert rep["environment"]["threads"] == 1
    rows = rep["rows"]
    # (masked ticket, dense) x (torch-cpu, ort-cpu) + csr ticket on torch-csr (its dense is torch-cpu's), x 2 batches
    assert len(rows) == 5 * 2
    for row in rows:
        assert set(REPORT_KEYS) <= set(row)
        assert set(row["latency_ms"]) == {"p50", "p90", "p99"}
        assert row["threads"] == 1 and row["peak_rss_bytes"] > 0 and row["macs"] > 0
        assert row["processes"] == 3 and len(row["block_medians_ms"]) == 3
        assert row["runtime_baseline_rss_bytes"] > 0 and row["model_memory_bytes"] is not None
        assert 0.0 <= row["accuracy"] <= 1.0
    dense = [x for x in rows if x["variant"] == "dense"]
    assert all(x["speedup_vs_same_runtime_dense"] == 1.0 and x["size_ratio_vs_dense"] == 1.0 for x in dense)
    fastest = min(dense, key=lambda x: (x["batch"], x["latency_ms"]["p50"]))
    assert fastest["speedup_vs_best_dense"] == 1.0 and fastest["note"] == "fastest dense"
    for t in (x for x in rows if x["variant"] == "ticket"):
        best = min((x for x in dense if x["batch"] == t["batch"]), key=lambda x: x["latency_ms"]["p50"])
        assert t["best_dense_runtime"] == best["runtime"]
        for key in ("best_dense", "same_runtime_dense"):
            lo, hi = t[f"speedup_vs_{key}_ci"]
            assert lo <= t[f"speedup_vs_{key}"] <= hi
        assert t["speedup_vs_dense"] == t["speedup_vs_same_runtime_dense"]  # deprecated alias
        assert t["sparsity"] == pytest.approx(0.99, abs=1e-6) and t["note"]
        if "faster" in t["note"]:  # never called faster unless the interval says so
            assert t["speedup_vs_best_dense_ci"][0] > 1.0
    # ONNX Runtime rows come from a process without torch: ~60 MB instead of ~500 MB
    ort_rss = max(x["peak_rss_bytes"] for x in rows if x["runtime"] == "ort-cpu")
    torch_rss = min(x["peak_rss_bytes"] for x in rows if x["runtime"] == "torch-cpu")
    assert ort_rss < torch_rss
    text = md.read_text()
    assert "vs best dense" in text and "commit" in text and text.count("\n| ") >= 11
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
    assert ticket["speedup_vs_best_dense"] is not None
    assert "masked-dense runs dense kernels" in ticket["why"]
    assert "only one runtime benched" in ticket["why"]  # a bench of one runtime says so


def test_bench_torch_csr_row_is_csr_and_dense_not_duplicated(bench_out):
    rows = bench_out[0]["rows"]
    t = next(x for x in rows if x["variant"] == "ticket" and x["runtime"] == "torch-csr")
    d = next(x for x in rows if x["variant"] == "dense" and x["runtime"] == "torch-cpu" and x["batch"] == t["batch"])
    assert t["format"] == "csr" and t["macs"] < d["macs"] and t["size_ratio_vs_dense"] < 0.5
    assert not [x for x in rows if x["variant"] == "dense" and x["runtime"] == "torch-csr"]
    assert t["speedup_vs_same_runtime_dense"] is not None  # against torch-cpu's dense, measured once


def test_csr_model_memory_below_dense(bench_out):
    """A 99 %-sparse CSR lenet300 adds less memory than its dense model: its process never holds the
    dense weights it was converted from (their ~1 MB would otherwise show)."""
    rows = bench_out[0]["rows"]
    for b in (1, 4):
        csr = next(x for x in rows if x["format"] == "csr" and x["batch"] == b)
        dense = next(x for x in rows if x["variant"] == "dense" and x["runtime"] == "torch-cpu" and x["batch"] == b)
        assert csr["model_memory_bytes"] < dense["model_memory_bytes"]


def test_default_table_fits_120_columns_and_wide_has_all(bench_out):
    from sparsekit.bench.speedup_report import COLUMNS, terminal_table

    rep, _, _, stdout = bench_out
    assert max(len(line) for line in stdout.splitlines()) <= 120
    for row in rep["rows"]:
        row["model"] = "a-rather-long-run-directory-name-for-a-ticket/" + row["variant"]
    assert max(len(line) for line in terminal_table(rep).splitlines()) <= 120
    wide = terminal_table(rep, wide=True).splitlines()[0]
    assert all(h in wide for h in COLUMNS)


def test_repeats_below_three_is_a_usage_error(l300):
    r = CliRunner().invoke(app, ["bench", str(l300), "--repeats", "2"])
    assert r.exit_code == 2 and "--repeats" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_onnx_input_shape_mismatch_with_data_is_an_error(l300, tmp_path):
    from sparsekit.export import export_run

    export_run(l300, tmp_path / "t.onnx")
    r = CliRunner().invoke(app, ["bench", str(tmp_path / "t.onnx"), "--data", "synthetic:3x8x8",
                                 "--runtime", "ort-cpu", *FAST])
    assert r.exit_code == 2 and "shape" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_vit_macs_count_attention(tmp_path):
    """torch and ONNX MAC counts agree on a transformer (attention matmuls included)."""
    import onnx
    import torch
    import torchvision

    m = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2,
                                             hidden_dim=16, mlp_dim=32, num_classes=3).eval()
    tm = torch_macs(m, (3, 16, 16))
    # by hand: 4 patches + cls = 5 tokens; conv 4*16*(3*64); qkv 5*16*48; QK^T and AV 2*(2 heads*5*5*8);
    # out proj 5*16*16; MLP 5*16*32*2; head 16*3
    assert tm == 4 * 16 * 192 + 5 * 16 * 48 + 2 * 2 * 5 * 5 * 8 + 5 * 16 * 16 + 2 * 5 * 16 * 32 + 16 * 3
    torch.onnx.export(m, torch.zeros(1, 3, 16, 16), str(tmp_path / "v.onnx"), dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "N"}})
    assert onnx_macs(onnx.load(str(tmp_path / "v.onnx"))) == pytest.approx(tm, rel=0.01)


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
        cuda = [s for s in skipped if s["runtime"].endswith("-cuda")]
        assert {s["runtime"] for s in cuda} == {"torch-cuda", "ort-cuda"}
        assert all("CUDA" in s["reason"] for s in cuda)
    for s in skipped:  # anything else skipped is an optional runtime that is not installed
        assert s["runtime"].endswith("-cuda") or "pip install 'sparsekit[" in s["reason"]


def test_static_batch_onnx_is_benched_only_at_its_batch(l300, tmp_path):
    from sparsekit.export import export_run

    export_run(l300, tmp_path / "t.onnx", static_batch=2)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", str(tmp_path / "t.onnx"), "--runtime", "ort-cpu", "--batch", "1,2",
                                 "--json", str(out), *FAST])
    assert r.exit_code == 0, r.output
    assert {x["batch"] for x in json.loads(out.read_text())["rows"]} == {2}
    r = CliRunner().invoke(app, ["bench", str(tmp_path / "t.onnx"), "--runtime", "ort-cpu", "--batch", "1", *FAST])
    assert r.exit_code == 1 and "--static-batch" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_others_busy_cores_counts_other_processes_not_this_one():
    """A child spinning one core reads as ~1 busy core; a thread of this process spinning reads as its own."""
    import subprocess
    import sys
    import threading

    from sparsekit.bench.env import others_busy_cores

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the child is running, not starting
        assert others_busy_cores(1.0) >= 0.5
    finally:
        child.kill()
        child.wait()
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        # the lower of two readings: a stray process of the machine's own may take a slice of one window
        own_spinning = min(others_busy_cores(0.5) or 0.0, others_busy_cores(0.5) or 0.0)
    finally:
        stop.set()
        spinner.join()
    assert own_spinning < 0.5
