"""Sweep benchmark: the deployment frontier with ``sparsekit sweep`` (``make bench-sweep``).

One sweep per model, run through the product (``sparsekit.sweep.run.run_sweep``):
  * cts and magnitude at 80 / 90 / 95 / 98 % sparsity (weight tickets, masked export, for sparse-cpu),
  * magnitude-channel at MAC budgets 0.5 / 0.25 (channel tickets, structured export, for dense runtimes),
  * the dense reference, every artifact benched on every runtime (sparse-cpu, ort-cpu, and openvino-cpu
    when installed) in ONE interleaved bench session, batch 1, 1 thread;
  * the recommendation under --max-accuracy-drop (default 1 pt).
It writes OUT/<model>/{sweep.json,frontier.md,frontier.png} and OUT/bench_sweep.md (machine, commit,
date, load average, the command line, the frontier tables and the wall-time check: the sweep's training
wall time vs one pretrain + one dense reference + the cells' search + fine-tune times).

Scaled to a 2-core CPU shared with other work (ONE torch thread): lenet300 on a seeded Fashion-MNIST
subset (--subset TRAIN,TEST; 0 = the full dataset), E = --finetune-epochs, CTS --search-steps; resnet20
(--models lenet300,resnet20) on the same subset with the bench-tickets budgets (E = 1, 400 CTS steps).
--jobs N (default: the usable cores) trains N cells at once, each in its own process with one torch thread
(sweep --jobs): the cells' search + fine-tune times are each cell's own, so the wall-time check shows what
the overlap saves. Resumable: rerun the same command; finished cells are read back, not redone.

Usage:
    .venv/bin/python benchmarks/bench_sweep.py [--out .bench/sweep] [--subset 5000,1000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _subset import write_subset  # noqa: E402

from sparsekit._io import atomic_write  # noqa: E402
from sparsekit.errors import SparsekitError  # noqa: E402
from sparsekit.sweep.frontier import table  # noqa: E402
from sparsekit.sweep.plan import SweepConfig  # noqa: E402
from sparsekit.sweep.run import run_sweep  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
#: per model: (fine-tune epochs, CTS search steps, CTS search batch) -- resnet20: bench-tickets' budget
BUDGETS = {"lenet300": (3, 400, None), "resnet20": (1, 400, 64)}


def runtimes() -> tuple[str, ...]:
    from sparsekit.bench.runtimes import RUNTIMES

    names = ["sparse-cpu", "ort-cpu"]
    try:
        ov = RUNTIMES.get("openvino-cpu")
        if not ov.unavailable_reason():
            names.append("openvino-cpu")
    except SparsekitError:
        pass
    return tuple(names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".bench/sweep")
    ap.add_argument("--models", default="lenet300")
    ap.add_argument(
        "--subset", default="5000,1000", help="TRAIN,TEST images of Fashion-MNIST (0 = full)"
    )
    ap.add_argument(
        "--finetune-epochs", type=int, default=None, help="override the per-model budget"
    )
    ap.add_argument("--search-steps", type=int, default=None, help="override the CTS search steps")
    ap.add_argument("--sparsity", default="0.8,0.9,0.95,0.98")
    ap.add_argument("--macs", default="0.5,0.25")
    ap.add_argument("--max-accuracy-drop", type=float, default=1.0)
    ap.add_argument(
        "--jobs",
        type=int,
        default=max(1, len(os.sched_getaffinity(0))),
        help="cells trained at once (sweep --jobs), one torch thread each; default: the usable cores",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from sparsekit.bench.env import fingerprint

    env = fingerprint(1)
    out = Path(args.out)
    n_train, n_test = (int(v) for v in args.subset.split(","))
    data_dir = None
    if n_train:
        data_dir = str(
            write_subset(FASHION, out / f"fmnist-subset-{n_train}-{n_test}", n_train, n_test)
        )
    lines = [
        "# bench-sweep",
        "",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
        f"- machine: {env['cpu']} ({env['cpu_usable']} usable cores), 1 thread; commit {env['git_commit']}; "
        f"{env['date_utc']}; load average at start {env['load_average_at_start']}",
        f"- data: Fashion-MNIST {'subset ' + args.subset + ' (train,test), seeded' if n_train else 'full'}",
        "",
    ]
    for model in args.models.split(","):
        ft, steps, cts_batch = BUDGETS.get(model, (1, 400, None))
        ft = args.finetune_epochs if args.finetune_epochs is not None else ft
        steps = args.search_steps if args.search_steps is not None else steps
        cfg = SweepConfig(
            model=model,
            data="fashion-mnist",
            out=str(out / model),
            methods=("cts", "magnitude", "magnitude-channel"),
            sparsities=tuple(float(v) for v in args.sparsity.split(",")),
            macs=tuple(float(v) for v in args.macs.split(",")),
            runtimes=runtimes(),
            batches=(1,),
            threads=1,
            max_accuracy_drop=args.max_accuracy_drop,
            pretrain_epochs=1,
            finetune_epochs=ft,
            search_steps=steps,
            data_dir=data_dir,
            method_options={"cts": {"batch_size": str(cts_batch)}} if cts_batch else {},
            repeats=args.repeats,
            min_time=args.min_time,
            jobs=args.jobs,
        )
        t0 = time.perf_counter()
        doc, decision = run_sweep(cfg)
        t = doc["timings"]
        section = [
            f"## {model} (E = {ft}, CTS {steps} search steps"
            f"{f' at batch {cts_batch}' if cts_batch else ''}; {args.jobs} cell(s) at once; "
            f"sweep {time.perf_counter() - t0:.0f} s)",
            "",
            table([r for r in doc["rows"] if r["batch"] == 1]),
            "",
            f"`*` = Pareto-optimal across runtimes. Recommendation ({'met' if decision.ok else 'MISSED'}): "
            f"{decision.message}",
            "",
            (
                f"Resumed: {t['cells_trained_before']} cell(s) trained by an earlier run; the wall "
                "times below are this run's only. "
                if t["cells_trained_before"]
                else ""
            )
            + f"Wall time: training {t['train_wall_s']:.1f} s vs one pretrain {t['pretrain_s']:.1f} s + one dense "
            f"reference {t['dense_reference_s']:.1f} s + cells' search + fine-tune {t['cells_search_finetune_s']:.1f} s "
            f"= {t['budget_s']:.1f} s (difference {t['train_wall_s'] - t['budget_s']:+.1f} s: data loading, evaluation, "
            f"run bookkeeping, minus what {args.jobs} cells at once overlap); export {t['export_s']:.1f} s, bench {t['bench_s']:.1f} s, sweep {t['wall_s']:.1f} s.",
            f"Skipped: {doc['skipped'] or 'none'}",
            "",
            f"![frontier]({model}/frontier.png)",
            "",
        ]
        atomic_write(
            out / model / "bench_sweep.md",
            lambda p, t=lines[:6] + [x.replace(f"]({model}/", "](") for x in section]: p.write_text(
                "\n".join(t) + "\n"
            ),
        )
        lines += section
    atomic_write(out / "bench_sweep.md", lambda p: p.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
