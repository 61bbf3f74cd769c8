"""The recommendation: the fastest (artifact, runtime) meeting the constraint, or by how much the best misses.

Rows are those of the decision batch (the first ``--batch``). A row meets the constraint when its accuracy
drop vs the dense reference (percentage points) is at most ``max_accuracy_drop`` and its p50 latency at
most ``max_latency_ms`` (each only when given). Without a match, the "best found" is the most useful near
miss: with an accuracy limit, the fastest row that keeps it (missing only latency) or else the most
accurate row; with a latency limit alone, the fastest row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Constraint:
    max_accuracy_drop: float | None = None  # percentage points
    max_latency_ms: float | None = None

    def meets(self, row: dict[str, Any]) -> bool:
        return self._acc_ok(row) and self._lat_ok(row)

    def _acc_ok(self, row: dict[str, Any]) -> bool:
        return (
            self.max_accuracy_drop is None
            or row["accuracy_drop_pts"] <= self.max_accuracy_drop + 1e-9
        )

    def _lat_ok(self, row: dict[str, Any]) -> bool:
        return self.max_latency_ms is None or row["latency_ms"] <= self.max_latency_ms

    def describe(self) -> str:
        parts = []
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop:g} pts")
        if self.max_latency_ms is not None:
            parts.append(f"p50 latency <= {self.max_latency_ms:g} ms")
        return " and ".join(parts)


@dataclass(frozen=True)
class Decision:
    """``row`` is the recommendation when ``ok``; otherwise the best near miss and ``message`` says why."""

    ok: bool
    row: dict[str, Any] | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "artifact": self.row and self.row["artifact"],
            "runtime": self.row and self.row["runtime"],
            "message": self.message,
        }


def _name(r: dict[str, Any]) -> str:
    return (
        f"{r['artifact']} on {r['runtime']} ({r['latency_ms']:.4g} ms p50 at batch {r['batch']}, "
        f"accuracy {r['accuracy']:.4f}, drop {r['accuracy_drop_pts']:+.2f} pts)"
    )


def recommend(rows: list[dict[str, Any]], constraint: Constraint, batch: int) -> Decision:
    """Mark ``meets`` on the rows of ``batch`` and pick the fastest that meets the constraint."""
    pool = [r for r in rows if r["batch"] == batch]
    if not pool:
        return Decision(False, None, f"nothing was measured at batch {batch}")
    for r in pool:
        r["meets"] = constraint.meets(r)
    ok = [r for r in pool if r["meets"]]
    if ok:
        best = min(ok, key=lambda r: (r["latency_ms"], -r["accuracy"]))
        return Decision(True, best, f"fastest meeting {constraint.describe()}: {_name(best)}")
    acc_ok = [r for r in pool if constraint._acc_ok(r)]
    if constraint.max_accuracy_drop is not None and acc_ok:
        near = min(acc_ok, key=lambda r: r["latency_ms"])
    elif constraint.max_accuracy_drop is not None:
        near = min(pool, key=lambda r: (r["accuracy_drop_pts"], r["latency_ms"]))
    else:
        near = min(pool, key=lambda r: r["latency_ms"])
    misses = []
    if not constraint._acc_ok(near):
        misses.append(
            f"accuracy by {near['accuracy_drop_pts'] - constraint.max_accuracy_drop:.2f} pts"
        )
    if not constraint._lat_ok(near):
        over = near["latency_ms"] - constraint.max_latency_ms
        misses.append(f"latency by {over:.4g} ms ({over / constraint.max_latency_ms:.0%})")
    return Decision(
        False,
        near,
        f"nothing meets {constraint.describe()}; the best found is {_name(near)}, "
        f"missing {' and '.join(misses)}",
    )
