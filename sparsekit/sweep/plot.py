"""The frontier plot: accuracy (y) vs speed-up over the best dense runtime (x), one marker per runtime/form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsekit.sweep.recommend import Constraint, Decision

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: candidate ticks of the log speed-up axis
SPEEDUP_TICKS = (0.1, 0.2, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 16, 32)


def plot(
    rows: list[dict[str, Any]],
    path: str | Path,
    batch: int,
    constraint: Constraint,
    decision: Decision | None = None,
) -> None:
    """Write the PNG (atomically) for the rows of ``batch``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsekit._io import atomic_write

    pts = [r for r in rows if r["batch"] == batch and r.get("speedup_vs_best_dense")]
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    _points(ax, pts)
    _frontier(ax, pts)
    _constraints(ax, pts, constraint)
    _recommended(ax, decision)
    _speedup_axis(ax, pts)
    ax.set_xlabel("speed-up vs the best dense runtime (p50, measured)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"accuracy vs measured speed-up, batch {batch}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def _points(ax: Any, pts: list[dict[str, Any]]) -> None:
    """One marker shape per (runtime, form)."""
    kinds = sorted({(r["runtime"], r["form"]) for r in pts})
    for i, (rt, form) in enumerate(kinds):
        sel = [r for r in pts if (r["runtime"], r["form"]) == (rt, form)]
        ax.scatter(
            [r["speedup_vs_best_dense"] for r in sel],
            [r["accuracy"] for r in sel],
            marker=MARKERS[i % len(MARKERS)],
            s=40,
            label=f"{rt} / {form}",
            zorder=3,
        )


def _frontier(ax: Any, pts: list[dict[str, Any]]) -> None:
    """The Pareto frontier as a step line (nothing when no row is on it)."""
    front = sorted((r for r in pts if r.get("pareto")), key=lambda r: r["speedup_vs_best_dense"])
    if front:
        ax.step(
            [r["speedup_vs_best_dense"] for r in front],
            [r["accuracy"] for r in front],
            where="pre",
            color="black",
            lw=1,
            alpha=0.6,
            label="frontier",
            zorder=2,
        )


def _constraints(ax: Any, pts: list[dict[str, Any]], constraint: Constraint) -> None:
    """The constraint's limits, relative to the dense rows: an accuracy floor, a speed-up floor."""
    dense = [r for r in pts if r["form"] == "dense"]
    if constraint.max_accuracy_drop is not None and dense:
        y = max(r["accuracy"] for r in dense) - constraint.max_accuracy_drop / 100.0
        ax.axhline(
            y, color="red", ls="--", lw=1, label=f"max drop {constraint.max_accuracy_drop:g} pts"
        )
    if constraint.max_latency_ms is not None and dense:
        best_dense = min(r["latency_ms"] for r in dense)
        ax.axvline(
            best_dense / constraint.max_latency_ms,
            color="red",
            ls=":",
            lw=1,
            label=f"max latency {constraint.max_latency_ms:g} ms",
        )


def _recommended(ax: Any, decision: Decision | None) -> None:
    """A red ring around the recommended row (when there is one with a speed-up)."""
    if decision is not None and decision.ok and decision.row.get("speedup_vs_best_dense"):
        ax.scatter(
            [decision.row["speedup_vs_best_dense"]],
            [decision.row["accuracy"]],
            s=220,
            facecolors="none",
            edgecolors="red",
            lw=1.5,
            label="recommended",
            zorder=4,
        )


def _speedup_axis(ax: Any, pts: list[dict[str, Any]]) -> None:
    """Log x axis with readable "2x" ticks (matplotlib's minor labels overlap)."""
    ax.set_xscale("log")
    xs = [r["speedup_vs_best_dense"] for r in pts]
    if xs:
        from matplotlib.ticker import FixedLocator, NullLocator

        lo, hi = min(xs), max(xs)
        ticks = [t for t in SPEEDUP_TICKS if lo / 1.5 <= t <= hi * 1.5]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}x" for t in ticks])
