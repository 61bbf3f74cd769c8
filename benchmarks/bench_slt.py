"""Strong lottery tickets on Fashion-MNIST: gates vs edge-popup, each at its best config (``make bench-slt``).

No weight is ever trained for the tickets (pretrain 0, fine-tune 0): the mask searched over the
frozen initial weights theta_0 (kaiming-normal, the same ``--seed`` hence bit-identical weights for
both methods; checked on every run's theta_k.safetensors) is the whole model. Every run goes through
``sparsekit.pipeline.prune``, so the product is measured.

A fair comparison (issue 21): each method gets the same small grid of 8 configs,
    weight scale (``--weight-scale density`` / ``none``) x search LR x {1, 3} (gates: Adam 0.1 / 0.3 on
    the gate parameters; edge-popup: SGD 0.1 / 0.3 on the scores) x top-k (global / per layer:
    gates ``--global`` / ``--layerwise``, edge-popup ``--opt topk=global`` / ``layer``),
and its best config is picked, per sparsity, on a held-out split of the TRAINING data: the search sees
the first 55,000 training images, the remaining 5,000 score the configs; the test set (10,000) only
reports the picked config. Sparsities 50 / 80 / 90 / 95 / 98 %, seeds 0 / 1 / 2.

Scaled to a 2-core CPU (one torch thread): LeNet-300-100, 938 search steps at batch 128 (2 epochs of
the 55k split; >= the 400 steps GradBalance needs to settle). Config selection uses seed 0 alone
(the grid at seeds 1-2 would triple the cost); the picked config then runs seeds 1 and 2. Runs go in
priority order — seed-0 grid at 95 and 90 %, their seeds 1-2, then 98 / 80 / 50 % likewise — no new run
starts after --budget-min, and the report marks what is missing.

"Sparsity at edge-popup's 90 %-accuracy": mean test accuracy (over seeds) of each method's picked
config, interpolated linearly in log(density) between the grid's sparsities; the highest sparsity at
which the curve is >= edge-popup's mean accuracy at 90 %.

Resumable: each run lives in its own directory under --root; a completed run (run.json complete) is
read back, not redone. Writes its section of docs/benchmarks.md between the bench-slt markers.

Usage:
    .venv/bin/python benchmarks/bench_slt.py [--root .bench/slt-grid] [--budget-min 90]
    .venv/bin/python benchmarks/bench_slt.py --report-only
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from sparsekit import paths  # noqa: E402
from sparsekit._io import write_marked_section  # noqa: E402
from sparsekit.bench.env import git_commit  # noqa: E402
from sparsekit.data import load_dataset  # noqa: E402
from sparsekit.data.bundle import DataBundle  # noqa: E402
from sparsekit.pipeline import PruneConfig, prune  # noqa: E402
from sparsekit.ticket import Ticket  # noqa: E402
from sparsekit.train.loop import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "lenet300"
INIT = "kaiming-normal"
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
PRIORITY = ((0.95, 0.9), (0.98,), (0.8,), (0.5,))
SEEDS = (0, 1, 2)
METHODS = ("gates", "edge-popup")
HOLDOUT = 5000
STEPS = 938
BATCH = 128
BASE_LR = {"gates": 0.1, "edge-popup": 0.1}
#: the grid: (weight scale, LR multiplier, top-k)
GRID = tuple((ws, lr, tk) for ws in ("density", "none") for lr in (1, 3) for tk in ("global", "layer"))
#: each method's default config (what `sparsekit prune` uses without options)
DEFAULTS = {"gates": ("density", 3, "global"), "edge-popup": ("none", 1, "layer")}


def config_label(cfg: tuple) -> str:
    ws, lr, tk = cfg
    return f"scale={ws},lr=x{lr},topk={tk}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_dir(root: Path, method: str, cfg: tuple, sparsity: float, seed: int) -> Path:
    ws, lr, tk = cfg
    return root / method / f"{ws}-lr{lr}-{tk}" / f"s{sparsity:g}" / f"seed{seed}"


def prune_config(root: Path, method: str, cfg: tuple, sparsity: float, seed: int) -> PruneConfig:
    ws, lr, tk = cfg
    opts = {"weight_scale": ws, "lr": BASE_LR[method] * lr}
    if method == "edge-popup":
        opts["topk"] = tk
    return PruneConfig(
        MODEL, "fashion-mnist", method, sparsity, str(run_dir(root, method, cfg, sparsity, seed)), seed=seed,
        pretrain_epochs=0, finetune_epochs=0, search_steps=STEPS, batch_size=BATCH, weight_init=INIT,
        layerwise=method == "gates" and tk == "layer", method_options=opts, dense_reference=False,
        # a config whose global top-k empties a layer is a (bad) result to select against, not a crash
        allow_layer_collapse=True,
    )


def split_data(full: DataBundle) -> tuple[DataBundle, DataBundle]:
    """(search bundle: the first 55k training images + the test set, holdout bundle: the last 5k
    training images as its test split). The split is fixed (no shuffle): Fashion-MNIST's order is
    class-balanced enough, and it must not depend on the seed."""
    x, y = full.train.tensors
    n = len(y) - HOLDOUT
    search = replace(full, train=TensorDataset(x[:n], y[:n]))
    holdout = replace(full, train=TensorDataset(x[:0], y[:0]), test=TensorDataset(x[n:], y[n:]))
    return search, holdout


def read_row(out: Path, method: str, cfg: tuple, sparsity: float, seed: int) -> dict | None:
    meta_f = paths.run_json(out)
    if not meta_f.exists():
        return None
    meta = json.loads(meta_f.read_text())
    if not meta.get("complete"):
        return None
    holdout_f = out / "holdout.json"
    if not holdout_f.exists():
        return None
    info = meta.get("method", {}).get("info", {}) or {}
    return {
        "method": method, "config": config_label(cfg), "cfg": list(cfg), "target": sparsity, "seed": seed,
        "sparsity": meta["metrics"].get("sparsity", sparsity),
        "accuracy": meta["metrics"]["accuracy"],
        "holdout": json.loads(holdout_f.read_text())["accuracy"],
        "seconds": meta.get("timings", {}).get("search_s", 0.0),
        "steps": info.get("steps"),
    }


def holdout_accuracy(out: Path, holdout: DataBundle) -> float:
    model = Ticket.load(out).materialize("final")
    return evaluate(model, holdout)["accuracy"]


def pick(rows: list[dict], method: str, sparsity: float) -> tuple | None:
    """The config with the best seed-0 holdout accuracy (None until the whole seed-0 grid is done)."""
    cands = [r for r in rows if r["method"] == method and r["target"] == sparsity and r["seed"] == 0]
    if len(cands) < len(GRID):
        return None
    best = max(cands, key=lambda r: (r["holdout"], -GRID.index(tuple(r["cfg"]))))
    return tuple(best["cfg"])


def _sel(rows: list[dict], **kw) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def _mean_std(vals: list[float], k: float = 100.0, nd: int = 1) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{k * vals[0]:.{nd}f}"
    return f"{k * statistics.mean(vals):.{nd}f} ± {k * statistics.stdev(vals):.{nd}f}"


def picked_rows(rows: list[dict], method: str, sparsity: float) -> list[dict]:
    cfg = pick(rows, method, sparsity)
    if cfg is None:
        return []
    return [r for r in rows if r["method"] == method and r["target"] == sparsity and tuple(r["cfg"]) == cfg]


def mean_curve(rows: list[dict], method: str) -> dict[float, float]:
    out = {}
    for sp in SPARSITIES:
        rs = picked_rows(rows, method, sp)
        if rs:
            out[sp] = statistics.mean(r["accuracy"] for r in rs)
    return out


def sparsity_at(curve: dict[float, float], level: float) -> str:
    """Highest sparsity where the curve (linear in log density between measured points) is >= level."""
    sps = sorted(curve)
    if not sps:
        return "–"
    if curve[sps[-1]] >= level:
        return f"≥{100 * sps[-1]:.0f}" if sps[-1] >= max(SPARSITIES) else f"≥{100 * sps[-1]:.0f} (grid incomplete)"
    for lo, hi in reversed(list(zip(sps, sps[1:], strict=False))):
        a, b = curve[lo], curve[hi]
        if a >= level > b:
            x0, x1 = math.log(1 - lo), math.log(1 - hi)
            x = x0 + (a - level) / (a - b) * (x1 - x0)
            return f"{100 * (1 - math.exp(x)):.1f}"
    return f"<{100 * sps[0]:.0f}"


def same_weights_check(root: Path, rows: list[dict]) -> str:
    """Is theta_0 bit-identical across every run of a seed (both methods, every config and sparsity)?"""
    from safetensors.torch import load_file

    groups = ok = files = 0
    bad = []
    for seed in SEEDS:
        runs = [r for r in rows if r["seed"] == seed]
        if len({r["method"] for r in runs}) < len(METHODS):
            continue
        states = [load_file(str(paths.theta_k(run_dir(root, r["method"], tuple(r["cfg"]), r["target"], seed))))
                  for r in runs]
        ref = states[0]
        groups += 1
        files += len(states)
        if all(s.keys() == ref.keys() and all(torch.equal(s[k], ref[k]) for k in ref) for s in states[1:]):
            ok += 1
        else:
            bad.append(f"seed{seed}")
    if not groups:
        return "Same-weights check: no seed with both methods done yet."
    verdict = "bit-identical" if ok == groups else f"NOT identical in {', '.join(bad)}"
    return (f"Same-weights check: theta_0 (`theta_k.safetensors`, every tensor compared with `torch.equal`) of all "
            f"{files} runs is {verdict} within each seed ({ok} / {groups} seeds).")


def render(rows: list[dict], meta: dict, root: Path) -> str:
    lines = [
        "## Strong lottery tickets: gates vs edge-popup, each at its best config (Fashion-MNIST)",
        "",
        f"- command: `{meta['command']}`; sparsekit commit(s) measured: {meta.get('commit')}",
        *([f"- note: {meta['note']}"] if meta.get("note") else []),
        f"- machine: {meta['cpu']}, {meta['cores']} cores (shared with other engineers' jobs; load average at the "
        f"start of each invocation below), torch {meta['torch']}, `torch.set_num_threads(1)`, OMP/MKL threads 1, "
        f"Python {meta['python']}",
        f"- date: {meta['date']}; benchmark wall time {meta['wall_min']:.1f} min over {len(meta['invocations'])} "
        f"invocation(s) ({'; '.join(meta['invocations'])}); {meta['done']} of {meta['planned']} planned runs done"
        + ("" if meta["done"] == meta["planned"] else " — missing cells are marked –, rerun the command to resume"),
        "",
        f"Protocol: LeNet-300-100, frozen kaiming-normal weights (`--weight-init kaiming-normal`, the same `--seed` "
        f"for both methods, so the same theta_0: checked below), no weight training (`--pretrain-epochs 0 "
        f"--finetune-epochs 0`), `--search-steps {STEPS}` at batch {BATCH}. The search trains on the first 55,000 "
        f"Fashion-MNIST training images; the last {HOLDOUT:,} (held out, never searched on) pick each method's "
        "config per sparsity from the same 8-config grid: weight scale (`--weight-scale density|none`) x search LR "
        "x {1, 3} (gates: Adam 0.1 / 0.3 on the gates; edge-popup: SGD 0.1 / 0.3 on the scores, cosine) x top-k "
        "(global / per layer). Selection uses seed 0; the picked config then runs seeds 1 and 2. Test accuracy % "
        "on the 10,000 test images (never used for selection), mean ± sample std over seeds (n).",
        "",
        "| sparsity | gates: picked config | gates test acc % | edge-popup: picked config | edge-popup test acc % | "
        "gates − edge-popup pp |",
        "|---|---|---|---|---|---|",
    ]
    for sp in SPARSITIES:
        cells, means = [], {}
        for m in METHODS:
            rs = picked_rows(rows, m, sp)
            cfg = pick(rows, m, sp)
            done0 = len(_sel(rows, method=m, target=sp, seed=0))
            label = config_label(cfg) if cfg else f"– (grid {done0}/{len(GRID)})"
            cells += [label, f"{_mean_std([r['accuracy'] for r in rs])} (n={len(rs)})" if rs else "–"]
            if rs:
                means[m] = statistics.mean(r["accuracy"] for r in rs)
        diff = f"{100 * (means['gates'] - means['edge-popup']):+.1f}" if len(means) == 2 else "–"
        lines.append(f"| {100 * sp:.0f} | " + " | ".join(cells) + f" | {diff} |")
    lines += ["", "Seed-0 grid (holdout accuracy % / test accuracy %; the picked config in bold):", "",
              "| method | config | " + " | ".join(f"{100 * s:.0f} %" for s in SPARSITIES) + " |",
              "|---|---|" + "---|" * len(SPARSITIES)]
    for m in METHODS:
        for cfg in GRID:
            cells = []
            for sp in SPARSITIES:
                r = [x for x in _sel(rows, method=m, target=sp, seed=0) if tuple(x["cfg"]) == cfg]
                if not r:
                    cells.append("–")
                    continue
                txt = f"{100 * r[0]['holdout']:.1f} / {100 * r[0]['accuracy']:.1f}"
                cells.append(f"**{txt}**" if pick(rows, m, sp) == cfg else txt)
            lines.append(f"| {m} | {config_label(cfg)} | " + " | ".join(cells) + " |")
    lines += ["", "Each method's defaults in this grid (gates: `--weight-scale density`, Adam 0.3, global top-k, "
              "`objective=project`; edge-popup: no scale, SGD 0.1, per-layer top-k as in the reference): seed-0 test "
              "accuracy % at " + " / ".join(f"{100 * s:.0f}" for s in SPARSITIES) + " %: " + "; ".join(
                  f"{m} " + " / ".join(next((f"{100 * r['accuracy']:.1f}" for r in _sel(rows, method=m, target=sp, seed=0)
                                             if tuple(r["cfg"]) == DEFAULTS[m]), "–") for sp in SPARSITIES)
                  for m in METHODS) + "."]
    secs = {m: [r["seconds"] for r in rows if r["method"] == m] for m in METHODS}
    lines += ["", "Search time per run (mean over all runs): " + "; ".join(
        f"{m} {statistics.mean(v):.0f} s (n={len(v)})" for m, v in secs.items() if v) + ".", ""]
    lines += [same_weights_check(root, rows), ""]
    cg, ce = mean_curve(rows, "gates"), mean_curve(rows, "edge-popup")
    lines += ["Targets (issue 21), automatic verdicts from the table above (means over the seeds done):", ""]
    for sp, margin in ((0.95, 0.03), (0.9, 0.0)):
        if sp in cg and sp in ce:
            n = min(len(picked_rows(rows, 'gates', sp)), len(picked_rows(rows, 'edge-popup', sp)))
            ok = "met" if cg[sp] - ce[sp] >= margin - 1e-12 else "NOT met"
            lines.append(f"- gates ≥ edge-popup + {100 * margin:.0f} pt at {100 * sp:.0f} %: {ok} "
                         f"({100 * (cg[sp] - ce[sp]):+.1f} pt; n = {n} seeds)")
        else:
            lines.append(f"- gates ≥ edge-popup + {100 * margin:.0f} pt at {100 * sp:.0f} %: not measured")
    if 0.9 in ce:
        g, e = sparsity_at(cg, ce[0.9]), sparsity_at(ce, ce[0.9])
        lines.append(f"- sparsity reached at edge-popup's 90 %-accuracy ({100 * ce[0.9]:.1f} %): gates {g} % vs "
                     f"edge-popup {e} % (target: gates ≥ 1.3x edge-popup's sparsity; sparsities measured: "
                     f"{', '.join(f'{100 * s:.0f}' for s in sorted(set(cg) & set(ce)))} %)")
    else:
        lines.append("- sparsity at edge-popup's 90 %-accuracy: not measured")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    write_marked_section(path, "bench-slt", body)


def plan(rows: list[dict]) -> list[tuple]:
    """(method, cfg, sparsity, seed) still to run, in priority order (picks need the seed-0 grid)."""
    todo = []
    done = {(r["method"], tuple(r["cfg"]), r["target"], r["seed"]) for r in rows}
    for sps in PRIORITY:
        for sp in sps:
            for cfg in GRID:
                for m in METHODS:
                    todo.append((m, cfg, sp, 0))
        for sp in sps:
            for m in METHODS:
                cfg = pick(rows, m, sp)
                todo.append((m, cfg if cfg is not None else "picked", sp, 1))
                todo.append((m, cfg if cfg is not None else "picked", sp, 2))
    return [t for t in todo if t not in done]


def planned_total() -> int:
    return len(SPARSITIES) * len(METHODS) * (len(GRID) + 2)


def collect(root: Path) -> list[dict]:
    rows = []
    for m in METHODS:
        for cfg in GRID:
            for sp in SPARSITIES:
                for seed in SEEDS:
                    r = read_row(run_dir(root, m, cfg, sp, seed), m, cfg, sp, seed)
                    if r is not None:
                        rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REPO / ".bench" / "slt-grid"))
    ap.add_argument("--budget-min", type=float, default=90.0, help="stop starting new runs after this")
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--note", default=None, help="a line about how the runs were made (kept with the runs)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the docs section from existing runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    state_file = root / "bench_state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"wall_s": 0.0, "invocations": []}
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    argv = " ".join(map(shlex.quote, sys.argv[1:]))
    commit = git_commit()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    t0 = time.perf_counter()
    search = holdout = None
    rows = collect(root)

    def save_state() -> None:
        s = dict(state)
        s["wall_s"] = state["wall_s"] + time.perf_counter() - t0
        s["invocations"] = state["invocations"] + [f"`{argv or '(defaults)'}` at {date} on commit {commit}, load "
                                                   f"{load}, {(time.perf_counter() - t0) / 60:.1f} min"]
        s["commits"] = list(dict.fromkeys(state.get("commits", []) + [commit]))
        if args.note:
            s["note"] = args.note
        state_file.write_text(json.dumps(s, indent=1))

    while not args.report_only:
        todo = plan(rows)
        # a picked-config run waits for its seed-0 grid; run the first job that can run
        job = next(((m, cfg, sp, seed) for m, cfg, sp, seed in todo if cfg != "picked"), None)
        if job is None or (time.perf_counter() - t0) / 60 > args.budget_min:
            break
        m, cfg, sp, seed = job
        if search is None:
            search, holdout = split_data(load_dataset("fashion-mnist"))
        out = run_dir(root, m, cfg, sp, seed)
        prune(prune_config(root, m, cfg, sp, seed), data=search)
        (out / "holdout.json").write_text(json.dumps({"accuracy": holdout_accuracy(out, holdout), "n": HOLDOUT}))
        row = read_row(out, m, cfg, sp, seed)
        rows.append(row)
        print(f"[{(time.perf_counter() - t0) / 60:5.1f} min] {m} {config_label(cfg)} s={sp:g} seed={seed}: "
              f"holdout {100 * row['holdout']:.2f}% test {100 * row['accuracy']:.2f}% ({row['seconds']:.1f}s)",
              flush=True)
        save_state()
    if not args.report_only:
        save_state()
    state = json.loads(state_file.read_text()) if state_file.exists() else state
    meta = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": date,
        "wall_min": state.get("wall_s", 0.0) / 60,
        "invocations": state.get("invocations", []),
        "commit": ", ".join(state.get("commits") or [str(commit)]),
        "note": args.note or state.get("note"),
        "command": "make bench-slt (.venv/bin/python benchmarks/bench_slt.py)",
        "planned": planned_total(),
        "done": len(rows),
    }
    write_section(Path(args.doc), render(rows, meta, root))
    (root / "summary.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.doc}", flush=True)


if __name__ == "__main__":
    main()
