"""Speed-aware structured tickets under a MAC or latency budget (``make bench-structured``).

Every ticket is made by the product (``sparsekit.pipeline.prune``) with ``--granularity channel
--budget macs=B --channel-multiple 8``, and every speed number by ``sparsekit bench`` (structured
ONNX on ONNX Runtime against the same run's dense model, separate processes, bootstrap CI).

Accuracy (scaled down for a 2-core CPU, documented in the docs section):
  * resnet20 on a fixed random Fashion-MNIST subset (N_TRAIN train / N_TEST test images, IDX files
    under ROOT/fmnist-subset), pretrain 1 epoch -> search at theta_1 -> fine-tune FT epochs with the
    mask held; SGD batch 64, the default recipe (cosine). Learned searches (cts = CTS-KL at channel
    level, gates) run --search-steps steps at batch 64 (default DEFAULT_SEARCH_STEPS = 2,000: the CTS
    default-length rule max(training budget, the reference's shortest search of 2,000 steps, GradBalance's
    settle length 4 / ema = 400 steps); the training budget here is 3 epochs x 32 batches, so 2,000 rules).
  * methods: cts, gates, magnitude-channel (L1-norm filters), random-channel, tp-taylor,
    tp-group-norm; budget 0.25 with SEEDS seeds first, then 0.5 and 0.125 with seed 0.
  * the cts runs also train the dense reference (same recipe and epochs), used for the speed rows.
Speed: the seed-0 cts ticket at each budget, structured, ORT at batch 1 and 64, 1 thread; vgg16
(fashion-mnist shape) and tv:resnet18 on synthetic:3x64x64 for speed only (magnitude-channel
masks at theta_0, no training).
Latency budget: cts on resnet20 asked for 1/3 of the dense model's ORT latency at batch 1
(measured at the start); the table is the product's; the reached latency is what ``bench`` measures.

Resumable: each run is its own directory under --root (cts / gates directories carry the search
length, so runs of another length are never reused); completed runs and bench JSONs are reused.
Jobs run in priority order; no new job starts after --max-minutes and missing cells are marked.
--target-only runs only the 0.25-budget accuracy cells (all seeds, --methods in that order).

Usage:
    .venv/bin/python benchmarks/bench_structured.py [--root .bench/structured] [--max-minutes 70]
        [--search-steps 2000] [--target-only] [--methods cts,gates,tp-taylor,...]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "benchmarks"))

from _subset import write_subset  # noqa: E402

from sparsekit._io import write_marked_section  # noqa: E402
from sparsekit.bench.env import cpu_model, git_commit  # noqa: E402
from sparsekit.methods.cts import REFERENCE_MIN_STEPS, settle_steps  # noqa: E402
from sparsekit.pipeline import PruneConfig, prune  # noqa: E402

DOC = ROOT_DIR / "docs" / "benchmarks.md"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST = 2000, 2000
FT, SEEDS = 2, (0, 1, 2)
DEFAULT_SEARCH_STEPS = max(REFERENCE_MIN_STEPS, settle_steps(0.01))  # the CTS default rule (module docstring)
SEARCH_STEPS = DEFAULT_SEARCH_STEPS  # set from --search-steps in main()
LEARNED = ("cts", "gates")
BUDGETS = (0.25, 0.5, 0.125)
METHODS = ("cts", "gates", "magnitude-channel", "random-channel", "tp-taylor", "tp-group-norm")
MULTIPLE = 8
THREADS = 1
PY = sys.executable


def _cfg(model: str, method: str, budget: str, seed: int, out: Path, data_dir: Path | None, data: str,
         pretrain: int, ft: int, dense: bool) -> PruneConfig:
    opts = {"batch_size": 64} if method in LEARNED else {}
    steps = SEARCH_STEPS if method in LEARNED else None
    return PruneConfig(model=model, data=data, method=method, sparsity=0.5, out=str(out), seed=seed,
                       pretrain_epochs=pretrain, finetune_epochs=ft, search_steps=steps, batch_size=64,
                       granularity="channel", budget=budget, channel_multiple=MULTIPLE, method_options=opts,
                       dense_reference=dense, data_dir=str(data_dir) if data_dir else None)


def run_name(model: str, method: str, budget: float | str, seed: int) -> str:
    """Run directory name; learned searches carry their length (400-step runs are never reused)."""
    steps = f"-steps{SEARCH_STEPS}" if method in LEARNED else ""
    return f"{model}-{method}-macs{budget}{steps}-s{seed}"


LOAD_LOG = "loadavg.log"  # "<unix time> <1-min> <5-min> <15-min>" lines, sampled while the benchmark runs


def sample_load(root: Path, every_s: float = 20.0) -> None:
    """Append the load average to ROOT/loadavg.log every ``every_s`` seconds (daemon thread): the machine
    is shared, and the accuracy rows say what load their runs saw."""
    def loop() -> None:
        while True:
            try:
                with open(root / LOAD_LOG, "a") as f:
                    f.write(f"{time.time():.0f} {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
            except OSError:
                return
            time.sleep(every_s)
    threading.Thread(target=loop, daemon=True).start()


def read_load(root: Path) -> list[tuple[float, float]]:
    """(unix time, 1-min load average) samples of ROOT/loadavg.log."""
    try:
        rows = [ln.split() for ln in (root / LOAD_LOG).read_text().splitlines()]
    except OSError:
        return []
    return [(float(r[0]), float(r[1])) for r in rows if len(r) >= 2]


def run_load(run_dir: Path, samples: list[tuple[float, float]]) -> str:
    """Mean (max) 1-min load average while a run ran: from run.json's "created" to run.json's last write."""
    try:
        start = _dt.datetime.strptime(json.loads((run_dir / "run.json").read_text())["created"],
                                      "%Y-%m-%dT%H:%M:%S%z").timestamp()
        end = (run_dir / "run.json").stat().st_mtime
    except (OSError, KeyError, ValueError):
        return "–"
    vals = [v for t, v in samples if start <= t <= end]
    return f"{statistics.mean(vals):.1f} ({max(vals):.1f})" if vals else "–"


def search_trajectory(run_dir: Path) -> list[tuple[int, float, float]]:
    """(step, objective, expected MAC fraction or expected density) per logged search step: cts logs the
    objective and the expected cost fraction, gates the loss and the expected gate density."""
    out = []
    try:
        lines = (run_dir / "search.jsonl").read_text().splitlines()
    except OSError:
        return out
    for ln in lines:
        r = json.loads(ln)
        obj = r.get("objective", r.get("loss"))
        frac = r.get("expected_cost_fraction", r.get("expected_density"))
        if isinstance(obj, (int, float)) and isinstance(frac, (int, float)):
            out.append((int(r["step"]), float(obj), float(frac)))
    return out


def window_mean(traj: list[tuple[int, float, float]], end: int, width: int = 100) -> tuple[float, float] | None:
    """Mean objective and mean expected fraction over the logged steps in (end - width, end]."""
    pts = [(o, f) for s, o, f in traj if end - width < s <= end]
    if not pts:
        return None
    return statistics.mean(o for o, _ in pts), statistics.mean(f for _, f in pts)


def run_prune(cfg: PruneConfig) -> dict:
    t0 = time.perf_counter()
    result = prune(cfg)
    result.setdefault("bench_wall_s", time.perf_counter() - t0)
    return result


def run_bench(run_dir: Path, out: Path, data_dir: Path | None) -> dict:
    """``sparsekit bench RUN --format structured --runtime ort-cpu --batch 1,64`` (cached JSON)."""
    if out.is_file():
        return json.loads(out.read_text())
    cmd = [PY, "-m", "sparsekit", "bench", str(run_dir), "--format", "structured", "--runtime", "ort-cpu",
           "--batch", "1,64", "--threads", str(THREADS), "--repeats", "3", "--min-time", "0.3",
           "--accuracy-limit", "500", "--json", str(out)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def speed_rows(bench: dict) -> dict[int, dict]:
    """batch -> {ms, dense_ms, speedup, ci, verdict, mac_ratio}."""
    rows = {}
    dense = {r["batch"]: r for r in bench["rows"] if r["variant"] == "dense"}
    for r in bench["rows"]:
        if r["variant"] != "ticket":
            continue
        rows[r["batch"]] = {"ms": r["latency_ms"]["p50"], "dense_ms": dense[r["batch"]]["latency_ms"]["p50"],
                            "speedup": r["speedup_vs_best_dense"], "ci": r["speedup_vs_best_dense_ci"],
                            "verdict": r["verdict_vs_best_dense"], "mac_ratio": r["mac_ratio_vs_dense"]}
    return rows


def dense_latency_ms(model: str, in_shape: tuple[int, ...], batch: int) -> float:
    from sparsekit.bench.latency_table import time_model
    from sparsekit.models import ModelSpec, build_model

    return min(time_model(build_model(ModelSpec(model, in_shape, 10), seed=0), in_shape, "ort-cpu", batch, THREADS)
               for _ in range(3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(ROOT_DIR / ".bench" / "structured"))
    ap.add_argument("--max-minutes", type=float, default=70.0)
    ap.add_argument("--no-record", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--search-steps", type=int, default=DEFAULT_SEARCH_STEPS,
                    help=f"cts / gates search steps at batch 64 (default {DEFAULT_SEARCH_STEPS}: the CTS default rule)")
    ap.add_argument("--target-only", action="store_true", help="only the 0.25-budget accuracy cells (all seeds)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated methods to run, in priority order (default: all)")
    args = ap.parse_args()
    global SEARCH_STEPS
    if args.search_steps < 1:
        ap.error("--search-steps must be >= 1")
    SEARCH_STEPS = args.search_steps
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        ap.error(f"--methods must be a comma-separated subset of {','.join(METHODS)}")
    torch.set_num_threads(THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    sample_load(root)
    sub = write_subset(FMNIST, root / "fmnist-subset", N_TRAIN, N_TEST)
    deadline = time.time() + 60 * args.max_minutes
    t_start = time.time()

    jobs: list[tuple[str, tuple]] = []
    for m in methods:  # the target cell first: one seed, its speed and the latency budget, then more seeds
        jobs.append(("acc", ("resnet20", m, 0.25, SEEDS[0])))
    if not args.target_only:
        jobs.append(("speed", ("resnet20", 0.25)))
        jobs.append(("latency", ("resnet20",)))
    for seed in SEEDS[1:]:
        for m in methods:
            jobs.append(("acc", ("resnet20", m, 0.25, seed)))
    if not args.target_only:
        for model, data in (("vgg16", "fashion-mnist"), ("tv:resnet18", "synthetic:3x64x64")):
            for b in BUDGETS:
                jobs.append(("speed-only", (model, data, b)))
        for b in (0.5, 0.125):
            for m in methods:
                jobs.append(("acc", ("resnet20", m, b, 0)))
            jobs.append(("speed", ("resnet20", b)))

    acc: dict[tuple, dict] = {}
    speed: dict[tuple, dict] = {}
    latency: dict = {}
    skipped: list[str] = []
    for kind, key in jobs:
        if time.time() > deadline and not _done(root, kind, key):  # finished cells are always read back
            skipped.append(f"{kind} {key}")
            continue
        try:
            if kind == "acc":
                model, m, b, seed = key
                out = root / run_name(model, m, b, seed)
                r = run_prune(_cfg(model, m, f"macs={b}", seed, out, sub, "fashion-mnist", 1, FT, dense=m == "cts"))
                acc[key] = r
                print(f"[{time.time() - t_start:6.0f}s] {model} {m} macs={b} seed {seed}: acc {r['accuracy']:.4f} "
                      f"macs {r['budget']['fraction_achieved']:.4f}", flush=True)
            elif kind == "speed":
                model, b = key
                run_dir = root / run_name(model, "cts", b, 0)
                if not (run_dir / "run.json").is_file():
                    skipped.append(f"speed {key} (no cts ticket)")
                    continue
                speed[(model, b)] = speed_rows(run_bench(run_dir, root / f"bench-{run_dir.name}.json", sub))
                print(f"[{time.time() - t_start:6.0f}s] speed {model} macs={b}: {speed[(model, b)]}", flush=True)
            elif kind == "speed-only":
                model, data, b = key
                out = root / f"speed-{model.replace(':', '_')}-macs{b}"
                run_prune(_cfg(model, "magnitude-channel", f"macs={b}", 0, out, sub if data == "fashion-mnist" else None,
                               data, 0, 0, dense=True))
                speed[(model, b)] = speed_rows(run_bench(out, root / f"bench-{model.replace(':', '_')}-macs{b}.json",
                                                         sub if data == "fashion-mnist" else None))
                print(f"[{time.time() - t_start:6.0f}s] speed {model} macs={b}: {speed[(model, b)]}", flush=True)
            elif kind == "latency":
                (model,) = key
                dense_ms_path = root / "dense-latency.json"
                if dense_ms_path.is_file():
                    dense_ms = json.loads(dense_ms_path.read_text())["ms"]
                else:
                    dense_ms = dense_latency_ms(model, (1, 28, 28), 1)
                    dense_ms_path.write_text(json.dumps({"ms": dense_ms}))
                asked = dense_ms / 3
                out = root / f"{model}-cts-latency-steps{SEARCH_STEPS}-s0"
                cfg = _cfg(model, "cts", f"latency={asked:.4f}", 0, out, sub, "fashion-mnist", 1, FT, dense=True)
                r = run_prune(cfg)
                rows = speed_rows(run_bench(out, root / f"bench-{out.name}.json", sub))
                latency = {"dense_ms_probe": dense_ms, "asked_ms": asked, "result": r, "bench": rows}
                print(f"[{time.time() - t_start:6.0f}s] latency: asked {asked:.3f} ms, bench {rows[1]['ms']:.3f} ms",
                      flush=True)
        except Exception as exc:  # noqa: BLE001 - one failed cell must not lose the others
            skipped.append(f"{kind} {key}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            print(f"failed {kind} {key}: {exc}", flush=True)
    body = render(acc, speed, latency, skipped, time.time() - t_start, root)
    (root / "report.md").write_text(body)
    print(body)
    if not args.no_record:
        write_marked_section(DOC, "bench-structured", body)


def _done(root: Path, kind: str, key: tuple) -> bool:
    """True when the job's results are already on disk (reading them back costs nothing)."""
    if kind == "acc":
        model, m, b, seed = key
        run = root / run_name(model, m, b, seed) / "run.json"
    elif kind == "speed":
        return (root / f"bench-{run_name(key[0], 'cts', key[1], 0)}.json").is_file()
    elif kind == "speed-only":
        return (root / f"bench-{key[0].replace(':', '_')}-macs{key[2]}.json").is_file()
    else:
        return (root / f"bench-{key[0]}-cts-latency-steps{SEARCH_STEPS}-s0.json").is_file()
    return run.is_file() and bool(json.loads(run.read_text()).get("complete"))


def _ms(vals: list[float]) -> str:
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{100 * vals[0]:.2f} (1 seed)"
    return f"{100 * statistics.mean(vals):.2f} ± {100 * statistics.stdev(vals):.2f} (n={len(vals)})"


def library_commit() -> str:
    """The last commit that changed sparsekit/ (what produced the runs; benchmark and docs commits made
    while it ran do not change it), '+dirty' when sparsekit/ has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT_DIR), "log", "-1", "--format=%h", "--abbrev=12", "--", "sparsekit"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT_DIR), "status", "--porcelain", "--untracked-files=no", "--",
                                "sparsekit"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return git_commit() or "unknown"
    return (sha + ("+dirty" if dirty else "")) or "unknown"


def render(acc: dict, speed: dict, latency: dict, skipped: list[str], wall: float, root: Path) -> str:
    commit = library_commit()
    lines = [
        "## Structured tickets under a MAC / latency budget (`make bench-structured`)",
        "",
        f"Command: `make bench-structured` (`benchmarks/bench_structured.py`), library commit `{commit}` "
        "(the last commit changing sparsekit/; resumed runs are read back), "
        f"{_dt.date.today().isoformat()}, {cpu_model()}, {os.cpu_count()} cores, {THREADS} thread per process; "
        f"this invocation {wall / 60:.0f} min, the {len(acc)} tickets' own pipeline time "
        f"{sum(r['timings']['ticket_total_s'] + r['timings'].get('dense_s', 0.0) for r in acc.values()) / 60:.0f} min "
        "(search + training + dense reference). The machine is shared with other engineers' jobs: the load "
        "averages the runs saw are recorded below.",
        "",
        f"Budget (scaled down for CPU): resnet20 on a fixed random Fashion-MNIST subset ({N_TRAIN:,} train / "
        f"{N_TEST:,} test images), pretrain 1 epoch, search at theta_1, fine-tune {FT} epochs (SGD batch 64, cosine), "
        f"cts/gates {SEARCH_STEPS} search steps at batch 64; every ticket `--granularity channel --budget macs=B "
        f"--channel-multiple {MULTIPLE}`; cts = CTS-KL with one logit per coupled channel unit.",
        "",
        "### Accuracy (%) at a MAC budget, mean ± std over seeds",
        "",
        "| budget (MACs kept) | " + " | ".join(METHODS) + " | dense |",
        "|---|" + "---|" * (len(METHODS) + 1),
    ]
    for b in (0.5, 0.25, 0.125):
        cells = [_ms([r["accuracy"] for (mo, m, bb, s), r in acc.items() if m == meth and bb == b]) for meth in METHODS]
        dense = _ms([r["dense_accuracy"] for (mo, m, bb, s), r in acc.items() if m == "cts" and bb == b
                     and r.get("dense_accuracy") is not None])
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {dense} |")
    achieved = [r["budget"]["fraction_achieved"] for r in acc.values()]
    if achieved:
        lines += ["", f"MACs kept / budget asked, over all {len(achieved)} tickets: "
                      f"{min(r['budget']['fraction_achieved'] / r['budget']['value'] for r in acc.values()):.3f} - "
                      f"{max(r['budget']['fraction_achieved'] / r['budget']['value'] for r in acc.values()):.3f} "
                      "(never above 1: the selection stays within the budget; below it by at most one 8-channel chunk)."]
    t25 = {meth: [r["accuracy"] for (mo, m, bb, s), r in acc.items() if m == meth and bb == 0.25] for meth in METHODS}
    if all(t25.values()):
        ours = max(statistics.mean(t25["cts"]), statistics.mean(t25["gates"]))
        best_base = max(statistics.mean(t25[m]) for m in ("magnitude-channel", "tp-taylor", "tp-group-norm"))
        verdict = "met" if ours >= best_base + 0.01 else "not met"
        lines += ["", f"Target at 0.25 (cts/gates >= best of magnitude-channel / tp-* + 1 pt): best ours "
                      f"{100 * ours:.2f} vs best baseline {100 * best_base:.2f} -> **{verdict}**."]
    if t25.get("tp-taylor"):
        tp = statistics.mean(t25["tp-taylor"])
        lines += ["", "Target of issue 21 at 0.25 (cts or gates: mean >= tp-taylor's mean, seed std <= 2 pt), "
                      f"tp-taylor {100 * tp:.2f} (n={len(t25['tp-taylor'])}):"]
        for meth in LEARNED:
            vals = t25.get(meth) or []
            if len(vals) < 2:
                lines.append(f"- {meth}: not decidable (n={len(vals)}; a seed std needs >= 2 seeds)")
                continue
            mean, std = statistics.mean(vals), statistics.stdev(vals)
            ok = mean >= tp and std <= 0.02
            lines.append(f"- {meth}: {100 * mean:.2f} ± {100 * std:.2f} (n={len(vals)}), "
                         f"{100 * (mean - tp):+.2f} pt vs tp-taylor -> **{'met' if ok else 'not met'}**")
    samples = read_load(root)
    runs25 = sorted((k, r) for k, r in acc.items() if k[2] == 0.25)
    if runs25:
        lines += ["", f"Per run at 0.25 (search {SEARCH_STEPS} steps for cts / gates): test accuracy, MACs kept, the "
                      "1-min load average while it ran (mean (max), sampled every 20 s), and the search trajectory: "
                      "objective (cts: the KL objective; gates: the loss) / expected MAC fraction (cts) or expected "
                      "gate density (gates), each the mean over the 100 steps ending at 25 / 50 / 75 / 100 % of the "
                      "search.", "",
                  "| method | seed | acc % | MACs kept | load | 25 % | 50 % | 75 % | 100 % |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (model, m, b, seed), r in runs25:
            run_dir = root / run_name(model, m, b, seed)
            traj = search_trajectory(run_dir) if m in LEARNED else []
            cells = []
            for q in (0.25, 0.5, 0.75, 1.0):
                w = window_mean(traj, round(q * SEARCH_STEPS)) if traj else None
                cells.append(f"{w[0]:.3f} / {w[1]:.3f}" if w else "–")
            lines.append(f"| {m} | {seed} | {100 * r['accuracy']:.2f} | {r['budget']['fraction_achieved']:.4f} | "
                         f"{run_load(run_dir, samples)} | " + " | ".join(cells) + " |")
    if samples:
        vals = [v for _, v in samples]
        lines += ["", f"Load average (1-min) over all {len(vals)} samples of `{LOAD_LOG}`: "
                      f"min {min(vals):.1f}, mean {statistics.mean(vals):.1f}, max {max(vals):.1f} (2 cores)."]
    if speed:
        lines += ["", "### ORT speed of the structured tickets (1 thread, p50, vs the same run's dense model)", "",
                  "| model | MAC budget | MAC ratio | batch 1 ms (dense) | batch 1 speed-up (95% CI) | batch 64 ms (dense) "
                  "| batch 64 speed-up (95% CI) | speed-up / MAC ratio at 64 |", "|---|---|---|---|---|---|---|---|"]
    for (model, b), rows in sorted(speed.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        if 1 not in rows or 64 not in rows:
            continue
        r1, r64 = rows[1], rows[64]
        lines.append(
            f"| {model} | {b} | {r64['mac_ratio']:.2f}x | {r1['ms']:.3f} ({r1['dense_ms']:.3f}) | {r1['speedup']:.2f}x "
            f"({r1['ci'][0]:.2f}-{r1['ci'][1]:.2f}) | {r64['ms']:.2f} ({r64['dense_ms']:.2f}) | {r64['speedup']:.2f}x "
            f"({r64['ci'][0]:.2f}-{r64['ci'][1]:.2f}) | {r64['speedup'] / r64['mac_ratio']:.2f} |")
    if speed:
        lines += ["", "resnet20 rows: the seed-0 cts ticket; vgg16 (28x28) and tv:resnet18 (synthetic 3x64x64): "
                      "magnitude-channel masks at theta_0 (speed only). Target: speed-up >= 0.6 x MAC ratio at batch 64."]
    if latency:
        r1 = latency["bench"].get(1, {})
        b = latency["result"].get("budget", {})
        lines += ["", "### Latency budget", "",
                  f"resnet20, cts, `--budget latency={latency['asked_ms']:.4f}` (1/3 of the dense model's "
                  f"{latency['dense_ms_probe']:.3f} ms on ORT, batch 1, 1 thread): the selection's own measurement "
                  f"{b.get('measured_ms', float('nan')):.3f} ms after {len(b.get('rounds', []))} round(s); "
                  f"`sparsekit bench` measured {r1.get('ms', float('nan')):.3f} ms "
                  f"({r1.get('ms', float('nan')) / latency['asked_ms']:.2f}x the budget; target within 10 %), "
                  f"accuracy {100 * latency['result']['accuracy']:.2f} %."]
    if not speed and not latency:
        lines += ["", "Speed and latency: not measured by this invocation (`--target-only`, or no cts ticket)."]
    if skipped:
        lines += ["", "Not measured in this run: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
