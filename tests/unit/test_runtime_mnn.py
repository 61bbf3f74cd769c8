"""mnn-cpu / mnn-sparse: conversion cached by content and verified against ORT, sparse weights actually
stored, rows in bench, one clear line for a model MNN cannot convert, a reasoned skip when absent.

No timing is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sparsekit.bench import runtimes
from sparsekit.cli.main import app
from sparsekit.errors import SparsekitError
from tests.unit._deploy_runs import make_run

FAST = ["--warmup", "1", "--min-time", "0.02", "--accuracy-limit", "64", "--batch", "1,4"]
needs_mnn = pytest.mark.skipif(not runtimes._installed("MNN"), reason="MNN is not installed (pip install 'sparsekit[mnn]')")


def _export(run: Path, out: Path) -> Path:
    from sparsekit.export import export_run

    export_run(str(run), str(out))
    return out


@pytest.fixture(scope="module")
def r20_onnx(tmp_path_factory):
    """A 95 %-sparse resnet20 ticket (convs, BN, residual adds) as exported."""
    run = make_run(tmp_path_factory, "resnet20", "synthetic:3x16x16", 0.95)
    return _export(run, tmp_path_factory.mktemp("mnn") / "r20.onnx")


@pytest.fixture(scope="module")
def l300(tmp_path_factory):
    return make_run(tmp_path_factory, "lenet300", sparsity=0.95)


@pytest.fixture(scope="module")
def hardmax_onnx(l300, tmp_path_factory):
    """The lenet300 ticket with a Hardmax on its logits: ONNX Runtime runs it, MNN cannot convert it."""
    import onnx
    from onnx import helper

    path = _export(l300, tmp_path_factory.mktemp("mnn_bad") / "l300.onnx")
    m = onnx.load(str(path))
    out = m.graph.output[0]
    m.graph.node.append(helper.make_node("Hardmax", ["logits_pre_hardmax"], [out.name], axis=-1))
    for node in m.graph.node[:-1]:  # the old producer of the output now feeds the Hardmax
        node.output[:] = ["logits_pre_hardmax" if o == out.name else o for o in node.output]
    onnx.save(m, str(path))
    return path


@needs_mnn
@pytest.mark.parametrize("sparse", [False, True], ids=["mnn-cpu", "mnn-sparse"])
def test_mnn_output_matches_ort_and_conversion_is_cached_by_content(r20_onnx, sparse, monkeypatch):
    from sparsekit.bench import runtime_mnn
    from sparsekit.bench.runtime_ort import load as ort_load

    mnn_file = Path(runtime_mnn.converted(str(r20_onnx), sparse))
    assert mnn_file.parent == r20_onnx.parent  # next to the ONNX file
    assert runtime_mnn.file_sha256(r20_onnx)[:16] in mnn_file.name and mnn_file.name.endswith(
        ("sparse" if sparse else "dense") + ".mnn")
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    ref = ort_load(str(r20_onnx), 1)(x)
    rt = runtimes.RUNTIMES.get("mnn-sparse" if sparse else "mnn-cpu")

    def no_conversion(*a, **k):
        raise AssertionError("converted again although cached")

    monkeypatch.setattr(runtime_mnn, "_convert", no_conversion)
    y = rt.load(str(r20_onnx), 1)(x)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(y, ref, rtol=runtime_mnn.PARITY_RTOL, atol=runtime_mnn.PARITY_ATOL * scale)


@needs_mnn
def test_sparse_conversion_stores_sparse_weights_and_a_changed_file_is_converted_again(r20_onnx, tmp_path):
    from sparsekit.bench import runtime_mnn

    dense = Path(runtime_mnn.converted(str(r20_onnx), False))
    sparse = Path(runtime_mnn.converted(str(r20_onnx), True))
    assert sparse.stat().st_size < 0.5 * dense.stat().st_size  # 95 % zeros stored sparse, not dense
    copy = tmp_path / "r20.onnx"
    copy.write_bytes(r20_onnx.read_bytes() + b"")
    assert Path(runtime_mnn.converted(str(copy), True)).name == sparse.name  # same content, same key
    import onnx

    m = onnx.load(str(copy))
    m.doc_string = "changed"
    onnx.save(m, str(copy))
    assert Path(runtime_mnn.converted(str(copy), True)).name != sparse.name


@needs_mnn
def test_model_mnn_cannot_convert_is_one_clear_line(hardmax_onnx, l300, tmp_path):
    from sparsekit.bench import runtime_mnn

    with pytest.raises(SparsekitError) as exc:
        runtime_mnn.converted(str(hardmax_onnx), True)
    msg = str(exc.value)
    assert "\n" not in msg and "MNN cannot convert l300.onnx" in msg and "Hardmax" in msg
    assert not list(hardmax_onnx.parent.glob("*.mnn*"))  # nothing half-written left behind
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", str(hardmax_onnx), "--runtime", "ort-cpu,mnn-cpu", "--json", str(out), *FAST])
    assert r.exit_code == 0, r.output  # ORT still measured; MNN's row is a reasoned skip
    rep = json.loads(out.read_text())
    assert {x["runtime"] for x in rep["rows"]} == {"ort-cpu"}
    skip = next(s for s in rep["skipped"] if s["runtime"] == "mnn-cpu")
    assert "MNN cannot convert" in skip["reason"] and "Hardmax" in skip["reason"]
    r = CliRunner().invoke(app, ["bench", str(hardmax_onnx), "--runtime", "mnn-sparse", *FAST])
    assert r.exit_code == 1 and "MNN cannot convert" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@needs_mnn
def test_mnn_rows_in_bench_with_dense_measured_once(l300, tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", str(l300), "--runtime", "ort-cpu,mnn-cpu,mnn-sparse", "--json", str(out),
                                 *FAST])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    keys = {(x["runtime"], x["variant"]) for x in rep["rows"]}
    assert keys == {("ort-cpu", "dense"), ("ort-cpu", "ticket"), ("mnn-cpu", "dense"), ("mnn-cpu", "ticket"),
                    ("mnn-sparse", "ticket")}  # mnn-sparse's dense IS mnn-cpu's dense: measured once
    rows = {(x["runtime"], x["variant"], x["batch"]): x for x in rep["rows"]}
    for b in (1, 4):
        t = rows[("mnn-sparse", "ticket", b)]
        assert t["speedup_vs_same_runtime_dense"] is not None and t["runtime_sparse"] == "mnn"
        assert t["accuracy"] == pytest.approx(rows[("ort-cpu", "ticket", b)]["accuracy"])
        assert t["file_bytes"] < rows[("mnn-cpu", "ticket", b)]["file_bytes"]  # the sparse .mnn is deployed
        best = next(s for s in rep["best_dense"] if s["batch"] == b)
        assert set(best["dense_p50_ms"]) == {"ort-cpu", "mnn-cpu"} and t["best_dense_runtime"] == best["runtime"]


def test_missing_mnn_is_skipped_with_reason(monkeypatch):
    real = runtimes._installed
    monkeypatch.setattr(runtimes, "_installed", lambda p: False if p == "MNN" else real(p))
    from sparsekit.bench.core import select_runtimes

    chosen, skipped = select_runtimes(None)
    assert not {"mnn-cpu", "mnn-sparse"} & {c.name for c in chosen}
    reasons = {s["runtime"]: s["reason"] for s in skipped}
    assert all("pip install 'sparsekit[mnn]'" in reasons[n] for n in ("mnn-cpu", "mnn-sparse"))
    assert "mnn-cpu" not in runtimes.dense_runtimes()
    r = CliRunner().invoke(app, ["bench", "model.onnx", "--runtime", "mnn-sparse"])
    assert r.exit_code == 2 and "--runtime mnn-sparse: MNN is not installed (pip install 'sparsekit[mnn]')" in r.stderr
