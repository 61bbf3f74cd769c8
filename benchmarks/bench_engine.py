"""sparse-cpu vs ONNX Runtime (dense) on briefly trained, globally magnitude-pruned zoo models.

    .venv/bin/python benchmarks/bench_engine.py            # full grid (~15-30 min on 2 vCPUs)
    .venv/bin/python benchmarks/bench_engine.py --quick    # 90/99 %, fewer rounds (~3-5 min)
    make bench-engine BENCH_ENGINE_ARGS=--quick   # make passes --record

``--record`` writes the markdown section (tables, crossover, efficiency, thread scaling, with command,
commit, machine, load average and date) into docs/benchmarks.md between ``<!-- bench-engine:start -->`` /
``<!-- bench-engine:end -->`` and a short summary into README.md between ``<!-- engine-summary:start -->`` /
``<!-- engine-summary:end -->``; every number in both comes from that run.

Method. Each model is trained for a few hundred SGD steps on ``synthetic:CxHxW`` (sparsekit.data's
seeded prototype+noise data, same input shape as the model) so weight magnitudes have trained structure
rather than init structure; then for every sparsity one global magnitude mask over all Conv/Linear
weights is applied (BN statistics from training), the model is exported with sparsekit's exporter
(``to_onnx_proto``: TorchScript, opset 17) and the SAME file is run by ORT (dense kernels; masked
zeros cost full time) and by sparse-cpu. Per (model, sparsity, batch, threads): both sessions are warmed
up, a block length of ~``--block-ms`` is calibrated per runtime, then ``--rounds`` rounds each run one
block of each runtime in a freshly shuffled order (1 ms pause between blocks); the reported latency is
the median over rounds of the per-call block mean. Speed-up = ORT / engine. "Crossover" = lowest
measured sparsity from which the engine is >= 1.1x ORT at that and every higher sparsity. Efficiency =
speed-up / (dense MACs / executed MACs), executed MACs from ``Session.plan()`` (sparse layers count
their non-zeros, dense-kernel layers all weights). Memory: fresh subprocess per runtime, peak RSS
(VmHWM) minus the RSS after imports, loading the 99 % ticket (engine, verify off) vs the same file
in ORT, one batch-64 inference each. At 2 threads ORT and the engine share the process (ORT spinning
on, the engine's OpenMP team), interleaved like at 1 thread. Writes a table to stdout and JSON to
``--out`` (default .bench/engine/bench_engine.json).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {
    "resnet20": (3, 32, 32),
    "vgg16": (3, 32, 32),
    "lenet5": (1, 28, 28),
    "lenet300": (1, 28, 28),
    "tv:mobilenet_v2": (3, 96, 96),
    "tv:efficientnet_b0": (3, 96, 96),
    "tv:regnet_y_400mf": (3, 96, 96),
    "tv:resnet18": (3, 64, 64),
}
SPARSITIES = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
QUICK_SPARSITIES = [0.0, 0.9, 0.99]
#: torchvision models (ORT takes ~0.1-1 s per batch-64 call on them): a shorter sparsity grid, and the
#: largest batch capped at HEAVY_MAX_BATCH, so the full grid stays within ~25 min on 2 vCPUs
HEAVY = {"tv:mobilenet_v2", "tv:efficientnet_b0", "tv:regnet_y_400mf", "tv:resnet18"}
HEAVY_SPARSITIES = [0.0, 0.9, 0.95, 0.99]
HEAVY_MAX_BATCH = 16
#: sparsities also measured with a per-layer (layerwise) magnitude mask: every Conv/Linear pruned to the
#: same fraction by its own threshold (torch.nn.utils.prune-style), next to the global mask
LAYERWISE_SPARSITIES = [0.9]
#: 2-thread rows are measured only when other processes used less than this many cores over a 1-s look
#: (sparsekit.bench.env.others_busy_cores: machine busy time minus this process's own), i.e. the second core
#: is idle; otherwise the row is recorded as "not measured: machine busy". Not the 1-min load average: it
#: counts this process's own 2-thread rows for a minute after them (the 9e89f00 record skipped 14 rows so)
IDLE_OTHERS = 0.3
#: (SGD steps, batch) of pre-training per model, scaled to its cost on a 2-vCPU machine
TRAIN = {"resnet20": (300, 64), "vgg16": (60, 16), "lenet5": (300, 64), "lenet300": (300, 64),
         "tv:mobilenet_v2": (60, 16), "tv:efficientnet_b0": (30, 16), "tv:regnet_y_400mf": (30, 16),
         "tv:resnet18": (30, 16)}


def train(name: str, shape: tuple, steps: int, bs: int, seed: int = 0, cache_dir: Path | None = None):
    import torch
    from safetensors.torch import load_file, save_file

    from sparsekit._io import atomic_write
    from sparsekit.data.synthetic import make_synthetic
    from sparsekit.models import ModelSpec, build_model

    # the cache holds the trained state as safetensors (never a pickle); the model is rebuilt from the zoo
    ck = cache_dir / f"trained_{name.replace(':', '_')}_{steps}x{bs}_s{seed}.safetensors" if cache_dir else None
    torch.manual_seed(seed)
    m = build_model(ModelSpec(name, shape, 10), seed=seed)
    if ck is not None and ck.exists():
        m.load_state_dict(load_file(ck))
        return m.eval(), float("nan")  # loss not known for a cached model
    data = make_synthetic(shape, n_train=2048, n_test=64, seed=seed)
    x_all, y_all = data.train.tensors
    opt = torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    m.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x_all.shape[0], (bs,), generator=g)
        loss = torch.nn.functional.cross_entropy(m(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    if ck is not None:
        ck.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in m.state_dict().items()}
        atomic_write(ck, lambda p: save_file(state, str(p)))
    return m, float(loss.detach())


def prune_export(m, shape: tuple, sparsity: float, path: Path, mask: str = "global") -> float:
    """Magnitude-prune a copy of ``m`` to ``sparsity`` (``mask``: "global" = one threshold over all Conv/Linear
    weights, "layerwise" = each layer to ``sparsity`` by its own threshold), export it to ``path``; returns
    the fraction of zero weights."""
    import copy

    import onnx
    import torch

    from sparsekit.export.onnx_export import ONNX_IR_VERSION, to_onnx_proto

    m = copy.deepcopy(m)
    ws = [mod.weight for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    if sparsity > 0:
        groups = [ws] if mask == "global" else [[w] for w in ws]
        with torch.no_grad():
            for grp in groups:
                mags = torch.cat([w.detach().abs().flatten() for w in grp])
                k = int(sparsity * mags.numel())
                if k < 1:
                    continue
                thr = mags.kthvalue(k).values
                for w in grp:
                    w.mul_((w.abs() > thr).float())
    zeros = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
    proto, _ = to_onnx_proto(m, shape)
    proto.ir_version = ONNX_IR_VERSION
    onnx.save(proto, str(path))
    return zeros


def _calibrate(f, block_s: float) -> int:
    f()
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            f()
        d = time.perf_counter() - t
        if d >= block_s or n >= 4096:
            return max(1, int(n * block_s / max(d, 1e-9)))
        n *= 2


#: pause between blocks of sessions that share a process at several threads (engine_threads.py): a pool
#: spins a few ms after a call (benchmarks/idle_spin.py) and would take the second core from the next block
SETTLE_S = 0.1

TIME_CODE = r"""
import sys, numpy as np
bench_dir, kind, path, B, shape, T, rounds, block_s = sys.argv[1:9]
sys.path.insert(0, bench_dir)
from bench_engine import interleaved, ort_session
B, T, rounds, block_s = int(B), int(T), int(rounds), float(block_s)
x = np.random.default_rng(B).standard_normal((B, *(int(v) for v in shape.split('x')))).astype(np.float32)
if kind == 'engine':
    import sparsekit.engine as E
    s = E.load(path, threads=T, cache=True)
    f = lambda: s.run(x)
elif kind == 'ort':
    s = ort_session(path, T)
    feed = {s.get_inputs()[0].name: x}
    f = lambda: s.run(None, feed)
else:
    from sparsekit.bench.runtimes import RUNTIMES
    g = RUNTIMES.get(kind).load(path, threads=T)
    f = lambda: g(x)
print(interleaved({kind: f}, rounds, block_s, seed=0)[kind])
"""


def time_alone(kind: str, path: Path, batch: int, shape: tuple, threads: int, rounds: int, block_s: float) -> float:
    """µs per call of one runtime timed in a process of its own. Multi-thread rows are timed so: in one process
    each runtime's pool spins for ms after its calls (ORT's ~25 ms at 2 threads, benchmarks/idle_spin.py) and
    took the second core from whichever runtime was timed next (resnet20 0 % batch 1, engine 2 threads: 503 µs
    after a pause, 1,146 µs right after ORT's calls, docs/benchmarks.md; a 0.1-s pause between blocks did not
    settle it reliably)."""
    r = subprocess.run([sys.executable, "-c", TIME_CODE, str(Path(__file__).resolve().parent), kind, str(path),
                        str(batch), "x".join(map(str, shape)), str(threads), str(rounds), str(block_s)],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["failed"])[-1][:200])
    return float(r.stdout.split()[-1])


def interleaved(fns: dict, rounds: int, block_s: float, seed: int, settle_s: float = 0.0) -> dict[str, float]:
    for f in fns.values():
        for _ in range(3):
            f()
    reps = {k: _calibrate(f, block_s) for k, f in fns.items()}
    res: dict[str, list[float]] = {k: [] for k in fns}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(fns)
        rng.shuffle(order)
        for k in order:
            f, n = fns[k], reps[k]
            time.sleep(settle_s)  # the previous block's pool stops spinning (0 at 1 thread: no pools)
            t = time.perf_counter()
            for _ in range(n):
                f()
            res[k].append((time.perf_counter() - t) / n)
            time.sleep(0.001)
    return {k: statistics.median(v) * 1e6 for k, v in res.items()}


def _other_runtime_objects() -> dict:
    """The other dense runtimes installed (OpenVINO, MNN dense) and MNN's sparse path, by name."""
    from sparsekit.bench.runtimes import RUNTIMES, dense_runtimes

    rts = {n: rt for n, rt in dense_runtimes().items() if n not in ("ort-cpu", "torch-cpu")}
    sparse = RUNTIMES.get("mnn-sparse")
    if sparse.unavailable_reason() is None:
        rts["mnn-sparse"] = sparse
    return rts


def other_runtimes(path: Path, threads: int) -> dict:
    """Loaded callables of the other runtimes (``_other_runtime_objects``), timed in the same interleaved rounds
    as ORT and the engine; a runtime that cannot load the file is left out with one line."""
    rts = _other_runtime_objects()
    out = {}
    for n, rt in rts.items():
        try:
            out[n] = rt.load(str(path), threads=threads)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this file is reported, not fatal
            print(f"  {n}: not measured on {path.name} ({str(exc).splitlines()[0][:120]})", flush=True)
    return out


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


MEM_CODE = r"""
import sys, numpy as np
def rss():
    d = {}
    for line in open('/proc/self/status'):
        k, v = line.split(':', 1)
        if k in ('VmRSS', 'VmHWM'):
            d[k] = int(v.split()[0]) / 1024
    return d['VmRSS'], d['VmHWM']
kind, path, shape = sys.argv[1], sys.argv[2], tuple(int(v) for v in sys.argv[3].split('x'))
x = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
if kind == 'engine':
    import sparsekit.engine as E
    base = rss()[0]
    s = E.load(path, verify=False, cache=True)
    s.run(x)
else:
    import onnxruntime as ort
    base = rss()[0]
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    s.run(None, {s.get_inputs()[0].name: x})
r, hwm = rss()
print(f'{base:.2f} {r:.2f} {hwm:.2f}')
"""


def memory(path: str, shape: tuple) -> dict:
    out = {}
    for kind in ("engine", "ort"):
        r = subprocess.run([sys.executable, "-c", MEM_CODE, kind, path, "x".join(map(str, shape))],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            out[kind] = {"error": r.stderr.strip().splitlines()[-1][:200] if r.stderr.strip() else "failed"}
            continue
        base, rss, hwm = (float(v) for v in r.stdout.split())
        out[kind] = {"base_mb": base, "rss_growth_mb": round(rss - base, 2), "peak_minus_base_mb": round(hwm - base, 2),
                     "peak_mb": round(hwm, 2)}
    return out


def measure(name: str, shape: tuple, path: Path, sp: float, mask: str, zeros: float, T: int, batches: list,
            rounds: int, block_s: float) -> list[dict]:
    """Interleaved ORT vs engine rows for one file at T threads (one row per batch)."""
    import sparsekit.engine as E

    sess = E.load(path, threads=T, cache=True)
    plan = sess.plan()
    md = sum(p["macs_dense"] or 0 for p in plan)
    ms = sum(p["macs_sparse"] or 0 for p in plan)
    ort_s = ort_session(str(path), T)
    iname = ort_s.get_inputs()[0].name
    # OpenVINO / MNN dense and MNN sparse, when installed: loaded here at 1 thread; at more threads each is
    # loaded and timed only in its own process (time_alone), a runtime that cannot load the file reported there
    others = other_runtimes(path, T) if T == 1 else dict.fromkeys(_other_runtime_objects())
    rows = []
    for B in batches:
        x = np.random.default_rng(B).standard_normal((B, *shape)).astype(np.float32)
        feed = {iname: x}
        ref = ort_s.run(None, feed)[0]
        err = float(np.max(np.abs(sess.run(x) - ref)))
        seed = hash((name, sp, mask, T, B)) % 2**31
        if T == 1:  # no pools: every runtime in the same interleaved rounds
            fns = {"ort": lambda: ort_s.run(None, feed), "engine": lambda: sess.run(x)}  # noqa: B023
            fns.update({n: (lambda f=f: f(x)) for n, f in others.items()})  # noqa: B023
            t = interleaved(fns, rounds, block_s, seed=seed)
        else:  # each runtime in a process of its own, in a shuffled order (time_alone says why)
            order = ["ort", "engine", *others]
            random.Random(seed).shuffle(order)
            t = {}
            for k in order:
                try:
                    t[k] = time_alone(k, path, B, shape, T, rounds, block_s)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    if k in ("ort", "engine"):
                        raise
                    print(f"  {k}: not measured alone ({exc})", flush=True)
            # the engine at 1 thread timed the same way: the thread-scaling table compares like with like (the
            # 1-thread row was interleaved with the other runtimes, which evict its weights from the caches)
            t["engine_1t"] = time_alone("engine", path, B, shape, 1, rounds, block_s)
        speed = t["ort"] / t["engine"]
        dense_us = {"ort-cpu": t["ort"], **{n: t[n] for n in others if n != "mnn-sparse" and n in t}}
        best = min(dense_us, key=dense_us.get)
        ratio = md / max(ms, 1)
        rows.append(dict(model=name, in_shape=list(shape), sparsity=sp, mask=mask, zeros=zeros, batch=B, threads=T,
                         ort_us=t["ort"], engine_us=t["engine"], speedup=speed, macs_dense=md, macs_exec=ms,
                         mac_ratio=ratio, efficiency=speed / ratio, max_abs_err=err, isa=sess.isa,
                         load1=round(os.getloadavg()[0], 2), dense_us=dense_us, best_dense=best,
                         best_dense_us=dense_us[best], speedup_vs_best_dense=dense_us[best] / t["engine"],
                         mnn_sparse_us=t.get("mnn-sparse"), timing="interleaved" if T == 1 else "alone",
                         engine_1t_alone_us=t.get("engine_1t"),
                         kernels={k: sum(1 for p in plan if p["kernel"] == k) for k in ("sparse", "dense")}))
        print(f"{name:16s} {sp * 100:7.1f}% {mask[:2]} {B:3d} {T:2d} {t['ort']:10.1f} {t['engine']:10.1f} "
              f"{speed:7.2f}x {ratio:8.1f}x {speed / ratio:6.2f}  best dense {best} {dense_us[best]:.1f} "
              f"({dense_us[best] / t['engine']:.2f}x)"
              + (f", mnn-sparse {t['mnn-sparse']:.1f}" if "mnn-sparse" in t else ""), flush=True)
    return rows


def fit_fixed_per_mac(rows: list[dict]) -> dict | None:
    """Least-squares fit of engine time per image = fixed + per_mmac * (executed MACs / 1e6) over a model's
    sparsities (same batch, threads, mask): the fixed-vs-per-MAC split of where its time goes."""
    pts = [(r["macs_exec"] / 1e6, r["engine_us"] / r["batch"]) for r in rows if r.get("engine_us")]
    if len({x for x, _ in pts}) < 2:
        return None
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    A = np.stack([np.ones_like(x), x], axis=1)
    (fixed, per), *_ = np.linalg.lstsq(A, y, rcond=None)
    pred = A @ np.array([fixed, per])
    err = float(np.max(np.abs(pred - y) / y))
    hi = rows[int(np.argmax([r["sparsity"] for r in rows]))]
    t_hi = hi["engine_us"] / hi["batch"]
    return {"fixed_us": float(fixed), "us_per_mmac": float(per), "max_rel_err": err, "points": len(pts),
            "fixed_share_at_max_sparsity": float(fixed) / t_hi if t_hi > 0 else None,
            "max_sparsity": hi["sparsity"]}


def crossover(points: dict[float, float], margin: float = 1.1) -> float | None:
    sps = sorted(points)
    for i, sp in enumerate(sps):
        if all(points[s] >= margin for s in sps[i:]):
            return sp
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sparsities 90/99 %%, 5 rounds, 0.3x the training steps")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    ap.add_argument("--sparsities", default=None, help="comma-separated fractions (default: full grid)")
    ap.add_argument("--layerwise", default=None,
                    help="comma-separated fractions also run with a per-layer mask (default 0.9; '' for none)")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--block-ms", type=float, default=None)
    ap.add_argument("--steps", type=float, default=None,
                    help="scale of the per-model pre-training steps (default 1, --quick 0.3)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=".bench/engine/bench_engine.json")
    ap.add_argument("--md", default=None, help="also write the tables as a standalone markdown file")
    ap.add_argument("--render-json", default=None, metavar="JSON",
                    help="measure nothing: re-render --md / --record from a saved --out JSON of an earlier run")
    ap.add_argument("--reuse-choices", action="store_true",
                    help="read kernel choices from the user's engine cache (default: this run times its own)")
    ap.add_argument("--record", action="store_true",
                    help="write the results into docs/benchmarks.md (bench-engine section) and README.md (engine-summary)")
    args = ap.parse_args()

    if args.render_json:
        d = json.loads(Path(args.render_json).read_text())
        write_docs(args, d["meta"], d["rows"], d["summary"], d["thread_scaling"], d["memory"],
                   d.get("fits", []), d.get("profiles", {}))
        return

    import torch

    torch.set_num_threads(2)
    import sparsekit.engine as E

    sparsities = ([float(v) for v in args.sparsities.split(",")] if args.sparsities
                  else QUICK_SPARSITIES if args.quick else SPARSITIES)
    rounds = args.rounds or (5 if args.quick else 11)
    block_s = (args.block_ms or (10.0 if args.quick else 20.0)) / 1000.0
    step_scale = args.steps if args.steps is not None else (0.3 if args.quick else 1.0)
    layerwise = ([float(v) for v in args.layerwise.split(",") if v] if args.layerwise is not None
                 else LAYERWISE_SPARSITIES)
    batches = [int(v) for v in args.batches.split(",")]
    threads_list = [int(v) for v in args.threads.split(",")]
    models = [m for m in args.models.split(",") if m]
    from sparsekit.bench.env import cpu_flags, cpu_model, git_commit, others_busy_cores

    commit = git_commit() or "unknown"
    meta = {
        "command": " ".join(["python"] + sys.argv),
        "commit": commit,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} / {cpu_model()} / {os.cpu_count()} vCPUs",
        "simd": cpu_flags(),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "isa": E.available_isas()[0],
        "onnxruntime": __import__("onnxruntime").__version__,
        "rounds": rounds, "block_ms": block_s * 1000, "train_step_scale": step_scale,
    }
    print(f"# sparse-cpu benchmark  commit {commit}  {meta['date']}  {meta['machine']}  isa {meta['isa']}", flush=True)
    rows: list[dict] = []
    mem_rows: dict = {}
    profiles: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    if not args.reuse_choices:
        # per-layer kernel choices are timed in this run, at its load, and shared by its subprocesses: a
        # choice cached by an earlier build or on a busy machine (same weights, same key) would otherwise
        # be measured (2026-12-06: three efficientnet_b0 depthwise convs kept the sparse kernel at ~50 us
        # from a cache entry written mid-development; timed afresh the dense form takes ~33 us)
        os.environ["SPARSEKIT_ENGINE_CACHE_DIR"] = str(tmp / "choices")
    meta["kernel_choices"] = "user cache" if args.reuse_choices else "timed in this run"
    hdr = f"{'model':16s} {'sparsity':>8s} {'mask':>4s} {'B':>3s} {'T':>2s} {'ORT us':>10s} {'engine us':>10s} {'speedup':>8s} {'MAC ratio':>9s} {'effic.':>6s}"
    for name in models:
        shape = MODELS[name]
        t0 = time.time()
        steps, bs = TRAIN[name]
        steps = max(1, int(steps * step_scale))
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            model, loss = train(name, shape, steps, bs, cache_dir=Path(args.out).parent)
        print(f"\n## {name} {shape}: trained {steps} SGD steps (batch {bs}) on synthetic:{'x'.join(map(str, shape))} "
              f"({'weights from the cache' if loss != loss else f'final loss {loss:.3f}'}, {time.time() - t0:.0f} s)",
              flush=True)
        print(hdr, flush=True)
        msp = [sp for sp in sparsities if name not in HEAVY or sp in HEAVY_SPARSITIES] or sparsities
        mb = sorted({min(B, HEAVY_MAX_BATCH) if name in HEAVY else B for B in batches})
        cases = [(sp, "global") for sp in msp] + [(sp, "layerwise") for sp in layerwise]
        for sp, mask in cases:
            tag = "" if mask == "global" else "_lw"
            path = tmp / f"{name.replace(':', '_')}_{sp}{tag}.onnx"
            zeros = prune_export(model, shape, sp, path, mask=mask)
            for T in threads_list:
                others_cores = others_busy_cores(1.0) if T > 1 else None
                if others_cores is not None and others_cores >= IDLE_OTHERS:
                    load = f"{round(os.getloadavg()[0], 2)}, others {others_cores:.2f} cores"
                    for B in mb:
                        rows.append(dict(model=name, in_shape=list(shape), sparsity=sp, mask=mask, zeros=zeros,
                                         batch=B, threads=T, load1=load, skipped="not measured: machine busy"))
                    print(f"{name:16s} {sp * 100:7.1f}% {mask[:2]} T={T}: not measured, machine busy (load {load})",
                          flush=True)
                    continue
                measured = measure(name, shape, path, sp, mask, zeros, T, mb, rounds, block_s)
                for r in measured:
                    r["others_cores_before"] = others_cores  # what the idle check read (None at 1 thread)
                rows += measured
                if T == 1 and sp == max(msp) and mask == "global":
                    prof = E.load(path, threads=1, cache=True, verify=False).profile(batch=1, seconds=0.5)
                    profiles[name] = {"sparsity": sp, "batch": 1, "wall_us": prof["wall_us"],
                                      "top": sorted(prof["ops"], key=lambda o: -o["us"])[:5]}
        if not args.no_memory:
            sp = 0.99 if 0.99 in sparsities else max(sparsities)
            path = tmp / f"{name.replace(':', '_')}_{sp}.onnx"
            mem_rows[name] = dict(sparsity=sp, **memory(str(path), shape))
            mm = mem_rows[name]
            print(f"memory {name} @ {sp * 100:.1f} % (peak RSS - after-import RSS, batch 64): engine "
                  f"{mm['engine'].get('peak_minus_base_mb')} MB, ORT {mm['ort'].get('peak_minus_base_mb')} MB", flush=True)
    summary, scal, fits = summarize(rows, models)
    meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary, "thread_scaling": scal,
                               "memory": mem_rows, "fits": fits, "profiles": profiles}, indent=1))
    print(f"\nwrote {out}")
    write_docs(args, meta, rows, summary, scal, mem_rows, fits, profiles)


def summarize(rows: list[dict], models: list[str]) -> tuple[list, list, list]:
    """Crossover and 99 % speed-up (global masks), 2-thread scaling, fixed-vs-per-MAC fits (1 thread)."""
    done = [r for r in rows if "skipped" not in r]
    key_b = sorted({r["batch"] for r in done})
    key_t = sorted({r["threads"] for r in done})
    summary, scal, fits = [], [], []
    print("\n## crossover (lowest sparsity with engine >= 1.1x ORT from there on) and speed-up at 99 %")
    for name in models:
        for B in key_b:
            for T in key_t:
                sel = [r for r in done if (r["model"], r["batch"], r["threads"], r.get("mask", "global"))
                       == (name, B, T, "global")]
                if not sel:
                    continue
                pts = {r["sparsity"]: r["speedup"] for r in sel}
                c = crossover(pts)
                s99 = pts.get(0.99)
                summary.append(dict(model=name, batch=B, threads=T, crossover=c, speedup_99=s99))
                cs = f"{c * 100:.1f} %" if c is not None else "none"
                print(f"{name:16s} B={B:<3d} T={T}: crossover {cs:>8s}   99 %: {s99 and f'{s99:.2f}x'}")
                f = fit_fixed_per_mac(sel) if T == 1 else None
                if f:
                    fits.append(dict(model=name, batch=B, threads=T, **f))
                    print(f"{'':16s} time/image = {f['fixed_us']:.1f} us fixed + {f['us_per_mmac']:.1f} us per M "
                          f"executed MACs (max fit error {f['max_rel_err'] * 100:.0f} %)")
    for r2 in done:
        if r2["threads"] != 2:
            continue
        r1 = next((r for r in done if r["threads"] == 1 and all(r[k] == r2[k] for k in
                                                                 ("model", "sparsity", "batch", "mask"))), None)
        if r1:
            t1 = r2.get("engine_1t_alone_us") or r1["engine_us"]  # alone when measured so
            scal.append(dict(model=r2["model"], sparsity=r2["sparsity"], mask=r2.get("mask", "global"),
                             batch=r2["batch"], scaling=t1 / r2["engine_us"], load1=r2.get("load1")))
    if scal:
        print("\n## engine 2-thread / 1-thread throughput")
        for sc in scal:
            print(f"{sc['model']:16s} {sc['sparsity'] * 100:5.1f}% B={sc['batch']}: {sc['scaling']:.2f}x (load {sc['load1']})")
    return summary, scal, fits


def write_docs(args: argparse.Namespace, meta: dict, rows: list, summary: list, scal: list, mem_rows: dict,
               fits: list | None = None, profiles: dict | None = None) -> None:
    fits, profiles = fits or [], profiles or {}
    if args.md:
        Path(args.md).write_text(markdown(meta, rows, summary, scal, mem_rows, fits=fits, profiles=profiles))
        print(f"wrote {args.md}")
    if args.record:
        from sparsekit._io import write_marked_section

        root = Path(__file__).resolve().parents[1]
        write_marked_section(root / "docs" / "benchmarks.md", "bench-engine",
                             markdown(meta, rows, summary, scal, mem_rows, level=2, fits=fits, profiles=profiles))
        write_marked_section(root / "README.md", "engine-summary", readme_summary(meta, rows, summary))
        print(f"wrote {root / 'docs' / 'benchmarks.md'} (bench-engine) and {root / 'README.md'} (engine-summary)")


def _pct(v: float | None) -> str:
    return "none" if v is None else f"{v * 100:g} %"


def readme_summary(meta: dict, rows: list, summary: list) -> str:
    """4-7 lines for README.md, every number from the run: where the engine pays (crossover per model), the
    speed-up at 99 %, per-layer masks, and where ORT dense was faster (1 thread)."""
    date = meta["date"][:10]
    done = [r for r in rows if "skipped" not in r and r["threads"] == 1]
    glob = [r for r in done if r.get("mask", "global") == "global"]
    sps = sorted({r["sparsity"] for r in glob})
    models = list(dict.fromkeys(r["model"] for r in glob))
    bmax = {n: max(r["batch"] for r in glob if r["model"] == n) for n in models}

    def cs(name: str, b: int) -> dict | None:
        return next((c for c in summary if (c["model"], c["batch"], c["threads"]) == (name, b, 1)), None)

    def cross(c: dict | None) -> str:
        if c is None:
            return "-"
        return ("<= " if c["crossover"] == sps[0] else "") + _pct(c["crossover"])

    def s99(c: dict | None) -> str:
        return f"{c['speedup_99']:.2f}x" if c and c["speedup_99"] else "-"

    lose = []
    for name in models:
        pts = sorted((r["sparsity"], r["batch"], r["speedup"]) for r in glob if r["model"] == name and r["speedup"] < 1.0)
        if pts:
            lose.append(f"{name} " + ", ".join(f"{sp * 100:g} % (batch {b}: {v:.2f}x)" for sp, b, v in pts))
    lw = [r for r in done if r.get("mask") == "layerwise"]
    L = [f"**sparse-cpu vs ONNX Runtime dense, measured** {date}, commit `{meta['commit']}`, {meta['machine']} "
         f"({' '.join(meta['simd'])}), load average {meta['loadavg_start'][0]:.1f}, 1 thread, same ONNX file, global "
         f"magnitude pruning at {', '.join(_pct(v) for v in sps)} (`benchmarks/bench_engine.py "
         f"{' '.join(meta['command'].split()[2:])}`; tables in [docs/benchmarks.md](docs/benchmarks.md)):",
         "- engine pays (>= 1.1x ORT from there up), batch 1 / largest: "
         + "; ".join(f"{n} {cross(cs(n, 1))} / {cross(cs(n, bmax[n]))} (b{bmax[n]})" for n in models) + ".",
         "- speed-up at 99 %, batch 1 / largest: "
         + "; ".join(f"{n} {s99(cs(n, 1))} / {s99(cs(n, bmax[n]))}" for n in models) + "."]
    fastest = []
    for name in models:
        pick = {b: next((r for r in glob if (r["model"], r["batch"], r["sparsity"]) == (name, b, 0.99)), None)
                for b in (1, bmax[name])}
        if all(p and p.get("best_dense") for p in pick.values()):
            fastest.append(f"{name} {pick[1]['best_dense']} / {pick[bmax[name]]['best_dense']}: "
                           f"{pick[1]['speedup_vs_best_dense']:.2f}x / {pick[bmax[name]]['speedup_vs_best_dense']:.2f}x")
    if fastest:
        L.append("- fastest dense runtime measured in the same rounds (of ORT, OpenVINO, MNN dense; batch 1 / largest) "
                 "and sparse-cpu's speed-up over it at 99 %: " + "; ".join(fastest) + ".")
    if lw:
        L.append("- per-layer masks: " + "; ".join(f"{r['model']} {r['sparsity'] * 100:g} % b{r['batch']} "
                                                    f"{r['speedup']:.2f}x" for r in lw) + ".")
    L.append(("- ORT dense was faster at: " + "; ".join(lose) + ". " if lose
              else "- ORT dense was never faster in this grid. ")
             + "Below a model's crossover use ORT dense, or a structured (channel-pruned) export that ORT runs at "
             "fewer MACs (`bench_deploy.py`).")
    return "\n".join(L)


def _load_cell(r: dict) -> str:
    """1-min load average at the row; 2-thread rows also what other processes used just before them."""
    oc = r.get("others_cores_before")
    return f"{r.get('load1', '-')}" + (f" (others {oc:.2f})" if oc is not None else "")


def markdown(meta: dict, rows: list, summary: list, scal: list, mem: dict, level: int = 1,
             fits: list | None = None, profiles: dict | None = None) -> str:
    h = "#" * level
    la = meta.get("loadavg_start"), meta.get("loadavg_end")
    L = [f"{h} sparse-cpu vs ONNX Runtime (bench_engine.py)", "",
         "Generated by `benchmarks/bench_engine.py` (method in its docstring); every number below comes from "
         "that one run.", "",
         f"* command: `{meta['command']}`", f"* commit: `{meta['commit']}`", f"* date: {meta['date']}",
         f"* machine: {meta['machine']}; SIMD {' '.join(meta.get('simd', []))}; engine ISA {meta['isa']}; "
         f"onnxruntime {meta['onnxruntime']}",
         f"* load average (1/5/15 min) at start {la[0]}, at end {la[1]} (this run's own threads included; "
         "2-thread rows ran only when other processes used < "
         f"{IDLE_OTHERS} cores in the second before them, shown as 'others' in the load column)",
         f"* 1 thread: {meta['rounds']} interleaved rounds of every runtime, ~{meta['block_ms']:.0f} ms blocks, median "
         "of per-round block means; 2 threads: each runtime in a process of its own (same rounds and blocks), one "
         "after another in a shuffled order: in one process a runtime's pool spins for ms after its calls and took "
         "the second core from the runtime timed next (`time_alone` in the script)",
         f"* engine kernel choices: {meta.get('kernel_choices', 'user cache')} (per-layer sparse / dense timing at "
         "load; `--reuse-choices` reads the user's cache instead)",
         "", "Latency per call (µs) of ONNX Runtime (dense kernels) and sparse-cpu on the same ONNX file; speed-up = "
         "ORT / engine; MAC ratio = dense MACs / executed MACs; efficiency = speed-up / MAC ratio.", "",
         "| model | sparsity | mask | batch | threads | ORT µs | engine µs | speed-up | MAC ratio | efficiency | load "
         "| best dense (µs) | engine vs best dense | mnn-sparse µs |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r['model']} | {r['sparsity'] * 100:.1f} % | {r.get('mask', 'global')} | {r['batch']} | "
                f"{r['threads']} |")
        if "skipped" in r:
            L.append(f"{head} {r['skipped']} (load {r.get('load1')}) | | | | | | | | | |")
            continue
        bd = (f"{r['best_dense']} ({r['best_dense_us']:.1f}) | {r['speedup_vs_best_dense']:.2f}x"
              if r.get("best_dense") else "- | -")
        ms = f"{r['mnn_sparse_us']:.1f}" if r.get("mnn_sparse_us") else "-"
        L.append(f"{head} {r['ort_us']:.1f} | {r['engine_us']:.1f} | {r['speedup']:.2f}x | {r['mac_ratio']:.1f}x | "
                 f"{r['efficiency']:.2f} | {_load_cell(r)} | {bd} | {ms} |")
    L += ["", f"{h}# Crossover (lowest sparsity with engine >= 1.1x ORT at it and every higher one)", "",
          "| model | batch | threads | crossover | speed-up at 99 % |", "|---|---|---|---|---|"]
    for c in summary:
        cs = f"{c['crossover'] * 100:.1f} %" if c["crossover"] is not None else "none"
        s99 = f"{c['speedup_99']:.2f}x" if c["speedup_99"] else "-"
        L.append(f"| {c['model']} | {c['batch']} | {c['threads']} | {cs} | {s99} |")
    if fits:
        L += ["", f"{h}# Where the engine's time goes: fixed vs per-MAC (1 thread, global masks)", "",
              "Least-squares fit over the model's sparsities: time per image = fixed + per-MAC x executed MACs. "
              "The fixed part (epilogues, data movement, dispatch) is what sparsity cannot remove.", "",
              "| model | batch | fixed µs/image | µs per M executed MACs | fixed share at max sparsity | max fit error |",
              "|---|---|---|---|---|---|"]
        for f in fits:
            share = f.get("fixed_share_at_max_sparsity")
            sh = "-" if share is None else f"{share * 100:.0f} % (at {f['max_sparsity'] * 100:g} %)"
            L.append(f"| {f['model']} | {f['batch']} | {f['fixed_us']:.1f} | {f['us_per_mmac']:.1f} | {sh} | "
                     f"{f['max_rel_err'] * 100:.0f} % |")
    if profiles:
        L += ["", f"{h}# Slowest ops at the highest sparsity (batch 1, `Session.profile`, median µs per op)", "",
              "| model | sparsity | wall µs | top ops (µs) |", "|---|---|---|---|"]
        for k, pr in profiles.items():
            top = ", ".join(f"{o['name']} ({o['kind']}, {o['kernel']}) {o['us']:.1f}" for o in pr["top"])
            L.append(f"| {k} | {pr['sparsity'] * 100:g} % | {pr['wall_us']:.0f} | {top} |")
    if scal:
        L += ["", f"{h}# Engine thread scaling (1-thread time / 2-thread time, each in a process of its own)", "",
              "| model | sparsity | mask | batch | scaling | load (1 min) |", "|---|---|---|---|---|---|"]
        L += [f"| {s['model']} | {s['sparsity'] * 100:.1f} % | {s.get('mask', 'global')} | {s['batch']} | "
              f"{s['scaling']:.2f}x | {s.get('load1', '-')} |" for s in scal]
    if mem:
        L += ["", f"{h}# Process memory (fresh process, batch 64, MB): peak RSS, and peak minus RSS after imports "
              "(the engine's delta includes importing onnx at load)", "",
              "| model | sparsity | engine peak | ORT peak (same file, dense kernels) | engine delta | ORT delta |",
              "|---|---|---|---|---|---|"]
        for k, m in mem.items():
            e, o = m["engine"], m["ort"]
            L.append(f"| {k} | {m['sparsity'] * 100:.1f} % | {e.get('peak_mb', e.get('error'))} | {o.get('peak_mb', o.get('error'))} | "
                     f"{e.get('peak_minus_base_mb')} | {o.get('peak_minus_base_mb')} |")
    L += ["", f"{h}# Notes", "",
          "* ORT runs the same masked-dense ONNX file (zeros cost full time); the engine picks sparse or dense "
          "per layer by timing both at load.",
          "* Batches of at least one vector width of images (16 on AVX-512) run the engine's conv trunk in the "
          "interleaved layout (images in the vector lanes) when the session measured it faster at load; "
          "`Session.profile(batch)['layout']` says which ran.",
          "* On a shared 2-vCPU VM, absolute times vary several-fold with other jobs; only ratios from the same "
          "round are meaningful, and 2-thread rows show no scaling when no second core is free (check "
          "`uptime` next to a run).",
          "* Weights: a short SGD pre-training on synthetic data (not a converged model), then one global "
          "magnitude mask per sparsity; layer densities follow from that (first conv and 1x1 shortcuts stay "
          "denser)."]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
