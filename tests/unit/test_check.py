"""check: exit 0 when every gate holds, 1 listing failed gates, 2 on bad reports or usage."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparsekit.bench.check import Gates, check_report
from sparsekit.bench.speedup_report import finalize_rows
from sparsekit.cli.main import app


def _row(variant, runtime, batch, p50, acc, size, spread=0.01):
    """A report row with known latencies: 3 processes x 5 blocks around p50 (+-spread)."""
    blocks = [[p50 * (1 + spread * d) for d in (-1, -0.5, 0, 0.5, 1)] for _ in range(3)]
    return {"model": f"m/{variant}", "variant": variant, "format": "structured" if variant == "ticket" else "masked",
            "runtime": runtime, "batch": batch, "threads": 1, "pair_key": "m",
            "latency_ms": {"p50": p50, "p90": p50, "p99": p50}, "block_medians_ms": blocks,
            "accuracy": acc, "file_bytes": size, "macs": 100 if variant == "dense" else 40}


@pytest.fixture
def report(tmp_path):
    rows = finalize_rows([
        _row("ticket", "ort-cpu", 1, 1.0, 0.90, 250), _row("dense", "ort-cpu", 1, 2.0, 0.91, 1000),
        _row("ticket", "ort-cpu", 32, 10.0, 0.90, 250), _row("dense", "ort-cpu", 32, 12.0, 0.91, 1000),
    ])
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema_version": 1, "rows": rows}))
    return path


def test_all_gates_hold(report):
    r = CliRunner().invoke(app, ["check", str(report), "--max-accuracy-drop", "1.5", "--min-speedup", "1.1",
                                 "--max-size-ratio", "0.3"])
    assert r.exit_code == 0, r.output
    assert "passed" in r.stdout


def test_failed_gate_lists_measured_vs_required(report):
    r = CliRunner().invoke(app, ["check", str(report), "--min-speedup", "1.5", "--max-accuracy-drop", "0.5"])
    assert r.exit_code == 1
    assert "speedup 1.20x vs best-dense ort-cpu (95% CI 1.19-1.21), required >= 1.5x vs best-dense" in r.stderr
    assert "accuracy drop 1.00 points, required <= 0.5 points" in r.stderr
    assert r.stderr.count("FAIL") == 3  # batch-32 speedup + two accuracy drops


def test_filters_by_runtime_and_batch(report):
    r = CliRunner().invoke(app, ["check", str(report), "--min-speedup", "1.5", "--batch", "1"])
    assert r.exit_code == 0
    r = CliRunner().invoke(app, ["check", str(report), "--min-speedup", "1.5", "--runtime", "torch-cpu"])
    assert r.exit_code == 2 and "no ticket rows" in r.stderr
    r = CliRunner().invoke(app, ["check", str(report), "--min-speedup", "1.1", "--format", "structured"])
    assert r.exit_code == 0
    r = CliRunner().invoke(app, ["check", str(report), "--min-speedup", "1.1", "--format", "masked"])
    assert r.exit_code == 2


def test_bad_reports_exit_2(tmp_path, report):
    bad = tmp_path / "bad.json"
    bad.write_text("{truncated")
    assert CliRunner().invoke(app, ["check", str(bad), "--min-speedup", "1"]).exit_code == 2
    bad.write_text(json.dumps({"rows": "nope"}))
    assert CliRunner().invoke(app, ["check", str(bad), "--min-speedup", "1"]).exit_code == 2
    assert CliRunner().invoke(app, ["check", str(tmp_path / "missing.json"), "--min-speedup", "1"]).exit_code == 2
    r = CliRunner().invoke(app, ["check", str(report)])
    assert r.exit_code == 2 and "at least one gate" in r.stderr


def _two_runtime_report(tmp_path):
    """Ticket beats its own runtime's dense (torch-cpu) but not the fastest dense (ort-cpu)."""
    rows = finalize_rows([
        _row("ticket", "torch-cpu", 1, 1.0, 0.9, 100), _row("dense", "torch-cpu", 1, 2.0, 0.9, 400),
        _row("dense", "ort-cpu", 1, 0.5, 0.9, 400),
    ])
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"schema_version": 2, "rows": rows}))
    return path, rows


def test_speedups_against_best_and_same_runtime_dense(tmp_path):
    _, rows = _two_runtime_report(tmp_path)
    t = next(r for r in rows if r["variant"] == "ticket")
    assert t["best_dense_runtime"] == "ort-cpu"
    assert t["speedup_vs_best_dense"] == pytest.approx(0.5) and t["verdict_vs_best_dense"] == "slower"
    assert t["speedup_vs_same_runtime_dense"] == pytest.approx(2.0) and t["verdict_vs_same_runtime_dense"] == "faster"
    assert t["speedup_vs_dense"] == t["speedup_vs_same_runtime_dense"]  # deprecated alias, old meaning
    lo, hi = t["speedup_vs_best_dense_ci"]
    assert lo <= 0.5 <= hi and hi < 1.0
    assert t["note"] == "slower than ort-cpu dense"
    torch_dense = next(r for r in rows if r["variant"] == "dense" and r["runtime"] == "torch-cpu")
    assert torch_dense["speedup_vs_best_dense"] == pytest.approx(0.25)


def test_min_speedup_fails_a_ticket_that_beats_only_its_own_runtime(tmp_path):
    path, _ = _two_runtime_report(tmp_path)
    r = CliRunner().invoke(app, ["check", str(path), "--min-speedup", "1.5"])
    assert r.exit_code == 1 and "0.50x vs best-dense" in r.stderr
    r = CliRunner().invoke(app, ["check", str(path), "--min-speedup", "1.5", "--against", "same-runtime"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["check", str(path), "--min-speedup", "1.5", "--against", "fastest"])
    assert r.exit_code == 2 and "--against" in r.stderr


def test_straddling_interval_is_no_measurable_difference_and_fails_a_speed_gate(tmp_path):
    rows = finalize_rows([_row("ticket", "ort-cpu", 1, 0.97, 0.9, 100, spread=0.2),
                          _row("dense", "ort-cpu", 1, 1.0, 0.9, 400, spread=0.2)])
    t = rows[0]
    lo, hi = t["speedup_vs_best_dense_ci"]
    assert lo < 1.0 < hi
    assert t["verdict_vs_best_dense"] == "no measurable difference"
    assert t["note"] == "no measurable difference"
    res = check_report({"rows": rows}, Gates(min_speedup=1.01))
    assert not res.passed and "CI above 1.0" in res.failures[0]["required"]


def test_schema1_report_reads_speedup_vs_dense_as_same_runtime():
    old = {"model": "m/ticket", "variant": "ticket", "runtime": "ort-cpu", "batch": 1, "latency_ms": {"p50": 1.0},
           "speedup_vs_dense": 2.0}
    assert check_report({"rows": [old]}, Gates(min_speedup=1.5, against="same-runtime")).passed
    assert not check_report({"rows": [old]}, Gates(min_speedup=1.5)).passed  # no best-dense number: fails


def test_library_reports_missing_dense_as_failure():
    rows = finalize_rows([_row("ticket", "ort-cpu", 1, 1.0, 0.9, 100)])
    res = check_report({"rows": rows}, Gates(min_speedup=1.0))
    assert not res.passed and "not measured" in res.failures[0]["measured"]


@pytest.mark.parametrize("example", ["sparse-model.yml", "Makefile.snippet"])
def test_ci_example_uses_only_real_commands_and_options(example):
    """examples/ci: every `sparsekit CMD --option` in the workflow and Makefile snippet exists."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples" / "ci" / example).read_text()
    text = re.sub(r"\\\n|\n\s+(?=--)", " ", text).replace(">\n", " ")  # join continued lines
    calls = re.findall(r"(?:sparsekit|\$\(SK\))\s+(\w+)([^\n]*)", text)
    assert {c for c, _ in calls} >= {"prune", "export", "bench", "check"}
    for cmd, rest in calls:
        help_text = CliRunner().invoke(app, [cmd, "--help"]).stdout
        for opt in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert opt in help_text, f"{example}: sparsekit {cmd} has no {opt}"


def _many_dense_rows():
    """Dense rows of four runtimes whose fastest differs by batch, a mnn-sparse ticket (dense: mnn-cpu)."""
    rows = [_row("dense", rt, b, p50, 0.9, 400) for b, lat in ((1, {"torch-cpu": 3.0, "ort-cpu": 2.0,
                                                                       "openvino-cpu": 1.6, "mnn-cpu": 1.2}),
                                                                   (64, {"torch-cpu": 30.0, "ort-cpu": 20.0,
                                                                         "openvino-cpu": 11.0, "mnn-cpu": 14.0}))
            for rt, p50 in lat.items()]
    for b, p50 in ((1, 0.8), (64, 10.0)):
        t = _row("ticket", "mnn-sparse", b, p50, 0.89, 100)
        t["dense_runtime"] = "mnn-cpu"
        rows.append(t)
    return finalize_rows(rows)


def test_best_dense_is_the_fastest_of_every_dense_runtime_per_batch():
    from sparsekit.bench.speedup_report import best_dense_summary

    rows = _many_dense_rows()
    t1, t64 = (next(r for r in rows if r["variant"] == "ticket" and r["batch"] == b) for b in (1, 64))
    assert t1["best_dense_runtime"] == "mnn-cpu" and t64["best_dense_runtime"] == "openvino-cpu"
    assert t1["speedup_vs_best_dense"] == pytest.approx(1.2 / 0.8)
    assert t64["speedup_vs_best_dense"] == pytest.approx(11.0 / 10.0)
    # its own runtime's dense is mnn-cpu's dense (measured once under that name)
    assert t64["speedup_vs_same_runtime_dense"] == pytest.approx(14.0 / 10.0)
    summary = {s["batch"]: s for s in best_dense_summary(rows)}
    assert summary[1]["runtime"] == "mnn-cpu" and summary[64]["runtime"] == "openvino-cpu"
    assert set(summary[1]["dense_p50_ms"]) == {"torch-cpu", "ort-cpu", "openvino-cpu", "mnn-cpu"}
    assert summary[64]["p50_ms"] == pytest.approx(11.0)


def test_check_against_best_dense_names_the_fastest_dense_runtime(tmp_path):
    path = tmp_path / "many.json"
    path.write_text(json.dumps({"schema_version": 2, "rows": _many_dense_rows()}))
    r = CliRunner().invoke(app, ["check", str(path), "--min-speedup", "1.3", "--max-accuracy-drop", "2"])
    assert r.exit_code == 1  # batch 64: 1.10x vs openvino-cpu, though 1.40x vs its own mnn-cpu dense
    assert "mnn-sparse batch 64: speedup 1.10x vs best-dense openvino-cpu" in r.stderr
    assert r.stderr.count("FAIL") == 1  # the accuracy gate found mnn-cpu's dense row for mnn-sparse
    r = CliRunner().invoke(app, ["check", str(path), "--min-speedup", "1.3", "--against", "same-runtime"])
    assert r.exit_code == 0, r.output
