"""``bench()``: measure every (model variant, runtime) in a fresh process and pair tickets with dense.

Each (variant, runtime) runs in its own child process (``worker.py``), one after another, so ONNX
Runtime and torch never share a process or compete for the cores, and peak RSS is the child's own.
A run directory is measured as its ticket AND its dense reference in the same bench call, with the
same runtime, threads and batch sizes, so every speed-up has a same-run baseline.
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

REPORT_SCHEMA_VERSION = 1
DEFAULT_WARMUP = 10
DEFAULT_ITERS = 50
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
    warmup: int = field(default=DEFAULT_WARMUP, metadata={"help": "untimed calls per batch size"})
    iters: int = field(default=DEFAULT_ITERS, metadata={"help": "timed calls per batch size"})
    data: str | None = field(default=None, metadata={"help": "dataset spec (default: the run's)"})
    data_dir: str | None = field(default=None, metadata={"help": "where dataset files are"})
    dense: bool = field(default=True, metadata={"help": "also measure each run's dense reference"})
    formats: tuple[str, ...] = field(default=("masked",), metadata={"help": "ticket formats for run dirs"})
    accuracy_limit: int | None = field(default=None, metadata={"help": "test samples for accuracy (None: all)"})

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("give at least one run directory or .onnx file")
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"--batch sizes must be >= 1, got {list(self.batches)}")
        if self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}")
        if self.warmup < 0 or self.iters < 1:
            raise UsageError(f"--warmup must be >= 0 and --iters >= 1, got {self.warmup}/{self.iters}")
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
        >>> bench(BenchConfig(("runs/lenet",), runtimes=("ort-cpu",)))["rows"][0]["speedup_vs_dense"]  # doctest: +SKIP
    """
    from sparsekit.bench.env import fingerprint
    from sparsekit.bench.report import finalize_rows

    runtimes, skipped = select_runtimes(cfg.runtimes)
    sources = resolve(list(cfg.inputs), cfg.formats, cfg.dense)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sparsekit-bench-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        data_files = _DataFiles(tmpdir, cfg)
        onnx_cache: dict[str, tuple[str, int]] = {}
        for rt in runtimes:
            for src in sources:
                reason = _cannot_run(rt, src)
                if reason:
                    skipped.append({"model": src.label, "runtime": rt.name, "reason": reason})
                    continue
                try:
                    job = _job(rt, src, cfg, tmpdir, data_files, onnx_cache)
                    result = _run_child(job, tmpdir)
                except SparsekitError as exc:
                    skipped.append({"model": src.label, "runtime": rt.name, "reason": f"failed: {exc}"})
                    continue
                rows += _rows(src, rt, cfg, job, result)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "sparsekit-bench",
        "environment": fingerprint(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        | {"runtimes": [r.name for r in runtimes]},
        "rows": finalize_rows(rows),
        "skipped": skipped,
    }


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
        return self.cache[spec]


def _job(rt: Runtime, src: Source, cfg: BenchConfig, tmpdir: Path, data: _DataFiles,
         onnx_cache: dict[str, tuple[str, int]]) -> dict[str, Any]:
    x, y = data.get(src)
    job: dict[str, Any] = {
        "engine": rt.engine, "device": rt.device, "threads": cfg.threads, "batches": sorted(set(cfg.batches)),
        "warmup": cfg.warmup, "iters": cfg.iters, "x": x, "y": y, "accuracy_limit": cfg.accuracy_limit,
        "accuracy_batch": ACCURACY_BATCH,
    }
    if rt.engine == "torch":
        job.update(run_dir=src.path, variant=src.variant, format=src.format, sparse=rt.sparse)
        return job
    if src.kind == "onnx":
        path = src.path
        import onnx

        from sparsekit.bench.macs import onnx_macs

        macs = onnx_macs(onnx.load(path))
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
    job.update(onnx=path, provider=rt.ort_provider, macs=macs)
    return job


def _run_child(job: dict[str, Any], tmpdir: Path) -> dict[str, Any]:
    fd, job_path = tempfile.mkstemp(suffix=".job.json", dir=tmpdir)
    os.close(fd)
    res_path = job_path.replace(".job.json", ".result.json")
    Path(job_path).write_text(json.dumps(job))
    env = dict(os.environ)
    # OpenMP/MKL pools sized before torch starts; torch.set_num_threads is also called in the child
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(job["threads"])
    worker = Path(__file__).with_name("worker.py")
    try:
        proc = subprocess.run([sys.executable, str(worker), job_path, res_path], env=env,
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


def _rows(src: Source, rt: Runtime, cfg: BenchConfig, job: dict[str, Any], res: dict[str, Any]) -> list[dict[str, Any]]:
    macs = res.get("macs", job.get("macs"))
    out = []
    for b in res["batches"]:
        out.append({
            "model": src.label,
            "source": src.path,
            "variant": src.variant,
            "format": "csr" if (rt.sparse == "csr" and src.variant == "ticket") else src.format,
            "runtime": rt.name,
            "device": rt.device,
            "batch": b["batch"],
            "threads": cfg.threads,
            "latency_ms": b["latency_ms"],
            "throughput_per_s": b["throughput_per_s"],
            "peak_rss_bytes": b["peak_rss_bytes"],
            "file_bytes": res.get("file_bytes"),
            "macs": macs,
            "accuracy": res.get("accuracy"),
            "sparsity": None if math.isnan(src.sparsity) else src.sparsity,
            "pair_key": src.pair_key,
            "load_s": res.get("load_s"),
        })
    return out
