"""Run (or resume) a sweep: one dense pretrain, every cell from that rewind point, one interleaved bench.

Layout of OUT:
    dense/              the reference run: theta_K (the ONE pretrain) and its sparsity-0 ticket, i.e. the
                        dense model fine-tuned with the cells' budget (the dense reference)
    cells/<id>/         one prune run per cell; seeded with dense/'s theta_K and its completed pretrain
                        stage, so the pipeline resumes at the search (no second pretrain)
    artifacts/*.onnx    verified exports: masked (weight tickets, for sparse-cpu), structured (channel
                        tickets, for dense runtimes), dense.onnx
    sweep.json          plan, timings, frontier rows, recommendation;  frontier.md, frontier.png
    best.onnx + best.json   the recommendation and its manifest (only when one meets the constraint)

Every cell is a run directory, and a complete run is never redone, so a killed sweep continues where
it stopped. The bench is redone on resume (measurements belong to one session).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from sparsekit import paths
from sparsekit._io import atomic_write, read_json, write_json
from sparsekit.errors import SparsekitError, UsageError
from sparsekit.sweep.frontier import mark_frontier, table
from sparsekit.sweep.plan import Cell, SweepConfig
from sparsekit.sweep.recommend import Constraint, Decision, recommend

log = logging.getLogger("sparsekit")

SWEEP_SCHEMA_VERSION = 1
#: the reference run's method: a sparsity-0 magnitude ticket is the dense model trained with the mask all ones
REFERENCE_METHOD = "magnitude"


def prune_config(
    cfg: SweepConfig, method: str, granularity: str, sparsity: float, budget: str | None, out: Path
) -> Any:
    """The PruneConfig of one cell (or of the reference run): one recipe shared by all of them."""
    from sparsekit.methods import METHODS
    from sparsekit.pipeline import PruneConfig

    learned = getattr(METHODS.get(method), "learned_search", False)
    return PruneConfig(
        model=cfg.model,
        data=cfg.data,
        method=method,
        sparsity=sparsity,
        out=str(out),
        seed=cfg.seed,
        device=cfg.device,
        pretrain_epochs=cfg.pretrain_epochs,
        finetune_epochs=cfg.finetune_epochs,
        search_epochs=cfg.search_epochs if learned else None,
        search_steps=cfg.search_steps if learned else None,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        data_dir=cfg.data_dir,
        granularity=granularity,
        channel_multiple=cfg.channel_multiple if granularity == "channel" else 1,
        budget=budget,
        eval_limit=cfg.eval_limit,
        method_options=dict(cfg.method_options.get(method, {})),
        dense_reference=False,
        diagnose=False,  # a frontier needs the trained tickets only (saves ~6 s per resnet20 cell)
    )


def cell_config(cfg: SweepConfig, cell: Cell) -> Any:
    if cell.granularity == "weight":
        return prune_config(cfg, cell.method, "weight", cell.sparsity, None, cfg.cell_dir(cell))
    return prune_config(
        cfg, cell.method, "channel", 1.0 - cell.macs, f"macs={cell.macs:g}", cfg.cell_dir(cell)
    )


def seed_from_reference(ref_dir: Path, pcfg: Any) -> bool:
    """Start a cell's run directory at the reference's theta_K with its pretrain stage complete.

    Every cell shares model, data, seed, init and recipe (incl. the LR schedule's horizon) with the
    reference, so its own pretrain would compute the same theta_K; the pipeline resumes a run whose
    pretrain stage is complete, so it goes straight to the search. Returns False when the cell already
    has a run.json (started or finished before: the pipeline resumes or skips it).
    """
    from sparsekit.ticket import RunRecord

    out = Path(pcfg.out)
    if RunRecord.exists(out):
        return False
    ref = RunRecord.load(ref_dir, require_complete=False)
    meta = {k: ref.raw[k] for k in ("schema_version", "model", "data", "seed", "versions") if k in ref.raw}
    meta.update(
        complete=False,
        method={"name": pcfg.method, "options": dict(pcfg.method_options)},
        config=pcfg.identity(),
        target_sparsity=pcfg.sparsity,
        stages={"pretrain": dict(ref.stages["pretrain"])},
        # the pretrain was paid once, by the reference run: this cell's ticket costs search + fine-tune
        timings={"pretrain_s": 0.0},
        metrics={"accuracy_at_theta_k": ref.metrics["accuracy_at_theta_k"]},
        pretrain_from=str(ref_dir.resolve()),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.theta_k(out), lambda p: shutil.copyfile(paths.theta_k(ref_dir), p))
    RunRecord(meta).save(out)  # last: a cell without it is started from scratch
    return True


def _fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def _train_cell(cfg: SweepConfig, cell: Cell, data: Any) -> dict[str, Any]:
    """Train (or read back) one cell; its timings entry, with ``accuracy`` for the progress line."""
    from sparsekit.pipeline import prune

    pcfg = cell_config(cfg, cell)
    resumed = _complete(cfg.cell_dir(cell))
    seed_from_reference(cfg.reference_dir(), pcfg)
    t0 = time.perf_counter()
    try:
        res = prune(pcfg, data=data)
    except SparsekitError as exc:  # e.g. a layer collapse at this sparsity: the rest still runs
        log.warning("warning: sweep cell %s failed and is left out: %s", cell.id, exc)
        return {"failed": str(exc), "search_s": 0.0, "finetune_s": 0.0}
    ct = res["timings"]
    return {
        "search_s": ct.get("search_s", 0.0),
        "finetune_s": ct.get("finetune_s", 0.0),
        "wall_s": None if resumed else time.perf_counter() - t0,
        "redone": not resumed,
        "accuracy": res["accuracy"],
    }


#: a worker process's dataset (loaded once per process, reused by every cell it trains)
_WORKER_DATA: dict[tuple, Any] = {}


def _worker_init(torch_threads: int, level: int) -> None:
    """A spawned cell process: its share of the cores, and log lines on stderr like the parent's."""
    import sys

    import torch

    torch.set_num_threads(torch_threads)
    logger = logging.getLogger("sparsekit")
    logger.setLevel(level)
    logger.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]


def _worker_cell(cfg: SweepConfig, cell: Cell) -> dict[str, Any]:
    from sparsekit.data.bundle import load_dataset

    key = (cfg.data, cfg.data_dir)
    if key not in _WORKER_DATA:
        _WORKER_DATA[key] = load_dataset(cfg.data, cfg.data_dir)
    # every line this cell logs names it: two cells' progress lines interleave on one terminal
    fmt = logging.Formatter(f"[{cell.id}] %(message)s")
    for h in logging.getLogger("sparsekit").handlers:
        h.setFormatter(fmt)
    return _train_cell(cfg, cell, _WORKER_DATA[key])


def _cells_in_parallel(cfg: SweepConfig, cells: list[Cell]):
    """Yield (cell, timings entry) as ``cfg.jobs`` spawned processes finish them (any order).

    Each process gets torch threads = this process's threads // jobs (at least 1), so jobs x threads
    never oversubscribes the cores the user gave training. A cell's ticket does not depend on the
    schedule: it is seeded by the sweep's seed alone; only torch's thread count can move its float sums
    (the same ticket bit for bit as ``jobs=1`` run with that many threads, tested).
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    threads = max(1, torch.get_num_threads() // cfg.jobs)
    level = logging.getLogger("sparsekit").getEffectiveLevel()
    pool = ProcessPoolExecutor(
        max_workers=min(cfg.jobs, len(cells)),
        mp_context=mp.get_context("spawn"),  # no fork of a process holding torch's thread pools
        initializer=_worker_init,
        initargs=(threads, level),
    )
    finished = False
    try:
        pending = {pool.submit(_worker_cell, cfg, c): c for c in cells}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()
        finished = True
    finally:
        if not finished:
            # Ctrl-C, SIGTERM or an error: stop the running cells now rather than train them to the end;
            # their run directories hold only atomically written files, and the next run resumes them
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def train_all(cfg: SweepConfig) -> dict[str, Any]:
    """The reference run, then every cell (resumed; finished ones skipped). Returns the timings."""
    from sparsekit.data.bundle import load_dataset
    from sparsekit.pipeline import prune

    cells = cfg.cells()
    data = load_dataset(cfg.data, cfg.data_dir)
    t_start = time.perf_counter()
    ref_cfg = prune_config(cfg, REFERENCE_METHOD, "weight", 0.0, None, cfg.reference_dir())
    log.info("sweep: dense pretrain + dense reference -> %s", cfg.reference_dir())
    ref = prune(ref_cfg, data=data)
    rt = ref["timings"]
    timings: dict[str, Any] = {
        "pretrain_s": rt.get("pretrain_s", 0.0),
        "dense_reference_s": rt.get("finetune_s", 0.0),
        "reference_wall_s": time.perf_counter() - t_start,
        "jobs": cfg.jobs,
        "cells": {},
    }
    done_before = [c for c in cells if _complete(cfg.cell_dir(c))]
    if done_before:
        log.info("sweep: %d of %d cells already finished (kept)", len(done_before), len(cells))
    todo = [c for c in cells if c not in done_before]
    results = ((c, _train_cell(cfg, c, data)) for c in done_before)  # read back, not redone
    if cfg.jobs > 1 and len(todo) > 1:
        log.info("sweep: training %d cells in %d processes", len(todo), min(cfg.jobs, len(todo)))
        results = itertools.chain(results, _cells_in_parallel(cfg, todo))
    else:
        results = itertools.chain(results, ((c, _train_cell(cfg, c, data)) for c in todo))
    todo_secs: list[float] = []
    for i, (cell, entry) in enumerate(results, 1):
        accuracy = entry.pop("accuracy", None)
        timings["cells"][cell.id] = entry
        if "failed" in entry:
            continue
        if entry["redone"]:
            todo_secs.append(entry["wall_s"])
        left = len(cells) - i
        eta = ""
        if todo_secs and left:
            per = sum(todo_secs) / len(todo_secs) / min(cfg.jobs, max(left, 1))
            eta = f"; about {_fmt_s(per * left)} left for {left} cell(s)"
        log.info(
            "sweep cell %d/%d %s: accuracy %.4f, %s%s",
            i,
            len(cells),
            cell.describe(),
            accuracy,
            f"{entry['wall_s']:.1f} s" if entry["redone"] else "finished before",
            eta,
        )
    timings["cells"] = {c.id: timings["cells"][c.id] for c in cells}  # the grid's order, not finish order
    if all("failed" in c for c in timings["cells"].values()):
        raise SparsekitError(
            f"every cell of the sweep failed (first: {next(iter(timings['cells'].values()))['failed']})"
        )
    timings["train_wall_s"] = time.perf_counter() - t_start
    # cells finished by an earlier invocation: train_wall_s does not contain them (nor, then, the pretrain)
    timings["cells_trained_before"] = sum(
        1 for c in timings["cells"].values() if c.get("redone") is False
    )
    timings["cells_search_finetune_s"] = sum(
        c["search_s"] + c["finetune_s"] for c in timings["cells"].values()
    )
    timings["budget_s"] = (
        timings["pretrain_s"] + timings["dense_reference_s"] + timings["cells_search_finetune_s"]
    )
    return timings


def _complete(run_dir: Path) -> bool:
    from sparsekit.ticket import RunRecord

    try:
        return RunRecord.load(run_dir, require_complete=False).complete
    except SparsekitError:
        return False


def export_all(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Each ticket in the form its runtimes need, and the dense reference; existing files are kept."""
    from sparsekit.export import export_run

    ref_key = str(cfg.reference_dir().resolve())
    items = [
        {
            "artifact": "dense",
            "cell": None,
            "run": str(cfg.reference_dir()),
            "form": "dense",
            "method": None,
            "granularity": None,
            "sparsity": 0.0,
            "macs": None,
        }
    ]
    items += [
        {
            "artifact": f"{c.id}.{c.form}",
            "cell": c.id,
            "run": str(cfg.cell_dir(c)),
            "form": c.form,
            "method": c.method,
            "granularity": c.granularity,
            "sparsity": c.sparsity,
            "macs": c.macs,
        }
        for c in cfg.cells()
        if _complete(cfg.cell_dir(c))  # a failed cell (see train_all) has nothing to export
    ]
    cfg.artifact("dense").parent.mkdir(parents=True, exist_ok=True)
    todo = [it for it in items if not cfg.artifact(it["artifact"]).is_file()]
    if todo:
        log.info("sweep: exporting %d artifact(s)", len(todo))
    for it in items:
        path = cfg.artifact(it["artifact"])
        it["onnx"] = str(path)
        if path.is_file():
            continue
        fmt = "structured" if it["form"] == "structured" else "masked"
        export_run(it["run"], path, fmt=fmt, data_dir=cfg.data_dir)
        _pair_with_reference(path, ref_key, dense=it["form"] == "dense")
    return items


def _pair_with_reference(path: Path, ref_key: str, dense: bool) -> None:
    """Make the bench pair every artifact with the one dense reference (one timing group per runtime).

    bench pairs ONNX files by their ``sparsekit.run_dir``; the cells' tickets all start from the
    reference's theta_K and train with its budget, so it IS their dense reference. The ticket's own run
    stays recorded in ``sparsekit.ticket_run_dir``. The reference's sparsity-0 ticket is the dense model
    (trained with an all-ones mask) and is labelled so. Weights are untouched.
    """
    import onnx

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props["sparsekit.ticket_run_dir"] = props.get("sparsekit.run_dir", "")
    props["sparsekit.run_dir"] = ref_key
    if dense:
        props["sparsekit.variant"] = "dense"
    del proto.metadata_props[:]
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    atomic_write(path, lambda p: onnx.save(proto, str(p)))


def bench_all(cfg: SweepConfig, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Every artifact and the dense model on every runtime, interleaved in ONE bench session."""
    from sparsekit.bench.core import BenchConfig, bench

    bcfg = BenchConfig(
        inputs=tuple(it["onnx"] for it in items),
        runtimes=tuple(cfg.runtimes),
        batches=tuple(cfg.batches),
        threads=cfg.threads,
        warmup=cfg.warmup,
        min_time=cfg.min_time,
        repeats=cfg.repeats,
        data=cfg.data,
        data_dir=cfg.data_dir,
        accuracy_limit=cfg.accuracy_limit,
        seed=cfg.seed,
    )
    return bench(bcfg, workdir=str(Path(cfg.out)))


def frontier_rows(
    items: list[dict[str, Any]], report: dict[str, Any], seed: int = 0
) -> list[dict[str, Any]]:
    """One row per measured (artifact, runtime, batch): latency with its 95 % CI, speed-up, accuracy, drop."""
    from sparsekit.bench.stats import ratio_interval

    by_path = {str(Path(it["onnx"]).resolve()): it for it in items}
    rows = []
    for r in report["rows"]:
        it = by_path.get(str(Path(r["source"]).resolve()))
        if it is None or r.get("accuracy") is None:
            continue
        blocks = r.get("block_medians_ms") or [[r["latency_ms"]["p50"]]]
        # the p50's own interval: the same two-level bootstrap as the speed-ups, over a constant reference
        p50, lo, hi = ratio_interval(blocks, [[1.0]] * len(blocks), seed=seed)
        rows.append(
            {
                "artifact": it["artifact"],
                "cell": it["cell"],
                "run": it["run"],
                "onnx": it["onnx"],
                "method": it["method"],
                "granularity": it["granularity"],
                "form": it["form"],
                "sparsity": r.get("sparsity") if it["form"] != "structured" else it["sparsity"],
                "macs_budget": it["macs"],
                "runtime": r["runtime"],
                "batch": r["batch"],
                "threads": r["threads"],
                "latency_ms": p50,
                "latency_ci_ms": [lo, hi],
                "speedup_vs_best_dense": r.get("speedup_vs_best_dense"),
                "speedup_vs_best_dense_ci": r.get("speedup_vs_best_dense_ci"),
                "best_dense_runtime": r.get("best_dense_runtime"),
                "accuracy": r["accuracy"],
                "macs": r.get("macs"),
                "file_bytes": r.get("file_bytes"),
            }
        )
    dense_acc = {(r["batch"], r["runtime"]): r["accuracy"] for r in rows if r["form"] == "dense"}
    for r in rows:
        ref = dense_acc.get((r["batch"], r["runtime"]))
        if ref is None and dense_acc:
            ref = max(dense_acc.values())
        r["dense_accuracy"] = ref
        r["accuracy_drop_pts"] = None if ref is None else (ref - r["accuracy"]) * 100.0
    return mark_frontier(rows)


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_best(cfg: SweepConfig, row: dict[str, Any], commit: str | None) -> dict[str, Any]:
    """Copy the recommended artifact to OUT/best.onnx and write its manifest OUT/best.json."""
    out = Path(cfg.out)
    manifest = {
        "artifact": row["artifact"],
        "onnx": "best.onnx",
        "source_onnx": row["onnx"],
        "run": row["run"],
        "method": row["method"],
        "granularity": row["granularity"],
        "form": row["form"],
        "sparsity": row["sparsity"],
        "macs_budget": row["macs_budget"],
        "runtime": row["runtime"],
        "batch": row["batch"],
        "threads": row["threads"],
        "latency_ms_p50": row["latency_ms"],
        "latency_ci95_ms": row["latency_ci_ms"],
        "speedup_vs_best_dense": row["speedup_vs_best_dense"],
        "speedup_vs_best_dense_ci95": row["speedup_vs_best_dense_ci"],
        "accuracy": row["accuracy"],
        "dense_accuracy": row["dense_accuracy"],
        "accuracy_drop_pts": row["accuracy_drop_pts"],
        "constraint": {
            "max_accuracy_drop_pts": cfg.max_accuracy_drop,
            "max_latency_ms": cfg.max_latency_ms,
        },
        "commit": commit,
    }
    atomic_write(out / "best.onnx", lambda p: shutil.copyfile(row["onnx"], p))
    write_json(out / "best.json", manifest)
    return manifest


#: the options every cell's training depends on: a sweep directory holds one setting of them
TRAINING_KEYS = (
    "model",
    "data",
    "seed",
    "pretrain_epochs",
    "finetune_epochs",
    "search_epochs",
    "search_steps",
    "batch_size",
    "lr",
    "eval_limit",
    "method_options",
)
PLAN_FILE = "plan.json"


def claim_out(cfg: SweepConfig) -> None:
    """Refuse an --out that holds something else; record the training settings of a new sweep."""
    out = Path(cfg.out)
    plan = {k: getattr(cfg, k) for k in TRAINING_KEYS}
    # a plan with nothing trained beside it (the first run stopped at bad data, say) binds nothing: replace it
    untrained = (out / PLAN_FILE).is_file() and all(p.name == PLAN_FILE for p in out.iterdir())
    if (out / PLAN_FILE).is_file() and not untrained:
        # a key the plan predates had its default then
        defaults = {f.name: f.default for f in dataclasses.fields(SweepConfig)} | {
            "method_options": {}
        }
        stored = {k: defaults.get(k) for k in TRAINING_KEYS} | read_json(out / PLAN_FILE)
        diffs = [f"{k} {stored[k]!r} -> {plan[k]!r}" for k in TRAINING_KEYS if stored[k] != plan[k]]
        if diffs:
            raise UsageError(
                f"--out {out} holds a sweep trained with other settings ({', '.join(diffs)}); "
                "give another --out (tickets are only comparable with one recipe)"
            )
        return
    if out.exists() and not untrained and any(out.iterdir()):
        raise UsageError(
            f"--out {out} exists and is not a sparsekit sweep; choose an empty directory"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / PLAN_FILE, plan)
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def run_sweep(cfg: SweepConfig) -> tuple[dict[str, Any], Decision]:
    """The whole sweep; returns (the sweep.json document, the decision). Nothing is printed."""
    from sparsekit.sweep.plot import plot

    t0 = time.perf_counter()
    out = Path(cfg.out)
    claim_out(cfg)
    (out / "best.onnx").unlink(missing_ok=True)  # a previous recommendation is not this run's
    (out / "best.json").unlink(missing_ok=True)
    timings = train_all(cfg)
    t1 = time.perf_counter()
    items = export_all(cfg)
    timings["export_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    log.info(
        "sweep: benching every artifact and the dense model in one session (%s)",
        ", ".join(cfg.runtimes),
    )
    report = bench_all(cfg, items)
    timings["bench_s"] = time.perf_counter() - t2
    rows = frontier_rows(items, report, cfg.seed)
    constraint = Constraint(cfg.max_accuracy_drop, cfg.max_latency_ms)
    decision = recommend(rows, constraint, cfg.batches[0])
    commit = _commit()
    timings["wall_s"] = time.perf_counter() - t0
    doc = {
        "schema_version": SWEEP_SCHEMA_VERSION,
        "kind": "sparsekit-sweep",
        "commit": commit,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "cells": [c.to_dict() for c in cfg.cells()],
        "timings": timings,
        "environment": report.get("environment"),
        "skipped": report.get("skipped", []),
        "decision_batch": cfg.batches[0],
        "rows": rows,
        "recommendation": decision.to_dict(),
    }
    if decision.ok:
        doc["best"] = write_best(cfg, decision.row, commit)
    write_json(out / "sweep.json", doc)
    atomic_write(out / "frontier.md", lambda p: p.write_text(table(rows) + "\n"))
    plot(rows, out / "frontier.png", cfg.batches[0], constraint, decision)
    return doc, decision
