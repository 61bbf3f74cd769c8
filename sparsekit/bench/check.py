"""CI gates on a bench report: accuracy drop, speed-up, size ratio (``sparsekit check``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsekit.errors import UsageError

#: --against: which dense row a speed-up gate compares with (report keys speedup_vs_<key>)
AGAINST = {"best-dense": "best_dense", "same-runtime": "same_runtime_dense"}


@dataclass(frozen=True)
class Gates:
    """Thresholds; None = gate not applied."""

    max_accuracy_drop: float | None = field(default=None, metadata={"help": "percentage points vs dense"})
    min_speedup: float | None = field(default=None, metadata={"help": "dense p50 / ticket p50"})
    max_size_ratio: float | None = field(default=None, metadata={"help": "ticket file / dense file"})
    runtime: str | None = field(default=None, metadata={"help": "only rows of this runtime"})
    batch: int | None = field(default=None, metadata={"help": "only rows of this batch size"})
    format: str | None = field(default=None, metadata={"help": "only ticket rows of this format"})
    against: str = field(default="best-dense", metadata={"help": "best-dense or same-runtime"})


@dataclass
class CheckResult:
    passed: bool
    checked_rows: int
    failures: list[dict[str, Any]]
    passes: list[dict[str, Any]]

    against: str = "best-dense"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``sparsekit bench --json`` report (bad or corrupt -> UsageError, exit 2)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"report not found: {p}")
    try:
        rep = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"corrupt report {p}: {exc}") from None
    if not isinstance(rep, dict) or not isinstance(rep.get("rows"), list) or "schema_version" not in rep:
        raise UsageError(f"{p} is not a sparsekit bench report (no schema_version/rows)")
    for i, r in enumerate(rep["rows"]):
        if not isinstance(r, dict) or not {"variant", "runtime", "batch", "latency_ms"} <= set(r):
            raise UsageError(f"{p}: row {i} is malformed")
    return rep


def check_report(report: dict[str, Any], gates: Gates) -> CheckResult:
    """Apply the gates to every ticket row (after the runtime/batch filters).

    Raises:
        UsageError: no gate given, or no ticket row matches the filters.

    Example:
        >>> check_report(load_report("report.json"), Gates(min_speedup=1.5)).passed  # doctest: +SKIP
    """
    if gates.against not in AGAINST:
        raise UsageError(f"--against must be one of {', '.join(AGAINST)}, got {gates.against!r}")
    if gates.max_accuracy_drop is None and gates.min_speedup is None and gates.max_size_ratio is None:
        raise UsageError("give at least one gate: --max-accuracy-drop, --min-speedup or --max-size-ratio")
    rows = [r for r in report["rows"] if r["variant"] == "ticket"
            and (gates.runtime is None or r["runtime"] == gates.runtime)
            and (gates.batch is None or r["batch"] == gates.batch)
            and (gates.format is None or r.get("format") == gates.format)]
    if not rows:
        raise UsageError(f"no ticket rows match runtime={gates.runtime} batch={gates.batch} "
                         f"format={gates.format} in the report")
    dense = {(r.get("pair_key"), r["runtime"], r["batch"], r.get("threads")): r
             for r in report["rows"] if r["variant"] == "dense"}
    failures, passes = [], []
    for r in rows:
        where = f"{r.get('model')} {r['runtime']} batch {r['batch']}"
        d = dense.get((r.get("pair_key"), r["runtime"], r["batch"], r.get("threads")))
        if d is None and r.get("dense_runtime"):  # torch-csr / mnn-sparse: their dense is measured once,
            d = dense.get((r.get("pair_key"), r["dense_runtime"], r["batch"], r.get("threads")))  # elsewhere
        checks = []
        if gates.max_accuracy_drop is not None:
            if d is None or r.get("accuracy") is None or d.get("accuracy") is None:
                checks.append(("accuracy drop", None, f"<= {gates.max_accuracy_drop} points", False))
            else:
                drop = (d["accuracy"] - r["accuracy"]) * 100
                checks.append(("accuracy drop", f"{drop:.2f} points", f"<= {gates.max_accuracy_drop} points",
                               drop <= gates.max_accuracy_drop))
        if gates.min_speedup is not None:
            checks.append(_speedup_check(r, gates))
        if gates.max_size_ratio is not None:
            q = r.get("size_ratio_vs_dense")
            checks.append(("size ratio", None if q is None else f"{q:.3f}", f"<= {gates.max_size_ratio}",
                           q is not None and q <= gates.max_size_ratio))
        for gate, measured, required, ok in checks:
            rec = {"row": where, "gate": gate, "measured": measured or "not measured (no dense row)",
                   "required": required}
            (passes if ok else failures).append(rec)
    return CheckResult(not failures, len(rows), failures, passes, gates.against)


def _speedup_check(r: dict[str, Any], gates: Gates) -> tuple[str, str | None, str, bool]:
    """A speed-up gate above 1.0 also needs the ratio's 95 % interval above 1.0 (a measurable gain).

    ``best-dense`` is the fastest dense runtime of the same run, batch and threads among every dense
    runtime benched (torch, ORT, OpenVINO, MNN dense, ...); the measured line names it.

    Reports of schema 1 carry only ``speedup_vs_dense`` (same runtime): they are read as such and
    only ``--against same-runtime`` can use them.
    """
    key = AGAINST[gates.against]
    s = r.get(f"speedup_vs_{key}")
    if s is None and key == "same_runtime_dense" and "speedup_vs_same_runtime_dense" not in r:
        s = r.get("speedup_vs_dense")
    ci = r.get(f"speedup_vs_{key}_ci")
    ok = s is not None and s >= gates.min_speedup
    ref = r.get("best_dense_runtime") if key == "best_dense" else None  # which dense runtime was fastest
    measured = None if s is None else (f"{s:.2f}x vs {gates.against}" + (f" {ref}" if ref else "")
                                       + (f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""))
    required = f">= {gates.min_speedup}x vs {gates.against}"
    if ok and gates.min_speedup > 1.0 and ci is not None and ci[0] <= 1.0:
        ok, required = False, required + " with the 95% CI above 1.0"
    return ("speedup", measured, required, ok)
