"""Strong lottery tickets on Fashion-MNIST: gates vs edge-popup on the SAME frozen weights (``make bench-slt``).

No weight is ever trained for the tickets (pretrain 0, fine-tune 0): the mask searched over the
frozen initial weights theta_0 is the whole model. For each of three weight inits — kaiming-normal,
signed-kaiming-constant and kaiming-uniform (``--weight-init uniform``: U(-b, b), b = sqrt(6 / fan_in))
— gates and edge-popup run with the same ``--weight-init`` and the same ``--seed``, so their theta_0
is bit-identical; the script checks this on the theta_k.safetensors every run saves and reports it.
The dense baseline trains all weights with the pipeline's default recipe (SGD, cosine) for the same
number of epochs. Every run goes through ``sparsekit.pipeline.prune`` so the product is measured.

Scaled-down budget (2-core CPU, one torch thread, ~30 min): LeNet-300-100 on the full Fashion-MNIST
(60k train / 10k test), ``--search-epochs 2`` at batch 128 (938 search steps) for both methods,
sparsities 50 / 70 / 80 / 90 / 95 %, seeds 0 / 1 / 2. Runs go in priority order (the >= 90 %
sparsities of every init first, then seeds 1 and 2, then 50-80 %); no new run starts after
--budget-min and the report marks missing cells with –.

"Sparsity at equal accuracy": for each init the mean accuracy (over seeds) is interpolated linearly
in log(density) between the measured sparsities; for a level A, a method's sparsity is the highest
sparsity in [50, 95] % at which its curve is >= A (">95" if it is still above A at 95 %, "<50" if
never). Two levels per init: edge-popup's mean accuracy at 90 % and gates' mean accuracy at 90 %.

Resumable: each run lives in its own directory under --root; a completed run (run.json complete) is
read back, not redone. Writes its section of docs/benchmarks.md between the bench-slt markers.

Usage:
    .venv/bin/python benchmarks/bench_slt.py [--root .bench/slt-same-init] [--budget-min 30] [--epochs 2]
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
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from sparsekit import paths  # noqa: E402
from sparsekit._io import write_marked_section  # noqa: E402
from sparsekit.bench.env import git_commit  # noqa: E402
from sparsekit.data import load_dataset  # noqa: E402
from sparsekit.pipeline import PruneConfig, prune  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- bench-slt:start -->", "<!-- bench-slt:end -->"
MODELS = ("lenet300",)
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
HIGH = tuple(s for s in SPARSITIES if s >= 0.9)
SEEDS = (0, 1, 2)
INITS = {  # label -> --weight-init
    "kaiming-normal": "kaiming-normal",
    "signed-constant": "signed-kaiming-constant",
    "kaiming-uniform": "uniform",
}
METHODS = ("gates", "edge-popup")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_dir(root: Path, model: str, method: str, init: str, sparsity: float, seed: int) -> Path:
    return root / model / init / method / f"s{sparsity:g}" / f"seed{seed}"


def config(root: Path, model: str, method: str, init: str, sparsity: float, seed: int, epochs: int) -> PruneConfig:
    dense = method == "dense"
    return PruneConfig(
        model, "fashion-mnist", "random" if dense else method, sparsity,
        str(run_dir(root, model, method, init, sparsity, seed)), seed=seed,
        pretrain_epochs=0,
        search_epochs=None if dense else epochs,
        finetune_epochs=epochs if dense else 0,  # the dense baseline trains its weights; tickets never
        weight_init=INITS[init], dense_reference=False,
    )


def read_row(out: Path, model: str, method: str, init: str, sparsity: float, seed: int) -> dict | None:
    f = paths.run_json(out)
    if not f.exists():
        return None
    meta = json.loads(f.read_text())
    if not meta.get("complete"):
        return None
    t, info = meta.get("timings", {}), meta.get("method", {}).get("info", {}) or {}
    return {
        "model": model, "method": method, "init": init, "target": sparsity, "seed": seed,
        "sparsity": meta["metrics"].get("sparsity", sparsity),
        "accuracy": meta["metrics"]["accuracy"],
        "seconds": t.get("finetune_s", 0.0) if method == "dense" else t.get("search_s", 0.0),
        "steps": info.get("steps"),
        "gate_sparsity_before_topk": info.get("gate_sparsity_before_topk"),
        # accuracy lost by the 0/1 conversion (expected gates E[z] - final mask, on eval_batches test batches)
        "conversion_loss": info.get("conversion_loss"),
    }


def plan() -> list[tuple]:
    """(model, method, init, sparsity, seed) in priority order."""
    runs: list[tuple] = []
    for model in MODELS:
        for seeds, sps in (((0,), HIGH), ((1, 2), HIGH), (SEEDS, tuple(s for s in SPARSITIES if s < 0.9))):
            for seed in seeds:
                for sp in sps:
                    for init in INITS:
                        for method in METHODS:
                            runs.append((model, method, init, sp, seed))
        for seed in SEEDS:
            runs.append((model, "dense", "kaiming-normal", 0.0, seed))
    return runs


def _mean_std(vals: list[float], k: float = 100.0, nd: int = 1) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{k * vals[0]:.{nd}f}"
    return f"{k * statistics.mean(vals):.{nd}f} ± {k * statistics.stdev(vals):.{nd}f}"


def _sel(rows: list[dict], **kw) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def mean_curve(rows: list[dict], model: str, init: str, method: str) -> dict[float, float]:
    out = {}
    for sp in SPARSITIES:
        v = [r["accuracy"] for r in _sel(rows, model=model, init=init, method=method, target=sp)]
        if v:
            out[sp] = statistics.mean(v)
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
    """Are theta_0 of gates and edge-popup bit-identical for each (model, init, seed)?"""
    from safetensors.torch import load_file

    groups = ok = files = 0
    bad = []
    for model in MODELS:
        for init in INITS:
            for seed in SEEDS:
                runs = [r for r in rows if r["model"] == model and r["init"] == init and r["seed"] == seed
                        and r["method"] in METHODS]
                if not {r["method"] for r in runs} >= set(METHODS):
                    continue
                states = [load_file(str(paths.theta_k(run_dir(root, model, r["method"], init, r["target"], seed))))
                          for r in runs]
                ref = states[0]
                groups += 1
                files += len(states)
                if all(s.keys() == ref.keys() and all(torch.equal(s[k], ref[k]) for k in ref) for s in states[1:]):
                    ok += 1
                else:
                    bad.append(f"{model}/{init}/seed{seed}")
    if not groups:
        return "Same-weights check: no (init, seed) with both methods done yet."
    verdict = "bit-identical" if ok == groups else f"NOT identical in {', '.join(bad)}"
    return (f"Same-weights check: theta_0 (`theta_k.safetensors`, every tensor compared with `torch.equal`) of all "
            f"{files} gates and edge-popup runs is {verdict} within each of the {groups} (init, seed) groups "
            f"({ok} / {groups} identical).")


def render(rows: list[dict], meta: dict, root: Path) -> str:
    n_planned, n_done = meta["planned"], meta["done"]
    lines = [
        "## Strong lottery tickets: gates vs edge-popup on the same frozen weights (Fashion-MNIST)",
        "",
        f"- command: `{meta['command']}`; sparsekit commit measured: {meta.get('commit')}",
        *([f"- note: {meta['note']}"] if meta.get("note") else []),
        f"- machine: {meta['cpu']}, {meta['cores']} cores (shared with another engineer's jobs), torch "
        f"{meta['torch']}, `torch.set_num_threads({meta['threads']})`, OMP/MKL threads 1, Python {meta['python']}",
        f"- date: {meta['date']}; benchmark wall time {meta['wall_min']:.1f} min over {len(meta['invocations'])} "
        f"invocation(s) ({'; '.join(meta['invocations'])}); {n_done} of {n_planned} planned runs done"
        + ("" if n_done == n_planned else " — missing cells are marked –, rerun the command to resume"),
        "",
        "Protocol (scaled down for a 2-core CPU): LeNet-300-100 on the full Fashion-MNIST (60k train / 10k test). "
        "No weight training for the tickets: `--pretrain-epochs 0 --finetune-epochs 0 --search-epochs "
        f"{meta['epochs']}` at batch 128 ({meta['epochs']} × 469 steps), so the mask over the frozen theta_0 is the "
        "model. For each init, gates and edge-popup get the same `--weight-init` and the same `--seed`, hence the "
        "same theta_0 (checked below). Gates: the method's defaults (hard-concrete, two-sided GradBalance, annealed, "
        "clamped log-alpha, cosine Adam lr, exact global top-k). Edge-popup: its defaults (per-layer top-k of scores, "
        "SGD on scores with cosine lr). Inits: kaiming-normal N(0, 2/fan_in); signed-constant sign(N(0,1))·sqrt(2/fan_in) "
        "(`signed-kaiming-constant`); kaiming-uniform U(±sqrt(6/fan_in)) (`--weight-init uniform`). Dense: all weights "
        f"trained with the default recipe (SGD lr 0.1, momentum 0.9, cosine, batch 128) for {meta['epochs']} epochs "
        "from kaiming-normal. Test accuracy %, mean ± sample std over the seeds done (n in brackets); time = search "
        "seconds per run (mean).",
        "",
        "| init | sparsity | gates acc % | edge-popup acc % | gates − edge-popup pp | gates s | edge-popup s | "
        "gates: sparsity before top-k % / 0-1 conversion loss pp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        for init in INITS:
            for sp in SPARSITIES:
                c = {}
                for m in METHODS:
                    rs = _sel(rows, model=model, init=init, method=m, target=sp)
                    c[m] = rs
                g, e = c["gates"], c["edge-popup"]

                def acc(rs):
                    return f"{_mean_std([r['accuracy'] for r in rs])} (n={len(rs)})" if rs else "–"

                def secs(rs):
                    return f"{statistics.mean(r['seconds'] for r in rs):.0f}" if rs else "–"

                diff = "–"
                if g and e:
                    diff = f"{100 * (statistics.mean(r['accuracy'] for r in g) - statistics.mean(r['accuracy'] for r in e)):+.1f}"
                gs = [r["gate_sparsity_before_topk"] for r in g if r.get("gate_sparsity_before_topk") is not None]
                cl = [r["conversion_loss"] for r in g if r.get("conversion_loss") is not None]
                diag = f"{_mean_std(gs)} / {_mean_std(cl)}" if g else "–"
                lines.append(f"| {init} | {100 * sp:.0f} | {acc(g)} | {acc(e)} | {diff} | {secs(g)} | {secs(e)} | {diag} |")
        dense = _sel(rows, model=model, method="dense")
        if dense:
            lines += ["", f"Dense LeNet-300-100, all weights trained {meta['epochs']} epochs: "
                      f"{_mean_std([r['accuracy'] for r in dense])} % (n={len(dense)}), "
                      f"{statistics.mean(r['seconds'] for r in dense):.0f} s."]
    lines += ["", same_weights_check(root, rows), ""]
    lines += [
        "**Sparsity at equal accuracy** (mean curves, linear in log density between grid points; highest sparsity "
        "at which the curve is ≥ the level; ≥95 = still above it at the last grid point):",
        "",
        "| init | level | gates sparsity % | edge-popup sparsity % |",
        "|---|---|---|---|",
    ]
    for model in MODELS:
        for init in INITS:
            cg, ce = mean_curve(rows, model, init, "gates"), mean_curve(rows, model, init, "edge-popup")
            for ref_name, ref in (("edge-popup", ce), ("gates", cg)):
                if 0.9 not in ref:
                    lines.append(f"| {init} | {ref_name} at 90 % | – | – |")
                    continue
                lv = ref[0.9]
                lines.append(f"| {init} | {100 * lv:.1f} % ({ref_name} at 90 %) | {sparsity_at(cg, lv)} | "
                             f"{sparsity_at(ce, lv)} |")
    lines += ["", "Targets (issue 11) — automatic verdicts from the table above:", ""]
    for model in MODELS:
        for init in INITS:
            cg, ce = mean_curve(rows, model, init, "gates"), mean_curve(rows, model, init, "edge-popup")
            parts = []
            for sp in HIGH:
                if sp in cg and sp in ce:
                    parts.append(f"{100 * sp:.0f} %: {'met' if cg[sp] >= ce[sp] else 'NOT met'} "
                                 f"({100 * (cg[sp] - ce[sp]):+.1f} pp)")
                else:
                    parts.append(f"{100 * sp:.0f} %: not measured")
            lines.append(f"- {init}: gates ≥ edge-popup at " + "; ".join(parts))
            if 0.9 in ce:
                g, e = sparsity_at(cg, ce[0.9]), sparsity_at(ce, ce[0.9])
                ok = _higher(g, e)
                lines.append(f"- {init}: gates reach a higher sparsity than edge-popup at edge-popup's 90 % accuracy "
                             f"({100 * ce[0.9]:.1f} %): gates {g} % vs edge-popup {e} % → {ok}")
    return "\n".join(lines)


def _higher(g: str, e: str) -> str:
    """Verdict of 'gates reach a higher sparsity than edge-popup' from two sparsity_at strings."""
    if "–" in (g, e) or "grid" in g or "grid" in e:
        return "not measured"
    if g.startswith("≥") and e.startswith("≥"):
        return "undetermined (both still above the level at the last grid point)"
    if g.startswith("<") and e.startswith("<"):
        return "undetermined (both below the level everywhere)"

    def num(x: str) -> float:
        return float(x.lstrip("≥<")) + (0.01 if x.startswith("≥") else -0.01 if x.startswith("<") else 0.0)

    return "met" if num(g) > num(e) else "NOT met"


def write_section(path: Path, body: str) -> None:
    write_marked_section(path, "bench-slt", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REPO / ".bench" / "slt-same-init"))
    ap.add_argument("--budget-min", type=float, default=30.0, help="stop starting new runs after this")
    ap.add_argument("--epochs", type=int, default=2)
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
    t0 = time.perf_counter()
    specs = plan()
    data = None
    rows, missing = [], 0

    def save_state(final: bool = False) -> None:
        s = dict(state)
        s["wall_s"] = state["wall_s"] + time.perf_counter() - t0
        s["invocations"] = state["invocations"] + [f"`{argv or '(defaults)'}` at {date} on commit {commit}, "
                                                   f"{(time.perf_counter() - t0) / 60:.1f} min"]
        s["commits"] = list(dict.fromkeys(state.get("commits", []) + [commit]))
        if args.note:
            s["note"] = args.note
        state_file.write_text(json.dumps(s, indent=1))

    for model, method, init, sp, seed in specs:
        out = run_dir(root, model, method, init, sp, seed)
        row = read_row(out, model, method, init, sp, seed)
        if row is None and not args.report_only:
            if (time.perf_counter() - t0) / 60 > args.budget_min:
                missing += 1
                continue
            if data is None:
                data = load_dataset("fashion-mnist")
            prune(config(root, model, method, init, sp, seed, args.epochs), data=data)
            row = read_row(out, model, method, init, sp, seed)
            print(f"[{(time.perf_counter() - t0) / 60:5.1f} min] {model} {init} {method} s={sp:g} seed={seed}: "
                  f"acc {100 * row['accuracy']:.2f}% ({row['seconds']:.1f}s)", flush=True)
            save_state()
        if row is None:
            missing += 1
            continue
        rows.append(row)
    if not args.report_only:
        save_state()
    state = json.loads(state_file.read_text()) if state_file.exists() else state
    meta = {
        "epochs": args.epochs,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": date,
        "wall_min": state.get("wall_s", 0.0) / 60,
        "invocations": state.get("invocations", []),
        "commit": ", ".join(state.get("commits") or [str(commit)]),
        "note": args.note or state.get("note"),
        "command": "make bench-slt (.venv/bin/python benchmarks/bench_slt.py)",
        "planned": len(specs),
        "done": len(rows),
    }
    write_section(Path(args.doc), render(rows, meta, root))
    (root / "summary.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.doc}", flush=True)


if __name__ == "__main__":
    main()
