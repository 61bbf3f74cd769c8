"""``bench()``: time every model variant interleaved with its dense reference, in fresh processes.

What one bench call measures, for each runtime and each run (a ticket and its dense reference, or
ONNX files that pair by their metadata):

- timing: ``repeats`` (>= 3) fresh processes per (run, runtime); each loads the dense and the ticket
  variants and times them interleaved, in rounds of one block each in shuffled order
  (``worker.time_interleaved``). The processes of all (run, runtime) groups alternate: repeat 1 of
  every group, then repeat 2, ..., so slow drift of the machine is spread over all of them.
  ONNX Runtime and torch never share a process (their thread pools slow each other down).
- memory and accuracy: one more process per variant that holds ONLY that variant (a CSR or
  structured row's process drops the dense model it was converted from before its peak is counted),
  and one per runtime that loads an empty model. ``peak_rss_bytes`` / ``runtime_baseline_rss_bytes``
  are the two processes' peak RSS; ``model_rss_delta_bytes`` is their difference;
  ``model_memory_bytes`` is the difference of their PRIVATE peaks (peak RSS minus file-backed pages:
  library code that each code path pages in differently and every process shares), i.e. what the
  model's weights, buffers and activations add to the runtime.

``report.finalize_rows`` then computes, per row, the speed-up against the fastest dense runtime of the
same run, batch and threads, and against the same runtime's dense, each with a bootstrap interval.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.bench.runtimes import DEFAULT_RUNTIMES, RUNTIMES, Runtime
from sparsekit.bench.sources import Source, resolve
from sparsekit.errors import SparsekitError, UsageError

log = logging.getLogger("sparsekit")

REPORT_SCHEMA_VERSION = 2
DEFAULT_WARMUP = 5
#: timed seconds per variant, batch size and process; with 3 processes 0.3 s keeps `make demo` short
DEFAULT_MIN_TIME_S = 0.3
DEFAULT_REPEATS = 3
MIN_REPEATS = 3
#: wall time of one timing block (back-to-back calls of one variant) and the fewest rounds per process
BLOCK_S = 0.01
MIN_ROUNDS = 5
ACCURACY_BATCH = 256
#: a child that takes longer than this is killed and reported as failed
CHILD_TIMEOUT_S = 1800
BENCH_FORMATS = ("masked", "structured")


@dataclass(frozen=True)
class BenchConfig:
    """Options of ``sparsekit bench``; defaults keep a bench fast and reproducible."""

    inputs: tuple[str, ...] = field(metadata={"help": "run directories and/or .onnx files"})
    runtimes: tuple[str, ...] | None = field(default=None, metadata={"help": "None: DEFAULT_RUNTIMES"})
    batches: tuple[int, ...] = field(default=(1, 32), metadata={"help": "batch sizes"})
    threads: int = field(default=1, metadata={"help": "intra-op threads (1 = reproducible)"})
    warmup: int = field(default=DEFAULT_WARMUP, metadata={"help": "untimed calls per variant and batch size"})
    min_time: float = field(default=DEFAULT_MIN_TIME_S,
                            metadata={"help": "timed seconds per variant, batch size and process"})
    repeats: int = field(default=DEFAULT_REPEATS, metadata={"help": "fresh timing processes per run and runtime"})
    data: str | None = field(default=None, metadata={"help": "dataset spec (default: the run's)"})
    data_dir: str | None = field(default=None, metadata={"help": "where dataset files are"})
    dense: bool = field(default=True, metadata={"help": "also measure each run's dense reference"})
    formats: tuple[str, ...] = field(default=("masked",), metadata={"help": "ticket formats for run dirs"})
    accuracy_limit: int | None = field(default=None, metadata={"help": "test samples for accuracy (None: all)"})
    seed: int = field(default=0, metadata={"help": "seed of the round order and the bootstrap"})

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("give at least one run directory or .onnx file")
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"--batch sizes must be >= 1, got {list(self.batches)}")
        if self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}")
        if not (self.min_time > 0 and math.isfinite(self.min_time)):
            raise UsageError(f"--min-time must be a positive number of seconds, got {self.min_time}")
        if self.repeats < MIN_REPEATS:
            raise UsageError(f"--repeats must be >= {MIN_REPEATS} (fresh processes per measurement; fewer "
                             f"cannot show process-to-process variation), got {self.repeats}")
        if self.accuracy_limit is not None and self.accuracy_limit < 1:
            raise UsageError(f"--accuracy-limit must be >= 1, got {self.accuracy_limit}")
        for f in self.formats:
            if f not in BENCH_FORMATS:
                raise UsageError(f"--format must be among {', '.join(BENCH_FORMATS)}, got {f!r}")


def select_runtimes(names: tuple[str, ...] | None) -> tuple[list[Runtime], list[dict[str, str]]]:
    """Runtimes to use and those skipped; explicit but unavailable ones are usage errors."""
    explicit = names is not None
    chosen, skipped = [], []
    for name in names or DEFAULT_RUNTIMES:
        rt = RUNTIMES.get(name)  # unknown -> UsageError with "did you mean"
        reason = rt.unavailable_reason()
        if reason and explicit:
            raise UsageError(f"--runtime {name}: {reason}")
        if reason:
            skipped.append({"model": "*", "runtime": name, "reason": reason})
        else:
            chosen.append(rt)
    return chosen, skipped


def bench(cfg: BenchConfig, workdir: str | None = None) -> dict[str, Any]:
    """Measure and return the report dict (see ``report.REPORT_KEYS`` for row keys).

    Example:
        >>> bench(BenchConfig(("runs/lenet",), runtimes=("ort-cpu",)))["rows"][0]["speedup_vs_best_dense"]  # doctest: +SKIP
    """
    from sparsekit.bench.env import fingerprint
    from sparsekit.bench.speedup_report import best_dense_summary, finalize_rows

    environment = fingerprint(cfg.threads)  # load average before this bench adds its own
    runtimes, skipped = select_runtimes(cfg.runtimes)
    sources = resolve(list(cfg.inputs), cfg.formats, cfg.dense)
    with tempfile.TemporaryDirectory(prefix="sparsekit-bench-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        data_files = _DataFiles(tmpdir, cfg)
        groups = _timing_groups(runtimes, sources, cfg, tmpdir, data_files, skipped)
        timings, failed = _time_groups(groups, cfg, tmpdir, data_files, skipped)
        rows = _measure_memory(groups, timings, failed, cfg, tmpdir, data_files, skipped)
    if not rows:
        reasons = "; ".join(f"{s['model']} on {s['runtime']}: {s['reason']}" for s in skipped[:2])
        raise SparsekitError(f"nothing was measured ({reasons or 'no runtime could run the inputs'})")
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "sparsekit-bench",
        "environment": environment,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        | {"runtimes": [r.name for r in runtimes], "block_s": BLOCK_S, "min_rounds": MIN_ROUNDS},
        "rows": finalize_rows(rows, seed=cfg.seed),
        "best_dense": best_dense_summary(rows),  # rows are finalized in place above
        "skipped": skipped,
    }


#: one timing group per (engine, device, run): its (runtime, source, variant spec) members
_Groups = dict[tuple[str, str, str], list[tuple[Runtime, Source, dict[str, Any]]]]


def _timing_groups(runtimes: list[Runtime], sources: list[Source], cfg: BenchConfig, tmpdir: Path,
                   data_files: _DataFiles, skipped: list[dict[str, Any]]) -> _Groups:
    """The variants to measure, grouped so torch-cpu and torch-csr variants share processes; what
    cannot run is appended to ``skipped`` with its reason."""
    onnx_cache: dict[str, tuple[str, int]] = {}
    groups: _Groups = {}
    names = {rt.name for rt in runtimes}
    for rt in runtimes:
        for src in sources:
            reason = _cannot_run(rt, src)
            if reason:
                skipped.append({"model": src.label, "runtime": rt.name, "reason": reason})
                continue
            if src.variant == "dense" and rt.dense_runtime in names:
                continue  # e.g. torch-csr's dense IS torch-cpu's dense: measured once, under that name
            data_files.get(src)  # a model/data mismatch is the user's to fix: UsageError, exit 2
            try:
                spec = _variant_spec(rt, src, cfg, tmpdir, onnx_cache)
            except UsageError:
                raise
            except SparsekitError as exc:
                skipped.append({"model": src.label, "runtime": rt.name, "reason": f"failed: {exc}"})
                continue
            if src.fixed_batch is not None and src.fixed_batch not in cfg.batches:
                skipped.append({"model": src.label, "runtime": rt.name, "reason": f"exported for batch "
                                f"{src.fixed_batch} only (--static-batch); add --batch {src.fixed_batch}"})
                continue
            groups.setdefault((rt.engine, rt.device, src.pair_key), []).append((rt, src, spec))
    return groups


def _time_groups(groups: _Groups, cfg: BenchConfig, tmpdir: Path, data_files: _DataFiles,
                 skipped: list[dict[str, Any]]) -> tuple[dict[tuple[str, str, str], list[dict[str, Any]]],
                                                         set[tuple[str, str, str]]]:
    """(timings per group, one result per repeat; the groups whose timing process failed)."""
    from sparsekit.progress import track

    timings: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    failed: set[tuple[str, str, str]] = set()
    jobs = [(rep, key) for rep in range(cfg.repeats) for key in groups]
    for rep, key in track(jobs, len(jobs), "bench timing"):
        if key in failed:
            continue
        members = groups[key]
        job = {"kind": "time", "threads": cfg.threads, "batches": _batches(cfg, [m[1] for m in members]),
               "warmup": cfg.warmup, "min_time_s": cfg.min_time, "block_s": BLOCK_S,
               "min_rounds": MIN_ROUNDS, "seed": cfg.seed * 100 + rep, "x": data_files.get(members[0][1])[0],
               "variants": [{**spec, "id": _vid(rt, src)} for rt, src, spec in members]}
        try:
            res = _run_child(job, tmpdir)
        except SparsekitError as exc:
            failed.add(key)
            skipped += [{"model": src.label, "runtime": rt.name, "reason": f"failed: {exc}"}
                        for rt, src, _ in members]
            continue
        timings.setdefault(key, []).append(res)
    return timings, failed


def _measure_memory(groups: _Groups, timings: dict[tuple[str, str, str], list[dict[str, Any]]],
                    failed: set[tuple[str, str, str]], cfg: BenchConfig, tmpdir: Path, data_files: _DataFiles,
                    skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Memory and accuracy of every timed variant (one process each, RSS over an empty baseline of its
    engine); the report rows."""
    from sparsekit.progress import track

    rows: list[dict[str, Any]] = []
    mem_jobs = [(key, m) for key, members in groups.items() if key not in failed for m in members]
    baselines: dict[tuple[str, str], dict[int, tuple[int | None, int | None]]] = {}
    empty_onnx = _empty_onnx(tmpdir)
    for key, (rt, src, spec) in track(mem_jobs, len(mem_jobs), "bench memory"):
        x, y = data_files.get(src)
        base_key = (rt.engine, rt.device)
        try:
            if base_key not in baselines:
                baselines[base_key] = _baseline_rss(spec, cfg, tmpdir, x, empty_onnx)
            mem = _run_child({"kind": "memory", "threads": cfg.threads,
                              "batches": _batches(cfg, [m[1] for m in groups[key]]),
                              "x": x, "y": y, "accuracy_limit": cfg.accuracy_limit,
                              "accuracy_batch": src.fixed_batch or ACCURACY_BATCH,
                              "whole_batches_only": src.fixed_batch is not None, "variant": spec}, tmpdir)
        except SparsekitError as exc:
            skipped.append({"model": src.label, "runtime": rt.name, "reason": f"failed: {exc}"})
            continue
        rows += _rows(src, rt, cfg, spec, [t["batches"] for t in timings[key]], mem, baselines[base_key])
    return rows


def _cannot_run(rt: Runtime, src: Source) -> str | None:
    if rt.engine == "torch" and src.kind == "onnx":
        return f"{rt.name} runs torch modules; {src.label} is an ONNX file (bench its run directory instead)"
    if rt.sparse == "csr" and src.format == "structured":
        return "torch-csr converts masked-dense tickets; the structured model is already dense (use torch-cpu)"
    return None


class _DataFiles:
    """Test split written once per dataset as .npy (children map it, never import torch for it)."""

    def __init__(self, tmpdir: Path, cfg: BenchConfig) -> None:
        self.tmpdir, self.cfg, self.cache = tmpdir, cfg, {}

    def get(self, src: Source) -> tuple[str, str]:
        spec = self.cfg.data or src.data
        if spec is None:
            raise UsageError(f"{src.label} carries no dataset in its metadata; pass --data")
        if spec not in self.cache:
            from sparsekit.data import load_dataset

            bundle = load_dataset(spec, self.cfg.data_dir)
            xs, ys = [], []
            for x, y in bundle.batches("test", 1024, limit=self.cfg.accuracy_limit):
                xs.append(x.numpy())
                ys.append(y.numpy())
            n = len(self.cache)
            xp, yp = self.tmpdir / f"x{n}.npy", self.tmpdir / f"y{n}.npy"
            np.save(xp, np.concatenate(xs).astype(np.float32))
            np.save(yp, np.concatenate(ys).astype(np.int64))
            self.cache[spec] = (str(xp), str(yp))
        xp, yp = self.cache[spec]
        if src.in_shape is not None:
            shape = tuple(np.load(xp, mmap_mode="r").shape[1:])
            if shape != tuple(src.in_shape):
                raise UsageError(f"{src.label} expects inputs of shape {tuple(src.in_shape)} but --data {spec} "
                                 f"has {shape}; pass the dataset the model was built for")
        return xp, yp


def _variant_spec(rt: Runtime, src: Source, cfg: BenchConfig, tmpdir: Path,
                  onnx_cache: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """What a child needs to rebuild this variant on this runtime (exports ONNX once per variant)."""
    spec: dict[str, Any] = {"engine": rt.engine, "device": rt.device, "runtime": rt.name}
    if rt.engine == "torch":
        spec.update(run_dir=src.path, variant=src.variant, format=src.format, sparse=rt.sparse)
        return spec
    if src.kind == "onnx":
        path = src.path
        if src.label not in onnx_cache:
            import onnx

            from sparsekit.bench.macs import onnx_macs

            onnx_cache[src.label] = (path, onnx_macs(onnx.load(path)))
        macs = onnx_cache[src.label][1]
    elif src.label in onnx_cache:
        path, macs = onnx_cache[src.label]
    else:
        import onnx

        from sparsekit.bench.macs import onnx_macs
        from sparsekit.export import export_run

        path = str(tmpdir / f"{len(onnx_cache)}.onnx")
        export_run(src.path, path, dense=src.variant == "dense", fmt=src.format, data_dir=cfg.data_dir)
        macs = onnx_macs(onnx.load(path))
        onnx_cache[src.label] = (path, macs)
    spec.update(onnx=path, macs=macs)
    if rt.module is not None:
        spec.update(module=rt.module, options=dict(rt.options))
        prepare = getattr(rt.loader(), "prepare", None)
        if prepare is not None:  # e.g. MNN's conversion: once here, not in every timing process
            spec.update(prepare(path, **dict(rt.options)))
    return spec


def _batches(cfg: BenchConfig, sources: list[Source]) -> list[int]:
    """Batch sizes every source of a timing group can run (a --static-batch file runs only its own)."""
    fixed = {s.fixed_batch for s in sources if s.fixed_batch is not None}
    return sorted(b for b in set(cfg.batches) if not fixed or b in fixed)


def _vid(rt: Runtime, src: Source) -> str:
    return f"{rt.name}|{src.label}"


def _empty_onnx(tmpdir: Path) -> str:
    """An Identity graph over any float tensor: the runtime's own memory with no model in it.

    Written here, not in the child, so the baseline process does not import onnx either.
    """
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = str(tmpdir / "empty.onnx")
    onnx.save(m, path)
    return path


def _baseline_rss(spec: dict[str, Any], cfg: BenchConfig, tmpdir: Path, x: str,
                  empty_onnx: str) -> dict[int, tuple[int | None, int | None]]:
    """Peak RSS per batch of the same runtime running an empty model (Identity)."""
    empty = {"engine": spec["engine"], "device": spec["device"], "module": spec.get("module"),
             "options": spec.get("options", {}), "empty": True, "onnx": empty_onnx}
    res = _run_child({"kind": "memory", "threads": cfg.threads, "batches": sorted(set(cfg.batches)),
                      "x": x, "y": None, "variant": empty}, tmpdir)
    return {b["batch"]: (b["peak_rss_bytes"], b.get("peak_private_bytes")) for b in res["batches"]}


def _run_child(job: dict[str, Any], tmpdir: Path) -> dict[str, Any]:
    fd, job_path = tempfile.mkstemp(suffix=".job.json", dir=tmpdir)
    os.close(fd)
    res_path = job_path.replace(".job.json", ".result.json")
    Path(job_path).write_text(json.dumps(job))
    env = dict(os.environ)
    # OpenMP/MKL pools sized before torch starts; torch.set_num_threads is also called in the child
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(job["threads"])
    try:
        proc = subprocess.run([sys.executable, "-m", "sparsekit.bench.worker", job_path, res_path], env=env,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SparsekitError(f"measurement exceeded {CHILD_TIMEOUT_S} s") from None
    if not Path(res_path).is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise SparsekitError(f"measurement process died: {tail[0]}")
    result = json.loads(Path(res_path).read_text())
    if not result.get("ok"):
        raise SparsekitError(result.get("error", "unknown error"))
    return result


def _rows(src: Source, rt: Runtime, cfg: BenchConfig, spec: dict[str, Any], timing: list[dict[str, Any]],
          mem: dict[str, Any], baseline: dict[int, tuple[int | None, int | None]]) -> list[dict[str, Any]]:
    from sparsekit.bench.stats import percentiles_ms, pooled_median

    macs = mem.get("macs", spec.get("macs"))
    peaks = {b["batch"]: (b["peak_rss_bytes"], b.get("peak_private_bytes")) for b in mem["batches"]}
    out = []
    for b in sorted(int(k) for k in timing[0]):
        per_proc = [t[str(b)][_vid(rt, src)] for t in timing]  # one entry per timing process
        blocks_ms = [[v * 1e3 for v in p["blocks"]] for p in per_proc]  # (process, block) ms per call
        calls = [c for p in per_proc for c in p["calls"]]
        p50_block = pooled_median(blocks_ms)
        (peak, private), (base, base_private) = peaks.get(b, (None, None)), baseline.get(b, (None, None))
        out.append({
            "model": src.label,
            "source": src.path,
            "variant": src.variant,
            "format": "csr" if (rt.sparse == "csr" and src.variant == "ticket") else src.format,
            "runtime": rt.name,
            "device": rt.device,
            "batch": b,
            "threads": cfg.threads,
            # p50 = median of the block medians (each process weighs by its time, not by how many calls
            # fit in it, and it is the statistic the speed-ups use); p90/p99 over every timed call
            "latency_ms": {**percentiles_ms(calls), "p50": p50_block},
            "block_medians_ms": blocks_ms,
            "processes": len(per_proc),
            "timed_calls": len(calls),
            "throughput_per_s": b / (p50_block / 1e3) if p50_block > 0 else None,
            "peak_rss_bytes": peak,
            "runtime_baseline_rss_bytes": base,
            "peak_private_bytes": private,
            "runtime_baseline_private_bytes": base_private,
            # what the model adds to the runtime: private (non file-backed) peak minus the empty model's
            "model_memory_bytes": (private - base_private) if private is not None and base_private is not None else None,
            "model_rss_delta_bytes": (peak - base) if peak is not None and base is not None else None,
            "load_peak_rss_bytes": mem.get("load_peak_rss_bytes"),
            "file_bytes": mem.get("file_bytes"),
            "macs": macs,
            "accuracy": mem.get("accuracy"),
            "sparsity": None if math.isnan(src.sparsity) else src.sparsity,
            "pair_key": src.pair_key,
            "dense_runtime": rt.dense_runtime,
            "runtime_sparse": rt.sparse,  # how the runtime executes sparsity (see runtimes.Runtime)
            "load_s": mem.get("load_s"),
            **({"budget": src.budget} if src.budget else {}),  # what the ticket was asked for and reached
        })
    return out
