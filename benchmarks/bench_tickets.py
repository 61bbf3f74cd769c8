"""Ticket benchmark: CTS vs pruning-at-init baselines vs LTR on Fashion-MNIST (``make bench-tickets``).

Every ticket is produced by the product itself, ``sparsekit.pipeline.prune(PruneConfig(...))``:
pretrain 1 epoch -> search at theta_1 -> fine-tune E epochs from theta_1 with the mask held exactly.
Wall time per ticket = pretrain + search + fine-tune (LTR: all IMP rounds + the final fine-tune).

Models:
  * lenet300 on the full Fashion-MNIST (60k/10k), E = 3, CTS 2 search epochs at batch 512 (236 steps).
  * resnet20 (BatchNorm) on a fixed random subset of Fashion-MNIST (written as IDX files under
    OUT/fmnist-subset and loaded through --data-dir), E = 2, CTS 4 search epochs at batch 128: on a
    2-core CPU a full-data ResNet-20 epoch takes ~3 minutes, too long for a 35-minute benchmark.

LTR at density 0.8^j is read from round j of the IMP run to the smallest density of the same seed
(round j trains exactly the mask a separate run to 0.8^j would fine-tune, from the same theta_1, with
the same seed; one separate run checks this); its time is pretrain + cumulative IMP time to round j.

Resumable: each ticket is its own run directory under --out and the pipeline skips completed runs.
Jobs run in priority order and no new job starts after --max-minutes; the report marks missing cells.

Usage:
    .venv/bin/python benchmarks/bench_tickets.py [--out .bench/tickets] [--max-minutes 35]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import shlex
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sparsekit import paths
from sparsekit._io import write_marked_section
from sparsekit.data import load_dataset
from sparsekit.data.idx import read_idx
from sparsekit.pipeline import PruneConfig, prune

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench-tickets:start -->", "<!-- bench-tickets:end -->"
IMP_KEEP = 0.8
GRID = (10, 16, 20, 22, 28)  # densities 0.8^j: 10.74 %, 2.81 %, 1.15 %, 0.74 %, 0.19 %
FOCUS = 22  # 0.74 %

METHODS = {  # label -> (method, options)
    "cts-kl": ("cts", {"objective": "kl"}),
    "cts-ce": ("cts", {"objective": "ce"}),
    "random": ("random", {}),
    "magnitude": ("magnitude", {}),
    "snip": ("snip", {}),
    "grasp": ("grasp", {}),
    "synflow": ("synflow", {}),
    "ltr": ("ltr", {}),
}
PAI = ("random", "magnitude", "snip", "grasp", "synflow")


@dataclass(frozen=True)
class ModelPlan:
    model: str
    finetune_epochs: int
    search_epochs: int
    cts_batch: int
    subset: tuple[int, int] | None = None  # (train, test) images, None = full dataset
    note: str = ""
    batch_size: int = 128  # SGD batch of pretraining / fine-tuning / LTR rounds
    focus: int = FOCUS  # the density 0.8^focus compared over seeds


PLANS = {
    "lenet300": ModelPlan("lenet300", 3, 2, 512, None, "full Fashion-MNIST (60k train / 10k test)"),
    # a first attempt (2,000 images, batch 128, 0.74 %) left every method at chance (dense theta_1: 41 %),
    # so the conv model uses more SGD steps per image and the 10.74 % density
    "resnet20": ModelPlan("resnet20", 2, 4, 128, (3000, 2000),
                          "Fashion-MNIST subset: 3,000 train / 2,000 test images (seeded), SGD batch 64",
                          batch_size=64, focus=10),
}


@dataclass
class Job:
    plan: ModelPlan
    label: str
    j: int  # density 0.8^j
    seed: int
    dense_reference: bool = False
    tag: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def density(self) -> float:
        return IMP_KEEP**self.j

    def out(self, root: Path) -> Path:
        return root / self.plan.model / f"{self.label}{self.tag}" / f"d{self.j:02d}" / f"s{self.seed}"


def jobs() -> list[Job]:
    """All tickets in priority order (the most important comparisons first)."""
    le, rn = PLANS["lenet300"], PLANS["resnet20"]
    out: list[Job] = []

    def block(plan: ModelPlan, seed: int, ltr_j: int | None, js=(FOCUS,)) -> None:
        for j in js:
            for label in METHODS:
                if label == "ltr":
                    continue
                out.append(Job(plan, label, j, seed, dense_reference=(label == "magnitude" and j == plan.focus)))
        if ltr_j is not None:
            out.append(Job(plan, "ltr", ltr_j, seed))

    block(le, 0, max(GRID))  # LTR seed 0 runs to 0.19 %: its rounds give every grid point
    block(le, 1, FOCUS)
    block(le, 0, None, js=[j for j in GRID if j != FOCUS])
    out.append(Job(le, "ltr", 10, 0, tag="-separate"))  # checks the round read-out against a real run
    block(rn, 0, rn.focus, js=(rn.focus,))
    block(le, 2, FOCUS)
    block(rn, 1, rn.focus, js=(rn.focus,))
    return out


def write_subset(src_dir: Path, dst: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write a seeded random subset of the Fashion-MNIST IDX files (uncompressed) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = read_idx(src_dir / f"{split}-images-idx3-ubyte.gz")
        y = read_idx(src_dir / f"{split}-labels-idx1-ubyte.gz")
        idx = np.sort(rng.choice(len(y), n, replace=False))
        for arr, stem in ((x[idx], f"{split}-images-idx3-ubyte"), (y[idx], f"{split}-labels-idx1-ubyte")):
            path = dst / stem
            if path.exists():
                continue
            header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
            tmp.replace(path)
    return dst


def run_job(job: Job, root: Path, data, data_dir: Path | None) -> dict:
    method, opts = METHODS[job.label]
    opts = dict(opts)
    if method == "cts":
        opts["batch_size"] = job.plan.cts_batch
    cfg = PruneConfig(
        model=job.plan.model, data="fashion-mnist", method=method, sparsity=1.0 - job.density,
        out=str(job.out(root)), seed=job.seed, pretrain_epochs=1, search_epochs=job.plan.search_epochs,
        finetune_epochs=job.plan.finetune_epochs, method_options=opts, dense_reference=job.dense_reference,
        batch_size=job.plan.batch_size,
        data_dir=str(data_dir) if data_dir else None,
    )
    return prune(cfg, data=data)


# ---------------------------------------------------------------------------------------------
# collecting results


def _load(run: Path) -> dict | None:
    f = paths.run_json(run)
    if not f.exists():
        return None
    meta = json.loads(f.read_text())
    return meta if meta.get("complete") else None


def collect(root: Path) -> dict:
    """{model: {label: {j: {seed: row}}}} with row = accuracy, before, time, search time, layers."""
    res: dict = {}
    for job in jobs():
        meta = _load(job.out(root))
        if meta is None:
            continue
        t = meta["timings"]
        row = {
            "acc": meta["metrics"]["accuracy"],
            "before": meta["metrics"].get("accuracy_before_finetune"),
            "time": t.get("pretrain_s", 0) + t.get("search_s", 0) + t.get("finetune_s", 0),
            "search": t.get("search_s", 0),
            "dense": meta["metrics"].get("dense_accuracy"),
            "theta_k": meta["metrics"].get("accuracy_at_theta_k"),
            "layers": [1 - layer["sparsity"] for layer in meta["layers"]],
        }
        label = job.label + job.tag
        res.setdefault(job.plan.model, {}).setdefault(label, {}).setdefault(job.j, {})[job.seed] = row
        if job.label == "ltr" and not job.tag:
            for j in range(1, job.j):  # intermediate IMP rounds = LTR tickets at 0.8^j
                rj = paths.round_dir(job.out(root), j) / "round.json"
                if rj.exists():
                    r = json.loads(rj.read_text())
                    res[job.plan.model]["ltr"].setdefault(j, {}).setdefault(job.seed, {
                        "acc": r["accuracy"], "before": None, "search": r["cumulative_s"],
                        "time": t.get("pretrain_s", 0) + r["cumulative_s"], "dense": None, "theta_k": None,
                        "layers": None, "from_round": True,
                    })
    return res


def _ms(vals: list[float], pct: bool = True) -> str:
    k = 100.0 if pct else 1.0
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{k * vals[0]:.1f}" if pct else f"{vals[0]:.0f}"
    return f"{k * statistics.fmean(vals):.1f} ± {k * statistics.stdev(vals):.1f}" if pct else f"{statistics.fmean(vals):.0f}"


def _cell(res: dict, model: str, label: str, j: int, key: str, seeds=None) -> list[float]:
    rows = res.get(model, {}).get(label, {}).get(j, {})
    return [r[key] for s, r in sorted(rows.items()) if (seeds is None or s in seeds) and r.get(key) is not None]


def render(res: dict, env: dict) -> str:
    lines = [START, "", "## Tickets: CTS vs pruning-at-init vs LTR (Fashion-MNIST)", ""]
    lines += [
        f"Generated by `{env['command']}` ({_invocations(env)}) — machine: {env['cpu']}, {env['cores']} cores "
        f"(shared with other jobs; load average at the end {env['load_end']}), "
        f"torch {env['torch']} with `torch.set_num_threads({env['threads']})`, Python {env['python']}, "
        f"sparsekit commit {env.get('commit')}. "
        f"Benchmark wall time: {env['wall_min']:.1f} min ({env['done']} of {env['total']} tickets done"
        f"{'' if env['done'] == env['total'] else '; missing cells are marked –'}).",
        "",
        "Protocol: `sparsekit.pipeline.prune` per ticket — dense pretraining 1 epoch (rewind point theta_1, SGD "
        "lr 0.1, momentum 0.9, wd 1e-4, batch 128), mask search at theta_1, fine-tune from theta_1 with the mask "
        "held exactly, top-1 test accuracy. Same fine-tune budget for every method of a model. Densities are "
        "0.8^j (exact top-k). CTS: GradBalance, Adam 0.1 on the logits, tau 2/3, reference defaults otherwise. "
        "Wall time per ticket = pretrain + search + fine-tune; for LTR it is pretrain + every IMP round "
        "(each round = fine-tune budget) + the final fine-tune. Mean ± sample std over seeds where there are several.",
        "",
    ]
    for model, plan in PLANS.items():
        if model not in res:
            continue
        m = res[model]
        F = plan.focus
        dense = _cell(res, model, "magnitude", F, "dense")
        tk = _cell(res, model, "magnitude", F, "theta_k")  # one per seed
        lines += [f"### {model} — {plan.note}", ""]
        lines += [
            f"Fine-tune {plan.finetune_epochs} epochs; CTS {plan.search_epochs} search epochs at batch "
            f"{plan.cts_batch}; SGD batch {plan.batch_size}. Dense accuracy at theta_1: {_ms(tk)} %; dense reference "
            f"(same {plan.finetune_epochs}-epoch budget, no mask): {_ms(dense)} %.",
            "",
        ]
        # table 1: the focus density with seeds
        lines += [
            f"**Density {100 * IMP_KEEP**F:.2f} % (0.8^{F}, sparsity {100 - 100 * IMP_KEEP**F:.2f} %)** — accuracy after "
            "fine-tune, accuracy of the mask at theta_1 "
            "before any fine-tune, wall time per ticket, per-layer density (seed 0):",
            "",
            "| method | seeds | accuracy % | per seed | before fine-tune % | ticket wall time s | search s | per-layer density % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        ltr_time = _cell(res, model, "ltr", F, "time")
        for label in METHODS:
            acc = _cell(res, model, label, F, "acc")
            if not acc:
                lines.append(f"| {label} | 0 | – | – | – | – | – | – |")
                continue
            times = _cell(res, model, label, F, "time")
            before = _cell(res, model, label, F, "before")
            search = _cell(res, model, label, F, "search")
            rows = res[model][label][F]
            layers = next((r["layers"] for s, r in sorted(rows.items()) if r.get("layers")), None)
            ratio = f" ({statistics.fmean(times) / statistics.fmean(ltr_time):.2f}× LTR)" if ltr_time and label != "ltr" else ""
            lines.append(
                f"| {label} | {len(acc)} | {_ms(acc)} | {', '.join(f'{100 * a:.1f}' for a in acc)} | {_ms(before)} | "
                f"{_ms(times, False)}{ratio} | {_ms(search, False)} | "
                f"{_layers(layers)} |"
            )
        lines.append("")
        # table 2: the density grid, seed 0
        js = [j for j in GRID if any(j in m.get(lab, {}) for lab in METHODS)]
        if len(js) > 1:
            lines += [
                "**Density grid, seed 0** — accuracy % (ticket wall time s):",
                "",
                "| method | " + " | ".join(f"{100 * IMP_KEEP**j:.2f} %" for j in js) + " |",
                "|---|" + "---|" * len(js),
            ]
            for label in METHODS:
                cells = []
                for j in js:
                    a, t = _cell(res, model, label, j, "acc", {0}), _cell(res, model, label, j, "time", {0})
                    cells.append(f"{100 * a[0]:.1f} ({t[0]:.0f})" if a else "–")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += _reading(res, model, F)
    sep = _cell(res, "lenet300", "ltr-separate", 10, "acc")
    rd = _cell(res, "lenet300", "ltr", 10, "acc", {0})
    if sep and rd:
        same = "identical" if abs(sep[0] - rd[0]) < 1e-12 else f"different ({100 * rd[0]:.2f} vs {100 * sep[0]:.2f})"
        lines += [f"LTR read-out check: round 10 of the seed-0 IMP run and a separate LTR run to 10.74 % give "
                  f"{same} accuracy ({100 * sep[0]:.2f} %).", ""]
    lines += [END]
    return "\n".join(lines)


def _reading(res: dict, model: str, focus: int) -> list[str]:
    """Automatic reading of the issue's goal at 0.74 %: CTS-KL vs PaI baselines and vs LTR."""
    kl = _cell(res, model, "cts-kl", focus, "acc")
    ltr = _cell(res, model, "ltr", focus, "acc")
    if not kl:
        return []
    out = [f"Reading at {100 * IMP_KEEP**focus:.2f} % (automatic):", ""]
    mk = statistics.fmean(kl)
    for label in PAI:
        b = _cell(res, model, label, focus, "acc")
        if b:
            out.append(f"* CTS-KL − {label}: {100 * (mk - statistics.fmean(b)):+.1f} pp (n = {len(kl)} / {len(b)})")
    if ltr:
        spread = [statistics.stdev(v) for v in (kl, ltr) if len(v) > 1]
        noise = 2 * max(spread) if spread else None
        diff = mk - statistics.fmean(ltr)
        verdict = "n/a (one seed)" if noise is None else ("within noise or above" if diff >= -noise else "below LTR beyond noise")
        t_kl, t_ltr = _cell(res, model, "cts-kl", focus, "time"), _cell(res, model, "ltr", focus, "time")
        out.append(f"* CTS-KL − LTR: {100 * diff:+.1f} pp; noise (2 × larger seed std) "
                   f"{'–' if noise is None else f'{100 * noise:.1f} pp'} → {verdict}; "
                   f"time CTS-KL / LTR = {statistics.fmean(t_kl) / statistics.fmean(t_ltr):.2f}")
    out.append("")
    return out


def write_doc(text: str) -> None:
    # ``text`` carries its own START/END marker lines; the shared writer adds them back
    body = text.split(START, 1)[1].rsplit(END, 1)[0]
    write_marked_section(DOC, "bench-tickets", body)


def environment(argv: list[str]) -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "command": " ".join([".venv/bin/python", "benchmarks/bench_tickets.py", *map(shlex.quote, argv)]),
        "commit": _git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_start": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def _git_commit() -> str | None:
    from sparsekit.bench.env import git_commit

    return git_commit()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / ".bench" / "tickets"), help="root of the run directories")
    ap.add_argument("--max-minutes", type=float, default=35.0, help="start no new ticket after this")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--report-only", action="store_true", help="only rewrite docs/benchmarks.md from existing runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    root = Path(args.out)
    env = environment(argv)
    # wall time accumulates over resumed invocations (kept next to the runs)
    state_file = root / "bench_state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    env["previous_s"] = state.get("wall_s", 0.0)
    env["invocations"] = list(state.get("invocations", []))
    if args.report_only:
        env.update({k: state[k] for k in ("command", "date", "load_start") if k in state})
    else:
        env["invocations"].append({"args": " ".join(argv), "date": env["date"], "load_start": env["load_start"],
                                   "wall_s": 0.0})
    if env["invocations"]:
        env["command"] = ".venv/bin/python benchmarks/bench_tickets.py"
    t0 = time.perf_counter()
    all_jobs = jobs()
    if not args.report_only:
        data = {"lenet300": (load_dataset("fashion-mnist"), None)}
        src = next(p for p in (Path("/usr/share/datasets/fashion-mnist"),) if p.exists())
        for name, plan in PLANS.items():
            if plan.subset:
                sub = write_subset(src, root / f"fmnist-subset-{plan.subset[0]}-{plan.subset[1]}", *plan.subset)
                data[name] = (load_dataset("fashion-mnist", sub), sub)
        for i, job in enumerate(all_jobs):
            elapsed = (time.perf_counter() - t0) / 60
            if elapsed > args.max_minutes:
                print(f"[{elapsed:5.1f} min] time budget reached; {len(all_jobs) - i} tickets not started", flush=True)
                break
            ts = time.perf_counter()
            bundle, ddir = data[job.plan.model]
            r = run_job(job, root, bundle, ddir)
            print(f"[{elapsed:5.1f} min] {job.plan.model} {job.label}{job.tag} density {100 * job.density:.2f}% "
                  f"seed {job.seed}: acc {100 * r['accuracy']:.2f} (before ft {100 * r['accuracy_before_finetune']:.1f}) "
                  f"ticket {r['timings']['ticket_total_s']:.0f}s, this call {time.perf_counter() - ts:.0f}s", flush=True)
            write_doc(_render_now(root, env, t0, all_jobs))
            _save_state(state_file, env, t0)
        _save_state(state_file, env, t0)
    write_doc(_render_now(root, env, t0, all_jobs))
    print(f"wrote {DOC}", flush=True)
    return 0


def _layers(layers: list[float] | None) -> str:
    if not layers:
        return "–"
    if len(layers) <= 6:
        return " / ".join(f"{100 * x:.2f}" for x in layers)
    return (f"first {100 * layers[0]:.1f}, last {100 * layers[-1]:.1f}, others "
            f"{100 * min(layers[1:-1]):.1f}–{100 * max(layers[1:-1]):.1f}")


def _invocations(env: dict) -> str:
    inv = env.get("invocations") or []
    if len(inv) <= 1:
        return f"started {env['date']}, load average at start {env['load_start']}"
    parts = [f"`{i['args'] or '(defaults)'}` at {i['date']} for {i['wall_s'] / 60:.1f} min (load {i['load_start']})" for i in inv]
    return f"resumed {len(inv)} times: " + "; ".join(parts)


def _save_state(path: Path, env: dict, t0: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: env[k] for k in ("command", "date", "load_start")}
    state["wall_s"] = env["previous_s"] + time.perf_counter() - t0
    inv = [dict(i) for i in env.get("invocations", [])]
    inv[-1]["wall_s"] = time.perf_counter() - t0
    state["invocations"] = inv
    path.write_text(json.dumps(state, indent=1))


def _render_now(root: Path, env: dict, t0: float, all_jobs: list[Job]) -> str:
    env = dict(env)
    env["load_end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    env["wall_min"] = (env["previous_s"] + time.perf_counter() - t0) / 60
    env["done"] = sum(_load(j.out(root)) is not None for j in all_jobs)
    env["total"] = len(all_jobs)
    return render(collect(root), env)


if __name__ == "__main__":
    raise SystemExit(main())
