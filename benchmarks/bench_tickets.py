"""Ticket benchmark: CTS vs pruning-at-init baselines vs LTR on Fashion-MNIST (``make bench-tickets``).

Every ticket is produced by the product itself, ``sparsekit.pipeline.prune(PruneConfig(...))`` with the
default training recipe (SGD 0.1 / momentum 0.9 / wd 1e-4 / batch 128, cosine over pretrain + fine-tune
epochs, augment auto = none for Fashion-MNIST): pretrain 1 epoch -> search at theta_1 -> fine-tune E
epochs from theta_1 with the mask held exactly. Wall time per ticket = pretrain + search + fine-tune
(LTR: every IMP round + the final fine-tune). Focus sparsity 99.26 % (= 1 - 0.8^22, round 22 of IMP at
20 % per round), then 98 %.

Scaled to a 2-core CPU shared with other work (ONE torch thread):
  * lenet300 on the full Fashion-MNIST (60k / 10k), E = 3. CTS at its DEFAULT search length and batch
    (the reference rule of sparsekit.methods.cts.default_search_epochs: 2,006 steps at batch 512 here),
    plus an accuracy-vs-search-steps curve at --search-steps 400 / 1,000 / 4,000 (batch 512).
  * resnet20 (BatchNorm) on a seeded 5,000 train / 1,000 test subset of Fashion-MNIST (1x28x28 IDX files
    written under OUT/fmnist-subset-* and loaded through --data-dir), E = 1. The default CTS length
    there is 2,000 steps at batch 512 (~1M image passes, over 200 epochs of the subset), out of reach of
    this machine in the time available (the report extrapolates its cost from the measured step time),
    so resnet20 CTS runs --search-steps 400 (GradBalance's settle length) at batch 64, marked as such.
    Each resnet20 ticket is also evaluated with its BN running statistics recomputed for its final
    weights (20 training batches of 256, the pipeline's own procedure): before PruneConfig.bn_recalibrate
    (default on since 2026-12-03) the running statistics the short fine-tune left behind put every ticket
    near chance (10 %) at 99.26 % in eval mode; with it run.json's accuracy IS the recalibrated one, and
    the column checks that.
    Sanity check of the CTS and LTR tickets at 99.26 %: the layerwise shuffle of `sparsekit sanity`
    (same shuffle seed, same fine-tune through sparsekit.sanity's run wrapper), SANITY_SEEDS training
    seed(s), evaluated both ways.

Methods: CTS-KL, CTS-CE, LTR, SNIP, GraSP (lenet300 only), SynFlow, magnitude, random, and the dense
reference (same budget, no mask; measured with the magnitude ticket). LTR: 20 % of the survivors per
round, rewind to theta_1, E epochs per round, a separate IMP run per sparsity.

Priority order (no new run starts after --max-minutes; the report lists the missing cells): seed 0 of
lenet300 at 99.26 % (baselines + default CTS), seed 0 of resnet20 at 99.26 % (baselines, CTS-KL), the lenet300
curve at 400 / 1,000 steps, resnet20's LTR, the sanity checks of its CTS-KL and LTR tickets, its CTS-CE
(and sanity), the curve at 4,000 steps, then seeds 1 and 2, then 98 %.
Resumable: each ticket is its own run directory under --out; completed runs are read back, not redone.
``--models resnet20`` runs only that model's jobs, ordered: seed 0 at 99.26 % (every method), seed 0 at
98 %, the sanity checks of seed 0, then seeds 1 and 2.

Usage:
    .venv/bin/python benchmarks/bench_tickets.py [--out .bench/tickets-v3] [--max-minutes 60] [--models resnet20]
    .venv/bin/python benchmarks/bench_tickets.py --report-only
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import datetime as _dt
import json
import logging
import platform
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _subset import write_subset  # noqa: E402

from sparsekit import paths  # noqa: E402
from sparsekit._io import write_json, write_marked_section  # noqa: E402
from sparsekit.data import load_dataset  # noqa: E402
from sparsekit.methods.cts import Options as CtsOptions  # noqa: E402
from sparsekit.pipeline import PruneConfig, prune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "bench-tickets"
FOCUS = 1 - 0.8**22  # 99.26 %
SPARSITIES = (0.98, FOCUS)
CURVE = (400, 1000, None, 4000)  # search steps of the lenet300 curve; None = the default length
CTS_BATCH = CtsOptions().batch_size  # the default CTS search batch (512)
SANITY_SEEDS = 1  # training seeds per sanity variant (>= 2 give a verdict; 1 fits the time here)

METHODS = {  # label -> (method, options)
    "cts-kl": ("cts", {"objective": "kl"}),
    "cts-ce": ("cts", {"objective": "ce"}),
    "ltr": ("ltr", {}),
    "snip": ("snip", {}),
    "grasp": ("grasp", {}),
    "synflow": ("synflow", {}),
    "magnitude": ("magnitude", {}),
    "random": ("random", {}),
}
CTS = ("cts-kl", "cts-ce")
PAI = ("snip", "grasp", "synflow", "magnitude", "random")


@dataclass(frozen=True)
class ModelPlan:
    model: str
    finetune_epochs: int
    methods: tuple[str, ...]
    cts_steps: int | None  # None: the default search length
    cts_batch: int | None  # None: the method's default batch (512)
    subset: tuple[int, int] | None = None  # (train, test) images, None = full dataset
    note: str = ""
    batch_size: int = 128  # SGD batch of pretraining / fine-tuning / LTR rounds (the default recipe)


PLANS = {
    "lenet300": ModelPlan("lenet300", 3, ("magnitude", "snip", "grasp", "synflow", "random", "cts-kl", "cts-ce"),
                          None, None, None,
                          "full Fashion-MNIST (60k train / 10k test)"),
    # priority order of the methods inside a seed: the cheap baselines, then CTS-KL, LTR, CTS-CE
    "resnet20": ModelPlan("resnet20", 1, ("magnitude", "snip", "synflow", "random", "cts-kl", "ltr", "cts-ce"),
                          400, 64, (5000, 1000),
                          "Fashion-MNIST subset: 5,000 train / 1,000 test images (seeded), 1x28x28"),
}


def sp_tag(sparsity: float) -> str:
    return f"sp{100 * sparsity:.2f}"


@dataclass(frozen=True)
class Job:
    plan: ModelPlan
    label: str
    sparsity: float
    seed: int
    steps: int | None = None  # CTS search steps (None: the plan's)
    curve: bool = False  # a point of the search-length curve (explicit steps at the default batch)
    sanity: bool = False  # the sanity checks of the ticket (plan, label, sparsity, seed)
    recal: bool = False  # the ticket's accuracy with BN statistics recomputed for its final weights

    @property
    def cts_steps(self) -> int | None:
        return self.steps if self.curve else self.plan.cts_steps

    @property
    def cts_batch(self) -> int | None:
        return None if self.curve else self.plan.cts_batch

    def ticket_dir(self, root: Path) -> Path:
        name = self.label
        if self.label in CTS and (self.cts_steps is not None or self.cts_batch is not None):
            name += f"-s{self.cts_steps or 'default'}" + (f"-b{self.cts_batch}" if self.cts_batch else "")
        return root / self.plan.model / name / sp_tag(self.sparsity) / f"s{self.seed}"

    def out(self, root: Path) -> Path:
        if self.sanity or self.recal:
            t = self.ticket_dir(root)
            return root / ("sanity" if self.sanity else "recal") / t.relative_to(root).with_suffix(".json")
        return self.ticket_dir(root)

    def describe(self) -> str:
        what = "sanity of " if self.sanity else "BN-recalibrated eval of " if self.recal else ""
        steps = f" ({self.cts_steps or 'default'} steps)" if self.label in CTS else ""
        return f"{what}{self.plan.model} {self.label}{steps} {100 * self.sparsity:.2f}% seed {self.seed}"


def jobs() -> list[Job]:
    """All jobs in priority order (see the module doc)."""
    le, rn = PLANS["lenet300"], PLANS["resnet20"]
    out: list[Job] = []

    def ticket(job: Job) -> None:
        out.append(job)
        if job.plan.model == "resnet20":
            out.append(Job(job.plan, job.label, job.sparsity, job.seed, recal=True))

    def tickets(plan: ModelPlan, sparsity: float, seed: int) -> None:
        for label in plan.methods:
            ticket(Job(plan, label, sparsity, seed))

    def curve(seed: int, steps=CURVE) -> None:
        out.extend(Job(le, label, FOCUS, seed, steps=s, curve=True)
                   for s in steps if s is not None for label in CTS)

    def sanity(seed: int, labels=("cts-kl", "ltr", "cts-ce")) -> None:
        out.extend(Job(rn, label, FOCUS, seed, sanity=True) for label in labels)

    tickets(le, FOCUS, 0)
    for label in rn.methods:
        if label not in ("ltr", "cts-ce"):
            ticket(Job(rn, label, FOCUS, 0))
    curve(0, (400, 1000))
    ticket(Job(rn, "ltr", FOCUS, 0))
    sanity(0, ("cts-kl", "ltr"))
    ticket(Job(rn, "cts-ce", FOCUS, 0))
    sanity(0, ("cts-ce",))
    curve(0, (4000,))
    for seed in (1, 2):
        tickets(le, FOCUS, seed)
        tickets(rn, FOCUS, seed)
        sanity(seed)
    out.append(Job(le, "ltr", FOCUS, 0))
    for seed in (1, 2):
        curve(seed)
    for seed in (0, 1, 2):
        tickets(rn, 0.98, seed)
    return out


def model_jobs(models: list[str]) -> list[Job]:
    """The jobs of ``models`` only, ordered: seed 0 at the focus sparsity, seed 0 at 98 %, the sanity
    checks of seed 0, then the other seeds (stable: the priority order of ``jobs`` inside each group)."""
    def rank(j: Job) -> int:
        if j.seed == 0 and not j.sanity and not j.curve:
            return 0 if _key(j.sparsity) == _key(FOCUS) else 1
        return 2 if j.seed == 0 else 3
    return sorted((j for j in jobs() if j.plan.model in models), key=rank)


def run_job(job: Job, root: Path, data, data_dir: Path | None) -> str:
    """Run one job; return a one-line summary."""
    if job.sanity:
        return run_sanity_job(job, root, data, data_dir)
    if job.recal:
        return run_recal_job(job, root, data)
    method, opts = METHODS[job.label]
    opts = dict(opts)
    if method == "cts" and job.cts_batch is not None:
        opts["batch_size"] = job.cts_batch
    cfg = PruneConfig(
        model=job.plan.model, data="fashion-mnist", method=method, sparsity=job.sparsity,
        out=str(job.out(root)), seed=job.seed, pretrain_epochs=1,
        search_steps=job.cts_steps if method == "cts" else None,
        finetune_epochs=job.plan.finetune_epochs, method_options=opts,
        dense_reference=(job.label == "magnitude"), batch_size=job.plan.batch_size,
        data_dir=str(data_dir) if data_dir else None,
        # a global ranking may empty a layer at 99 %+ (magnitude/random/...): measured and marked, not refused
        allow_layer_collapse=True,
    )
    r = prune(cfg, data=data)
    return (f"acc {100 * r['accuracy']:.2f} (before ft {100 * r['accuracy_before_finetune']:.1f}) "
            f"ticket {r['timings']['ticket_total_s']:.0f}s")


def _recal_eval(model: torch.nn.Module, data, seed: int) -> float:
    """Test accuracy of an (already masked) model with its BN running statistics recomputed over 20
    shuffled training batches of 256 (pipeline._masked_bn_stats' procedure)."""
    from sparsekit.masking.bn_stats import recalibrate
    from sparsekit.train.loop import evaluate

    batches = (x for x, _ in data.batches("train", 256, shuffle=True, seed=seed, limit=256 * 20))
    model.load_state_dict(recalibrate(model, model, batches), strict=False)
    return evaluate(model, data)["accuracy"]


def _final_model(ticket: Path):
    from sparsekit.models.registry import build_model
    from sparsekit.ticket import Ticket, load_state

    t = Ticket.load(ticket)
    model = build_model(t.spec, seed=0)
    load_state(model, t.state("final"), str(ticket))
    t.mask().apply(model)
    return model, int(t.meta["seed"]), float(t.meta["metrics"]["accuracy"])


def run_recal_job(job: Job, root: Path, data) -> str:
    ticket = job.ticket_dir(root)
    if _load(ticket) is None:
        return "skipped: the ticket is not complete"
    model, seed, acc = _final_model(ticket)
    rec = {"accuracy_run_json": acc, "accuracy_bn_recalibrated": _recal_eval(model, data, seed),
           "how": "BN running statistics recomputed for the final masked weights over 20 shuffled training "
                  "batches of 256 (seed = the run's), then test accuracy"}
    write_json(job.out(root), rec)
    return f"run.json {100 * acc:.2f} / BN recalibrated {100 * rec['accuracy_bn_recalibrated']:.2f}"


def run_sanity_job(job: Job, root: Path, data, data_dir: Path | None) -> str:
    """Layerwise shuffle as `sparsekit sanity` does it (its run wrapper, shuffle seed and fine-tune), each
    shuffled ticket evaluated with the running BN statistics its fine-tune leaves and recalibrated."""
    from sparsekit.sanity import SHUFFLE_SEED, _Run, layerwise_shuffle

    ticket = job.ticket_dir(root)
    if _load(ticket) is None:
        return "skipped: the ticket is not complete"
    t = time.perf_counter()
    run = _Run(ticket, data, str(data_dir) if data_dir else None, "cpu")
    model, seed, acc = _final_model(ticket)
    rec: dict = {"ticket": {"accuracy_run_json": acc, "accuracy_bn_recalibrated": _recal_eval(model, data, seed)},
                 "shuffle": [], "seeds": SANITY_SEEDS}
    for j in range(SANITY_SEEDS):
        mask = layerwise_shuffle(run.mask, SHUFFLE_SEED + run.seed + j)
        model = run.model_at_theta_k()
        ema = run.finetune(model, mask, run.seed + j)  # trains in place, mask applied
        rec["shuffle"].append({"accuracy": ema, "accuracy_bn_recalibrated": _recal_eval(model, data, run.seed)})
    rec["wall_s"] = time.perf_counter() - t
    write_json(job.out(root), rec)
    sh = ", ".join(f"{100 * x['accuracy']:.1f} / {100 * x['accuracy_bn_recalibrated']:.1f}" for x in rec["shuffle"])
    return f"ticket {100 * acc:.1f} / {100 * rec['ticket']['accuracy_bn_recalibrated']:.1f}, shuffled {sh}"


# ---------------------------------------------------------------------------------------------
# collecting results


def _load(run: Path) -> dict | None:
    f = paths.run_json(run)
    if not f.exists():
        return None
    meta = json.loads(f.read_text())
    return meta if meta.get("complete") else None


def _done(job: Job, root: Path) -> bool:
    return job.out(root).is_file() if job.sanity or job.recal else _load(job.out(root)) is not None


def _key(sparsity: float) -> float:
    return round(sparsity, 6)


def collect(root: Path) -> dict:
    """{model: {row label: {sparsity: {seed: row}}}}; curve points are rows "cts-kl@400" etc.,
    sanity results rows "sanity:cts-kl"."""
    res: dict = {}
    for job in jobs():
        if job.sanity:
            f = job.out(root)
            if f.is_file():
                row = json.loads(f.read_text())
                res.setdefault(job.plan.model, {}).setdefault(f"sanity:{job.label}", {}).setdefault(
                    _key(job.sparsity), {})[job.seed] = row
            continue
        if job.recal:
            continue  # read with the ticket's row
        meta = _load(job.out(root))
        if meta is None:
            continue
        t = meta["timings"]
        info = meta.get("method", {}).get("info", {}) or {}
        row = {
            "acc": meta["metrics"]["accuracy"],
            "before": meta["metrics"].get("accuracy_before_finetune"),
            "time": t.get("pretrain_s", 0) + t.get("search_s", 0) + t.get("finetune_s", 0),
            "search": t.get("search_s", 0),
            "dense": meta["metrics"].get("dense_accuracy"),
            "dense_s": t.get("dense_s"),
            "theta_k": meta["metrics"].get("accuracy_at_theta_k"),
            "layers": [1 - layer["sparsity"] for layer in meta["layers"]],
            "collapsed": len(info.get("collapsed_layers") or []),
            "created": meta.get("created"),
            "steps": info.get("steps"),
            "recal": _recal_of(job, root),
            "bn_recalibrate": bool((meta.get("config") or {}).get("bn_recalibrate")),
            "batch": ((meta.get("method", {}).get("options") or {}).get("batch_size") or CTS_BATCH)
            if job.label in CTS else None,
        }
        label = f"{job.label}@{job.cts_steps}" if job.curve else job.label
        res.setdefault(job.plan.model, {}).setdefault(label, {}).setdefault(_key(job.sparsity), {})[job.seed] = row
        if job.label in CTS and job.plan.cts_steps is None and not job.curve:  # the default-length curve point
            res[job.plan.model].setdefault(f"{job.label}@default", {}).setdefault(_key(job.sparsity), {})[job.seed] = row
    return res


def _recal_of(job: Job, root: Path) -> float | None:
    f = Job(job.plan, job.label, job.sparsity, job.seed, job.steps, job.curve, recal=True).out(root)
    return json.loads(f.read_text())["accuracy_bn_recalibrated"] if f.is_file() else None


def _ms(vals: list[float], pct: bool = True) -> str:
    k = 100.0 if pct else 1.0
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{k * vals[0]:.1f}" if pct else f"{vals[0]:.0f}"
    if pct:
        return f"{k * statistics.fmean(vals):.1f} ± {k * statistics.stdev(vals):.1f}"
    return f"{statistics.fmean(vals):.0f} ± {statistics.stdev(vals):.0f}"


def _cell(res: dict, model: str, label: str, sp: float, key: str) -> list:
    rows = res.get(model, {}).get(label, {}).get(_key(sp), {})
    return [r[key] for _, r in sorted(rows.items()) if r.get(key) is not None]


def _steps_desc(res: dict, model: str, label: str, sp: float) -> str:
    steps = sorted(set(_cell(res, model, label, sp, "steps")))
    batch = sorted(set(_cell(res, model, label, sp, "batch")))
    if not steps:
        return "–"
    return f"{'/'.join(f'{s:,}' for s in steps)} × {'/'.join(map(str, batch)) or '?'}"


def render(res: dict, env: dict, missing: list[str]) -> str:
    lines = ["## Tickets: CTS vs pruning-at-init vs LTR (Fashion-MNIST)", ""]
    lines += [
        f"- command: `.venv/bin/python benchmarks/bench_tickets.py` ({_invocations(env)})",
        f"- sparsekit commit measured: {_commits(env)}; report written {env['now']}",
        *([f"- note: {env['note']}"] if env.get("note") else []),
        f"- machine: {env['cpu']}, {env['cores']} cores shared with other engineers' jobs (load average at the "
        f"end {env['load_end']}), torch {env['torch']} with `torch.set_num_threads({env['threads']})` and "
        f"OMP/MKL_NUM_THREADS=1, Python {env['python']}",
        f"- benchmark wall time: {env['wall_min']:.1f} min ({env['done']} of {env['total']} planned jobs done)",
        "",
        "Protocol: `sparsekit.pipeline.prune` per ticket with the default recipe (SGD lr 0.1, momentum 0.9, "
        "wd 1e-4, batch 128, cosine schedule over pretrain + fine-tune epochs, no warm-up, augment auto = none "
        "for Fashion-MNIST) — dense pretraining 1 epoch (rewind point theta_1), mask search at theta_1, "
        "fine-tune E epochs from theta_1 with the mask held exactly, top-1 test accuracy. Same E for every "
        "method of a model. Exact global top-k to the target sparsity. CTS: GradBalance, Adam 0.1 on the "
        "logits, tau 2/3, lr x0.1 for the last 12 % of steps; its search length is given per row (steps × "
        "batch). LTR: IMP, 20 % of the survivors per round, rewind to theta_1, every round trains E epochs, "
        "one IMP run per sparsity (22 rounds to 99.26 %). Wall time per ticket = pretrain + search + "
        "fine-tune; LTR = pretrain + every IMP round + the final fine-tune. A mask that empties a prunable "
        "layer is kept (`--allow-layer-collapse`) and marked †. Mean ± sample std over seeds (n = seeds). "
        "Wall times are under a shared, varying load: compare methods measured in the same stretch.",
        "",
    ]
    for model, plan in PLANS.items():
        if model not in res:
            continue
        lines += _model_section(res, model, plan)
    if missing:
        lines += ["**Not measured** (planned, not run before the deadline):", ""]
        lines += [f"- {m}" for m in missing]
        lines.append("")
    return "\n".join(lines)


def _model_section(res: dict, model: str, plan: ModelPlan) -> list[str]:
    F = FOCUS
    dense, dense_s = _cell(res, model, "magnitude", F, "dense"), _cell(res, model, "magnitude", F, "dense_s")
    tk = _cell(res, model, "magnitude", F, "theta_k")
    shown = [label for label in METHODS if label in plan.methods or label in res.get(model, {})]
    recal = any(_cell(res, model, label, sp, "recal") for label in shown for sp in SPARSITIES)
    cts_len = ("the default search length and batch" if plan.cts_steps is None else
               f"`--search-steps {plan.cts_steps}` at batch {plan.cts_batch} (NOT the default length, see below)")
    lines = [f"### {model} — {plan.note}", "",
             f"Fine-tune E = {plan.finetune_epochs} epoch(s); CTS rows: {cts_len}. Dense accuracy at theta_1: "
             f"{_ms(tk)} %; **dense reference** (theta_1 + the same {plan.finetune_epochs}-epoch budget, no mask): "
             f"{_ms(dense)} % (n = {len(dense)}, {_ms(dense_s, False)} s).", "",
             "| method | CTS steps × batch | " + " | ".join(f"{100 * sp:.2f} % acc (n)" for sp in SPARSITIES)
             + "".join(f" | {100 * sp:.2f} % acc, BN recalibrated (n)" for sp in SPARSITIES if recal)
             + " | " + " | ".join(f"{100 * sp:.2f} % wall s" for sp in SPARSITIES)
             + f" | {100 * F:.2f} %: before fine-tune % | per-layer density % (seed 0) |",
             "|---|---|" + "---|" * ((3 if recal else 2) * len(SPARSITIES) + 2)]
    for label in shown:
        accs = []
        for key in ("acc", "recal") if recal else ("acc",):
            for sp in SPARSITIES:
                a = _cell(res, model, label, sp, key)
                col = sum(_cell(res, model, label, sp, "collapsed"))
                accs.append(f"{_ms(a)} ({len(a)}){' †' if col else ''}" if a else "–")
        times = [_ms(_cell(res, model, label, sp, "time"), False) for sp in SPARSITIES]
        steps = _steps_desc(res, model, label, F) if label in CTS else ""
        rows = res.get(model, {}).get(label, {}).get(_key(F), {})
        layers = next((r["layers"] for _, r in sorted(rows.items()) if r.get("layers")), None)
        lines.append(f"| {label} | {steps} | " + " | ".join(accs) + " | " + " | ".join(times)
                     + f" | {_ms(_cell(res, model, label, F, 'before'))} | {_layers(layers)} |")
    per_seed = [f"{label} {', '.join(f'{100 * a:.1f}' for a in _cell(res, model, label, F, 'acc'))}"
                for label in shown if _cell(res, model, label, F, "acc")]
    lines += ["", f"Per seed at {100 * F:.2f} % (seeds 0, 1, 2 in order): " + "; ".join(per_seed) + ".", ""]
    if recal:
        lines += _recal_note(res, model, shown)
    if model == "lenet300":
        lines += _curve(res, model)
    if plan.cts_steps is not None:
        lines += _default_cost(res, model, plan)
    lines += _sanity(res, model)
    lines += _targets(res, model, "acc", "run.json accuracy")
    if recal and not all(_cell(res, model, label, sp, "bn_recalibrate") == [True] * len(_cell(res, model, label, sp, "acc"))
                         for label in shown for sp in SPARSITIES):  # with bn_recalibrate both are run.json's
        lines += _targets(res, model, "recal", "BN-recalibrated accuracy")
    return lines


def _recal_note(res: dict, model: str, shown: list[str]) -> list[str]:
    """What the two accuracy columns are, and how far apart they measured."""
    pairs = [(r["acc"], r["recal"], bool(r.get("bn_recalibrate"))) for label in shown
             for rows in res.get(model, {}).get(label, {}).values() for r in rows.values()
             if r.get("recal") is not None]
    gap = max((abs(a - b) for a, b, _ in pairs), default=0.0)
    on = sum(1 for *_, flag in pairs if flag)
    text = ("*acc* is the ticket's accuracy as `sparsekit prune` records it in run.json; *BN recalibrated* is the "
            "same final weights with the BN running statistics recomputed again by the benchmark "
            "(`sparsekit.masking.bn_stats.recalibrate` over 20 training batches of 256, seed = the run's). ")
    if on == len(pairs):
        text += (f"Every ticket here ran with `bn_recalibrate` on (the default: the pipeline recomputes BN "
                 f"statistics after fine-tuning, for the ticket and the dense reference), so the columns must "
                 f"agree: largest difference {100 * gap:.2f} pp over {len(pairs)} tickets.")
    else:
        text += (f"{len(pairs) - on} of {len(pairs)} tickets ran without `bn_recalibrate` (run.json keeps the BN "
                 f"statistics the short fine-tune leaves); largest difference {100 * gap:.1f} pp.")
    return [text, ""]


def _curve(res: dict, model: str) -> list[str]:
    F = FOCUS
    pts = [f"@{s}" if s is not None else "@default" for s in CURVE]
    if not any(_cell(res, model, f"{label}{p}", F, "acc") for label in CTS for p in pts):
        return []
    out = [f"Accuracy vs CTS search steps at {100 * F:.2f} % (batch 512; `--search-steps N`, the default-length "
           "column has neither flag): accuracy after fine-tune % / before fine-tune % / search s, mean ± std (n):",
           "", "| objective | " + " | ".join(
               f"{s:,} steps" if s is not None else
               f"default ({'/'.join(f'{n:,}' for n in sorted(set(_cell(res, model, 'cts-kl', F, 'steps'))))} steps)"
               for s in CURVE) + " |", "|---|" + "---|" * len(CURVE)]
    for label in CTS:
        cells = []
        for p in pts:
            a = _cell(res, model, f"{label}{p}", F, "acc")
            cells.append(f"{_ms(a)} / {_ms(_cell(res, model, f'{label}{p}', F, 'before'))} / "
                         f"{_ms(_cell(res, model, f'{label}{p}', F, 'search'), False)} ({len(a)})" if a else "–")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out + [""]


def _default_cost(res: dict, model: str, plan: ModelPlan) -> list[str]:
    """The default CTS length on this model, and its cost extrapolated from the measured step time."""
    n_train = plan.subset[0] if plan.subset else 60000
    from sparsekit.methods.cts import REFERENCE_MIN_STEPS, default_search_epochs

    per_epoch = -(-n_train // 512)
    epochs = default_search_epochs(1 + plan.finetune_epochs, per_epoch, 0.01)
    steps = epochs * per_epoch
    out = [f"CTS search length on {model}: the default rule gives {epochs} epochs × {per_epoch} steps = {steps:,} "
           f"steps at batch 512 ({steps * 512 / n_train:.0f} passes over the {n_train:,} training images; the "
           f"{REFERENCE_MIN_STEPS:,}-step floor binds because the training budget is {1 + plan.finetune_epochs} "
           f"epochs). Not run here."]
    for label in CTS:
        s, st = _cell(res, model, label, FOCUS, "search"), _cell(res, model, label, FOCUS, "steps")
        b = _cell(res, model, label, FOCUS, "batch")
        ltr = _cell(res, model, "ltr", FOCUS, "time")
        if s and st and b:
            per_img = statistics.fmean(x / (n * bb) for x, n, bb in zip(s, st, b, strict=True))
            est = per_img * steps * 512
            rel = f", {est / statistics.fmean(ltr):.1f}× LTR's measured wall time" if ltr else ""
            out.append(f"{label}: measured {1000 * per_img:.2f} ms per search image at batch {b[0]} → the default "
                       f"search alone would take ~{est / 60:.0f} min at that load (extrapolated linearly in images, "
                       f"not measured{rel}).")
    return [" ".join(out), ""]


def _sanity(res: dict, model: str) -> list[str]:
    F = FOCUS
    rows = [(label, seed, r) for label in (*CTS, "ltr")
            for seed, r in sorted(res.get(model, {}).get(f"sanity:{label}", {}).get(_key(F), {}).items())]
    if not rows:
        return []
    out = [f"Sanity check at {100 * F:.2f} %: layerwise shuffle (each layer's mask permuted at random, same per-layer "
           "counts; the shuffle seed, theta_1 and the fine-tune of `sparsekit sanity`), trained with the ticket's "
           f"budget, {SANITY_SEEDS} training seed(s); run.json-style accuracy / BN-recalibrated accuracy. A ticket "
           "whose shuffled mask does as well *survives shuffling* and fails the check (only its per-layer "
           "densities matter). With one training seed `sparsekit sanity` gives no verdict (it needs the seed "
           "noise); the deltas are as measured.", "",
           "| ticket | seed | ticket % | shuffled % | delta (recalibrated) pp | s |", "|---|---|---|---|---|---|"]
    for label, seed, r in rows:
        t = r["ticket"]
        sh = r["shuffle"]
        shr = statistics.fmean(x["accuracy_bn_recalibrated"] for x in sh)
        shs = ", ".join(f"{100 * x['accuracy']:.1f} / {100 * x['accuracy_bn_recalibrated']:.1f}" for x in sh)
        out.append(f"| {label} | {seed} | {100 * t['accuracy_run_json']:.1f} / {100 * t['accuracy_bn_recalibrated']:.1f} "
                   f"| {shs} "
                   f"| {100 * (shr - t['accuracy_bn_recalibrated']):+.1f} | {r.get('wall_s', 0):.0f} |")
    return out + [""]


def _targets(res: dict, model: str, key: str, what: str) -> list[str]:
    """Issue 21's targets at 99.26 %, read automatically from the means above (``key``: acc or recal)."""
    F = FOCUS
    cts = {label: a for label in CTS if (a := _cell(res, model, label, F, key))}
    if not cts:
        return []
    pai = max(((statistics.fmean(b), lab) for lab in PAI if (b := _cell(res, model, lab, F, key))), default=None)
    out = [f"Targets at {100 * F:.2f} % on the {what} (issue 21; automatic, from the means above):", ""]
    if model == "lenet300":
        kl = cts.get("cts-kl")
        if pai and kl:
            for label, a in cts.items():
                d = statistics.fmean(a) - pai[0]
                dflt = " (the default objective)" if label == "cts-kl" else ""
                out.append(f"* {label}{dflt} at the default length ≥ best PaI + 1.5 pt: {100 * statistics.fmean(a):.1f} % "
                           f"vs {pai[1]} {100 * pai[0]:.1f} %: {100 * d:+.1f} pp → {'met' if d >= 0.015 else 'NOT met'}"
                           f"{_noise(d - 0.015, a, _cell(res, model, pai[1], F, key))}")
        return out + [""]
    ltr = _cell(res, model, "ltr", F, key)
    # the issue asks for "CTS-KL or CTS-CE": every variant is checked on all three targets, and the verdict
    # is whether one variant meets all of them (the best-accuracy variant need not be the fastest)
    t_l = _cell(res, model, "ltr", F, "time")
    all_met = []
    for label, a in cts.items():
        acc = statistics.fmean(a)
        met = []
        if pai:
            d = acc - pai[0]
            met.append(d >= 0.02)
            out.append(f"* {label} ({100 * acc:.1f} %) ≥ best PaI + 2 pt: vs {pai[1]} {100 * pai[0]:.1f} %: "
                       f"{100 * d:+.1f} pp → {'met' if met[-1] else 'NOT met'}"
                       f"{_noise(d - 0.02, a, _cell(res, model, pai[1], F, key))}")
        if ltr:
            d = acc - statistics.fmean(ltr)
            met.append(d >= -0.01)
            out.append(f"* {label} ≥ LTR − 1 pt: LTR {100 * statistics.fmean(ltr):.1f} %: {100 * d:+.1f} pp → "
                       f"{'met' if met[-1] else 'NOT met'}{_noise(d + 0.01, a, ltr)}")
            t_c = _cell(res, model, label, F, "time")
            if t_c and t_l:
                r = statistics.fmean(t_c) / statistics.fmean(t_l)
                met.append(r <= 0.25)
                out.append(f"* {label} wall time ≤ 1/4 of LTR's: {statistics.fmean(t_c):.0f} s / "
                           f"{statistics.fmean(t_l):.0f} s = {r:.2f} → {'met' if met[-1] else 'NOT met'} "
                           "(at the search length of the table, not the default; wall times of a shared machine)")
        if len(met) == 3 and all(met):
            all_met.append(label)
    if pai and ltr:
        out.append(f"* one CTS variant meeting all three: {', '.join(all_met) if all_met else 'none'}")
    return out + [""]


def _noise(margin: float, *groups: list[float]) -> str:
    """' (within noise ...)' when the margin to a threshold is below 2 x the larger seed std."""
    stds = [statistics.stdev(g) for g in groups if len(g) > 1]
    if not stds:
        return " (one seed: no noise estimate)"
    noise = 2 * max(stds)
    return f" (within noise: margin {100 * margin:+.1f} pp vs 2 × seed std {100 * noise:.1f} pp)" if abs(margin) < noise else ""


def _layers(layers: list[float] | None) -> str:
    if not layers:
        return "–"
    if len(layers) <= 6:
        return " / ".join(f"{100 * x:.2f}" for x in layers)
    return (f"first {100 * layers[0]:.1f}, last {100 * layers[-1]:.1f}, others "
            f"{100 * min(layers[1:-1]):.1f}–{100 * max(layers[1:-1]):.1f}")


# ---------------------------------------------------------------------------------------------
# environment, state, main


def environment(argv: list[str]) -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from sparsekit.bench.env import git_commit

    return {
        "command": " ".join([".venv/bin/python", "benchmarks/bench_tickets.py", *map(shlex.quote, argv)]),
        "commit": git_commit(),
        "date": _now(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_start": _load_avg(),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _load_avg() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def _commits(env: dict) -> str:
    seen = [i["commit"] for i in env.get("invocations") or [] if i.get("commit")]
    return ", ".join(dict.fromkeys(seen)) or str(env.get("commit"))


def _invocations(env: dict) -> str:
    inv = env.get("invocations") or []
    parts = [f"`{re.sub(r'--note .*?(?= --|$)', '--note (below)', i['args']) or '(defaults)'}` at {i['date']} for {i['wall_s'] / 60:.1f} min (load average at start "
             f"{i['load_start']})" for i in inv]
    return ("invocations: " + "; ".join(parts)) if parts else f"started {env['date']}"


def _save_state(path: Path, env: dict, t0: float) -> None:
    state = {"wall_s": env["previous_s"] + time.perf_counter() - t0, "invocations": [dict(i) for i in env["invocations"]]}
    if env.get("note"):
        state["note"] = env["note"]
    if state["invocations"]:
        state["invocations"][-1]["wall_s"] = time.perf_counter() - t0
        env["invocations"][-1]["wall_s"] = state["invocations"][-1]["wall_s"]  # the report's line too
    write_json(path, state)


def _write_report(root: Path, env: dict, t0: float, all_jobs: list[Job]) -> None:
    env = dict(env)
    env["now"] = _now()
    env["load_end"] = _load_avg()
    env["wall_min"] = (env["previous_s"] + time.perf_counter() - t0) / 60
    done = [_done(j, root) for j in all_jobs]
    env["done"], env["total"] = sum(done), len(all_jobs)
    missing = _group_missing([j for j, d in zip(all_jobs, done, strict=True) if not d])
    write_marked_section(DOC, SECTION, render(collect(root), env, missing))


def _group_missing(missing: list[Job]) -> list[str]:
    """One line per (what, model, sparsity, seed): 'resnet20 99.26 % seed 1: cts-kl, ltr'."""
    groups: dict[str, list[str]] = {}
    for j in missing:
        if j.recal:
            continue  # part of its ticket's row (listed with the ticket)
        what = ("sanity checks of " if j.sanity else "search-length curve, " if j.curve else "")
        key = f"{what}{j.plan.model} {100 * j.sparsity:.2f} % seed {j.seed}"
        groups.setdefault(key, []).append(f"{j.label} {j.cts_steps} steps" if j.curve else j.label)
    return [f"{k}: {', '.join(v)}" for k, v in groups.items()]


def main(argv: list[str] | None = None) -> int:
    global DOC
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / ".bench" / "tickets-v3"), help="root of the run directories")
    ap.add_argument("--max-minutes", type=float, default=60.0, help="start no new job after this")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--report-only", action="store_true", help="only rewrite docs/benchmarks.md from existing runs")
    ap.add_argument("--doc", default=str(DOC), help="markdown file whose bench-tickets section is rewritten")
    ap.add_argument("--note", default=None, help="a line about how the runs were made (kept with the runs)")
    ap.add_argument("--models", nargs="+", choices=sorted(PLANS), default=None,
                    help="run only these models' jobs (seed 0 focus, seed 0 98 %%, sanity, other seeds)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="run only these seeds' jobs")
    ap.add_argument("--sparsities", nargs="+", type=float, default=None,
                    help="run only the jobs at these sparsities (e.g. 0.98; a second root can run them on another core)")
    args = ap.parse_args(argv)
    DOC = Path(args.doc)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    root = Path(args.out)
    env = environment(argv)
    state_file = root / "bench_state.json"  # wall time and invocations accumulate over resumed runs
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    env["previous_s"] = state.get("wall_s", 0.0)
    env["invocations"] = list(state.get("invocations", []))
    env["note"] = args.note or state.get("note")
    if not args.report_only:
        env["invocations"].append({"args": " ".join(argv), "date": env["date"], "load_start": env["load_start"],
                                   "commit": env["commit"], "wall_s": 0.0})
    t0 = time.perf_counter()
    all_jobs = model_jobs(args.models) if args.models else jobs()
    if args.seeds is not None:
        all_jobs = [j for j in all_jobs if j.seed in args.seeds]
    if args.sparsities is not None:
        all_jobs = [j for j in all_jobs if _key(j.sparsity) in {_key(s) for s in args.sparsities}]
    if not args.report_only:
        src = Path("/usr/share/datasets/fashion-mnist")
        data: dict = {}
        for i, job in enumerate(all_jobs):
            elapsed = (time.perf_counter() - t0) / 60
            if elapsed > args.max_minutes:
                print(f"[{elapsed:5.1f} min] time budget reached; {len(all_jobs) - i} jobs not started", flush=True)
                break
            if _done(job, root):
                continue
            plan = job.plan
            if plan.model not in data:
                sub = (write_subset(src, root / f"fmnist-subset-{plan.subset[0]}-{plan.subset[1]}", *plan.subset)
                       if plan.subset else None)
                data[plan.model] = (load_dataset("fashion-mnist", sub), sub)
            bundle, ddir = data[plan.model]
            ts = time.perf_counter()
            print(f"[{elapsed:5.1f} min] {job.describe()} ...", flush=True)
            try:
                summary = run_job(job, root, bundle, ddir)
            except Exception as e:  # one failed job must not stop the others; the report marks it missing
                summary = f"FAILED: {type(e).__name__}: {e}"
            print(f"[{(time.perf_counter() - t0) / 60:5.1f} min] {job.describe()}: {summary}, "
                  f"this call {time.perf_counter() - ts:.0f}s (load {_load_avg()})", flush=True)
            _save_state(state_file, env, t0)
            try:
                _write_report(root, env, t0, all_jobs)
            except Exception as e:  # a report bug must not stop the runs; --report-only redoes it
                print(f"report not written: {type(e).__name__}: {e}", flush=True)
        _save_state(state_file, env, t0)
    _write_report(root, env, t0, all_jobs)
    print(f"wrote {DOC}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
