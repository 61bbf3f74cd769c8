"""sparsekit sweep: frontier, recommendation, the miss, one pretrain, and resuming a killed sweep."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sparsekit._io import load_tensors, read_json
from sparsekit.errors import UsageError
from sparsekit.sweep.frontier import mark_frontier, pareto_flags
from sparsekit.sweep.plan import SweepConfig
from sparsekit.sweep.recommend import Constraint, recommend


def _row(
    name: str,
    ms: float,
    acc: float,
    runtime: str = "sparse-cpu",
    batch: int = 1,
    dense_acc: float = 0.90,
) -> dict:
    return {
        "artifact": name,
        "runtime": runtime,
        "batch": batch,
        "threads": 1,
        "latency_ms": ms,
        "accuracy": acc,
        "accuracy_drop_pts": (dense_acc - acc) * 100,
        "form": "dense" if name == "dense" else "masked",
    }


def _fixture() -> list[dict]:
    return [
        _row("dense", 1.00, 0.90),
        _row("a", 0.50, 0.89),
        _row("b", 0.60, 0.88),  # dominated by a (slower and less accurate)
        _row("c", 0.20, 0.80),
        _row("d", 0.20, 0.79),  # dominated by c (same speed, less accurate)
        _row("e", 1.20, 0.90),  # dominated by dense (same accuracy, slower)
        _row(
            "f", 0.30, 0.70, runtime="ort-cpu"
        ),  # dominated by c across runtimes, frontier within ort-cpu
    ]


def test_frontier_marks_only_undominated_rows():
    rows = mark_frontier(_fixture())
    on = {r["artifact"] for r in rows if r["pareto"]}
    assert on == {"dense", "a", "c"}
    assert {r["artifact"] for r in rows if r["pareto_in_runtime"]} == {"dense", "a", "c", "f"}
    assert [r["latency_ms"] for r in rows] == sorted(r["latency_ms"] for r in rows)


def test_frontier_is_per_batch():
    rows = [
        _row("x", 1.0, 0.9, batch=1),
        _row("y", 5.0, 0.8, batch=32),
    ]  # y would be dominated by x
    assert pareto_flags(rows[:1] + rows[1:]) == [True, False]
    assert all(r["pareto"] for r in mark_frontier(rows))


def test_recommendation_is_the_fastest_row_meeting_the_constraint():
    rows = _fixture()
    d = recommend(rows, Constraint(max_accuracy_drop=1.5), batch=1)
    assert d.ok and d.row["artifact"] == "a"  # c and f are faster but drop 10 / 20 pts
    assert {r["artifact"] for r in rows if r["meets"]} == {"dense", "a", "e"}
    d = recommend(rows, Constraint(max_accuracy_drop=15.0), batch=1)
    assert d.ok and d.row["artifact"] == "c"  # d is as fast but drops 11 pts
    d = recommend(rows, Constraint(max_accuracy_drop=25.0), batch=1)
    assert d.ok and d.row["artifact"] == "c"  # c and d tie on latency: the more accurate one
    d = recommend(rows, Constraint(max_latency_ms=1.0), batch=1)
    assert d.ok and d.row["artifact"] in ("c", "d") and d.row["accuracy"] == 0.80


def test_both_limits_must_hold():
    rows = _fixture()
    recommend(rows, Constraint(max_accuracy_drop=1.5, max_latency_ms=0.55), batch=1)
    assert {r["artifact"] for r in rows if r["meets"]} == {"a"}


def test_no_row_meets_the_constraint_names_the_best_and_the_miss():
    rows = _fixture()
    d = recommend(rows, Constraint(max_accuracy_drop=1.5, max_latency_ms=0.4), batch=1)
    assert not d.ok and d.row["artifact"] == "a"  # the fastest that keeps the accuracy
    assert "missing latency by 0.1 ms (25%)" in d.message and "\n" not in d.message
    d = recommend(rows, Constraint(max_latency_ms=0.1), batch=1)
    assert not d.ok and d.row["artifact"] == "c" and "latency by 0.1 ms (100%)" in d.message
    rows = [_row("dense", 1.0, 0.90), _row("a", 0.5, 0.85)]
    d = recommend(rows, Constraint(max_accuracy_drop=0.0, max_latency_ms=0.6), batch=1)
    assert not d.ok and d.row["artifact"] == "dense" and "missing latency by 0.4 ms" in d.message


def test_config_refuses_a_sweep_without_constraint_or_grid(tmp_path):
    with pytest.raises(UsageError, match="constraint"):
        SweepConfig("lenet300", "synthetic", str(tmp_path))
    with pytest.raises(UsageError, match="empty"):
        SweepConfig(
            "lenet300",
            "synthetic",
            str(tmp_path),
            methods=("magnitude",),
            sparsities=(),
            max_latency_ms=1.0,
        )
    with pytest.raises(UsageError, match="did you mean|unknown"):
        SweepConfig(
            "lenet300", "synthetic", str(tmp_path), methods=("magnitud",), max_latency_ms=1.0
        )
    with pytest.raises(UsageError, match="did you mean|unknown"):
        SweepConfig(
            "lenet300", "synthetic", str(tmp_path), runtimes=("ort-cp",), max_latency_ms=1.0
        )
    with pytest.raises(UsageError, match="exported ONNX"):
        SweepConfig(
            "lenet300", "synthetic", str(tmp_path), runtimes=("torch-cpu",), max_latency_ms=1.0
        )


def test_grid_expands_methods_by_granularity(tmp_path):
    cfg = SweepConfig(
        "lenet300",
        "synthetic",
        str(tmp_path),
        methods=("cts", "magnitude-channel", "cts:channel"),
        sparsities=(0.9, 0.8),
        macs=(0.25, 0.5),
        max_latency_ms=1.0,
    )
    assert [(c.id, c.form) for c in cfg.cells()] == [
        ("cts-s0.8", "masked"),
        ("cts-s0.9", "masked"),
        ("magnitude-channel-macs0.5", "structured"),
        ("magnitude-channel-macs0.25", "structured"),
        ("cts-channel-macs0.5", "structured"),
        ("cts-channel-macs0.25", "structured"),
    ]
    with pytest.raises(UsageError, match="supports weight"):
        SweepConfig(
            "lenet300", "synthetic", str(tmp_path), methods=("ltr:channel",), max_latency_ms=1.0
        )


def _tiny(out: Path, **kw) -> SweepConfig:
    opts = dict(
        methods=("magnitude", "random-channel"),
        sparsities=(0.9, 0.95),
        macs=(0.5,),
        pretrain_epochs=1,
        finetune_epochs=1,
        max_accuracy_drop=100.0,
        runtimes=("sparse-cpu",),
        repeats=3,
        min_time=0.01,
        warmup=1,
    )
    opts.update(kw)
    return SweepConfig("lenet300", "synthetic", str(out), **opts)


def test_cells_start_at_the_one_pretrained_theta_k(tmp_path):
    from sparsekit.pipeline import prune
    from sparsekit.sweep.run import cell_config, train_all

    cfg = _tiny(tmp_path / "sw", methods=("magnitude",), sparsities=(0.9,))
    t = train_all(cfg)
    cell = cfg.cells()[0]
    meta = read_json(cfg.cell_dir(cell) / "run.json")
    assert meta["complete"] and meta["timings"]["pretrain_s"] == 0.0  # no second pretrain
    # nor the before-fine-tune diagnostic (a frontier needs only the trained ticket)
    assert meta["result"]["accuracy_before_finetune"] is None
    assert not any(
        json.loads(line)["stage"] == "pretrain"
        for line in (cfg.cell_dir(cell) / "metrics.jsonl").read_text().splitlines()
    )
    assert t["pretrain_s"] > 0 and set(t["cells"]) == {cell.id}
    # the same cell pretrained on its own lands on exactly the same theta_K and ticket
    prune(dataclasses.replace(cell_config(cfg, cell), out=str(tmp_path / "alone")))
    for name in ("theta_k.safetensors", "final.safetensors"):
        a, b = load_tensors(cfg.cell_dir(cell) / name), load_tensors(tmp_path / "alone" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_sweep_resumes_without_redoing_finished_cells(tmp_path, monkeypatch):
    import sparsekit.pipeline as pipeline
    from sparsekit.sweep.run import train_all

    cfg = _tiny(tmp_path / "sw")
    cells = cfg.cells()
    assert len(cells) == 3
    real = pipeline.prune
    calls: list[str] = []

    def killed_at_third_cell(pcfg, **kw):
        calls.append(Path(pcfg.out).name)
        if Path(pcfg.out).name == cells[2].id:
            raise KeyboardInterrupt
        return real(pcfg, **kw)

    monkeypatch.setattr(pipeline, "prune", killed_at_third_cell)
    with pytest.raises(KeyboardInterrupt):
        train_all(cfg)
    finished = {c.id: read_json(cfg.cell_dir(c) / "run.json")["created"] for c in cells[:2]}
    mtimes = {c.id: (cfg.cell_dir(c) / "final.safetensors").stat().st_mtime_ns for c in cells[:2]}
    ref_mtime = (cfg.reference_dir() / "theta_k.safetensors").stat().st_mtime_ns
    assert not read_json(cfg.cell_dir(cells[2]) / "run.json")["complete"]  # seeded, never run

    monkeypatch.setattr(pipeline, "prune", real)
    t = train_all(cfg)
    assert [t["cells"][c.id]["redone"] for c in cells] == [False, False, True]
    assert t["cells_trained_before"] == 2
    for c in cells[:2]:
        assert read_json(cfg.cell_dir(c) / "run.json")["created"] == finished[c.id]
        assert (cfg.cell_dir(c) / "final.safetensors").stat().st_mtime_ns == mtimes[c.id]
    assert (cfg.reference_dir() / "theta_k.safetensors").stat().st_mtime_ns == ref_mtime
    assert read_json(cfg.cell_dir(cells[2]) / "run.json")["complete"]


def _fake_bench(cfg, items):
    """A bench report over the real artifacts with made-up timings (the real one: test_real_bench_pairs_every_artifact_with_the_dense)."""
    rows = []
    for i, it in enumerate(items):
        ms = 1.0 if it["form"] == "dense" else 0.5 - 0.1 * i
        acc = 0.9 if it["form"] == "dense" else 0.9 - 0.05 * i
        rows.append(
            {
                "source": it["onnx"],
                "runtime": "sparse-cpu",
                "batch": 1,
                "threads": 1,
                "latency_ms": {"p50": ms},
                "block_medians_ms": [[ms, ms * 1.01]] * 3,
                "accuracy": acc,
                "speedup_vs_best_dense": 1.0 / ms,
                "speedup_vs_best_dense_ci": [0.9 / ms, 1.1 / ms],
                "sparsity": it["sparsity"],
                "macs": 100,
            }
        )
    return {"rows": rows, "skipped": [], "environment": {}}


def test_cli_exit_1_with_the_miss_and_0_with_best_onnx(tmp_path, monkeypatch):
    import sparsekit.sweep.run as sweep_run
    from sparsekit.cli.main import app

    monkeypatch.setattr(sweep_run, "bench_all", _fake_bench)
    args = [
        "sweep",
        "--model",
        "lenet300",
        "--data",
        "synthetic",
        "--out",
        str(tmp_path / "sw"),
        "--methods",
        "magnitude",
        "--sparsity",
        "0.9",
        "--macs",
        "",
        "--pretrain-epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--runtime",
        "sparse-cpu",
    ]
    res = CliRunner().invoke(app, [*args, "--max-latency-ms", "0.2"])
    assert res.exit_code == 1, res.output
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(err) == 1
        and "magnitude-s0.9.masked on sparse-cpu" in err[0]
        and "missing latency by" in err[0]
    )
    assert not (tmp_path / "sw" / "best.onnx").exists()
    doc = read_json(tmp_path / "sw" / "sweep.json")
    assert (
        doc["recommendation"]["ok"] is False
        and (tmp_path / "sw" / "frontier.png").stat().st_size > 0
    )

    res = CliRunner().invoke(app, [*args, "--max-latency-ms", "0.5"])  # resumes: nothing retrained
    assert res.exit_code == 0, res.output
    best = read_json(tmp_path / "sw" / "best.json")
    assert best["artifact"] == "magnitude-s0.9.masked" and best["runtime"] == "sparse-cpu"
    assert best["latency_ms_p50"] == pytest.approx(0.4, rel=0.02) and best["commit"] is not None
    assert (tmp_path / "sw" / "best.onnx").read_bytes() == (
        tmp_path / "sw" / "artifacts" / "magnitude-s0.9.masked.onnx"
    ).read_bytes()
    doc = read_json(tmp_path / "sw" / "sweep.json")
    assert all(not c["redone"] for c in doc["timings"]["cells"].values())

    res = CliRunner().invoke(
        app, [*args, "--max-latency-ms", "0.5", "--lr", "0.05"]
    )  # another recipe
    assert res.exit_code == 2 and "other settings (lr 0.1 -> 0.05)" in res.stderr


def test_cli_without_constraint_is_a_usage_error(tmp_path):
    from sparsekit.cli.main import app

    res = CliRunner().invoke(
        app, ["sweep", "--model", "lenet300", "--data", "synthetic", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "constraint" in res.stderr and "Traceback" not in res.output


def test_a_sweep_that_stopped_before_training_does_not_bind_its_out(tmp_path):
    """A first run that fails at its data (a typo) leaves only plan.json: the corrected command runs there."""
    from sparsekit.cli.main import app

    out = tmp_path / "sw"
    base = ["sweep", "--model", "lenet300", "--out", str(out), "--max-accuracy-drop", "1"]
    res = CliRunner().invoke(app, [*base, "--data", f"imagefolder:{tmp_path / 'typo'}"])
    assert res.exit_code == 1 and "typo" in res.stderr
    assert [p.name for p in out.iterdir()] == ["plan.json"]
    from sparsekit.sweep.run import claim_out

    cfg = SweepConfig(model="lenet300", data="synthetic", out=str(out), max_accuracy_drop=1.0)
    claim_out(cfg)  # the untrained plan is replaced, not held against the new settings
    assert read_json(out / "plan.json")["data"] == "synthetic"
    (out / "reference").mkdir()  # something trained beside the plan: now it binds
    with pytest.raises(UsageError, match="other settings"):
        claim_out(SweepConfig(model="lenet300", data="mnist", out=str(out), max_accuracy_drop=1.0))


@pytest.mark.slow
def test_real_bench_pairs_every_artifact_with_the_dense(tmp_path):
    """One real bench session: tickets of different cells are timed with the ONE dense reference."""
    from sparsekit.bench.runtimes import RUNTIMES
    from sparsekit.sweep.run import run_sweep

    if RUNTIMES.get("sparse-cpu").unavailable_reason():
        pytest.skip("sparse-cpu engine not built")
    cfg = _tiny(
        tmp_path / "sw", methods=("magnitude",), sparsities=(0.9, 0.95), max_accuracy_drop=100.0
    )
    doc, decision = run_sweep(cfg)
    rows = doc["rows"]
    assert {r["artifact"] for r in rows} == {
        "dense",
        "magnitude-s0.9.masked",
        "magnitude-s0.95.masked",
    }
    assert all(
        r["speedup_vs_best_dense"] is not None and r["best_dense_runtime"] == "sparse-cpu"
        for r in rows
    )
    for r in rows:
        lo, hi = r["latency_ci_ms"]
        assert lo <= r["latency_ms"] <= hi
    # the loosest constraint: the fastest row overall is the recommendation
    assert decision.ok and decision.row["latency_ms"] == min(r["latency_ms"] for r in rows)
    assert (tmp_path / "sw" / "best.onnx").is_file() and doc["best"]["runtime"] == "sparse-cpu"
    t = doc["timings"]
    assert t["wall_s"] >= t["train_wall_s"] + t["export_s"] + t["bench_s"] - 1e-6


def test_a_failing_cell_is_left_out_and_the_rest_still_runs(tmp_path, monkeypatch):
    import sparsekit.pipeline as pipeline
    from sparsekit.errors import LayerCollapseError
    from sparsekit.sweep.run import export_all, train_all

    cfg = _tiny(tmp_path / "sw", methods=("magnitude",), sparsities=(0.9, 0.95))
    real = pipeline.prune

    def collapse_at_95(pcfg, **kw):
        if pcfg.sparsity == 0.95:
            raise LayerCollapseError("layer 5.weight keeps 0 weights")
        return real(pcfg, **kw)

    monkeypatch.setattr(pipeline, "prune", collapse_at_95)
    t = train_all(cfg)
    assert t["cells"]["magnitude-s0.95"]["failed"] == "layer 5.weight keeps 0 weights"
    assert t["cells"]["magnitude-s0.9"]["redone"]
    assert [it["artifact"] for it in export_all(cfg)] == ["dense", "magnitude-s0.9.masked"]


def test_channel_multiple_reaches_the_channel_cells_only(tmp_path):
    from sparsekit.sweep.run import cell_config

    cfg = _tiny(tmp_path / "sw", channel_multiple=4)
    got = {c.granularity: cell_config(cfg, c).channel_multiple for c in cfg.cells()}
    assert got == {"weight": 1, "channel": 4}
    assert {c.granularity: cell_config(_tiny(tmp_path / "d"), c).channel_multiple for c in cfg.cells()} == \
        {"weight": 1, "channel": 8}  # the default: widths dense runtimes run fast
    with pytest.raises(UsageError, match="--channel-multiple must be >= 1"):
        _tiny(tmp_path / "b", channel_multiple=0)


def test_parallel_cells_train_the_same_tickets_as_serial(tmp_path):
    """--jobs 2: the cells run in two spawned processes (torch threads split between them) and give the
    serial sweep's tickets bit for bit when the serial one runs with the same thread count."""
    from sparsekit.sweep.run import train_all

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = _tiny(tmp_path / "serial", methods=("magnitude",), sparsities=(0.9, 0.95))
        t1 = train_all(serial)
        torch.set_num_threads(2)  # two jobs -> one thread each
        par = _tiny(tmp_path / "par", methods=("magnitude",), sparsities=(0.9, 0.95), jobs=2)
        t2 = train_all(par)
    finally:
        torch.set_num_threads(before)
    assert t2["jobs"] == 2 and list(t2["cells"]) == [c.id for c in par.cells()]  # grid order
    for cell in par.cells():
        assert t2["cells"][cell.id]["redone"] and t2["cells"][cell.id]["wall_s"] > 0
        a = load_tensors(serial.cell_dir(cell) / "final.safetensors")
        b = load_tensors(par.cell_dir(cell) / "final.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert t1["cells"].keys() == t2["cells"].keys()
    # a rerun reads every cell back: no process pool, nothing retrained
    t3 = train_all(par)
    assert t3["cells_trained_before"] == 2


def test_jobs_below_one_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--jobs"):
        _tiny(tmp_path / "sw", jobs=0)
