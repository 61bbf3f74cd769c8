"""The accuracy-vs-latency frontier over measured (artifact, runtime) rows.

A row is Pareto-optimal when no other row of the same batch size and thread count is at least as
accurate AND at least as fast, and strictly better in one of the two. Latency is the measured p50
(``latency_ms``), accuracy the artifact's measured test accuracy on that runtime. ``pareto`` marks the
frontier across every runtime (the deployment decision), ``pareto_in_runtime`` within the row's runtime.
"""

from __future__ import annotations

from typing import Any


def _group(r: dict[str, Any]) -> tuple:
    return (r["batch"], r["threads"])


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when ``a`` is at least as fast and as accurate as ``b`` and strictly better in one."""
    fa, fb = a["latency_ms"], b["latency_ms"]
    ca, cb = a["accuracy"], b["accuracy"]
    return fa <= fb and ca >= cb and (fa < fb or ca > cb)


def pareto_flags(rows: list[dict[str, Any]]) -> list[bool]:
    """For each row: is it on the frontier of the rows given (one batch/threads group)?"""
    return [
        not any(dominates(o, r) for j, o in enumerate(rows) if j != i) for i, r in enumerate(rows)
    ]


def mark_frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``pareto`` and ``pareto_in_runtime`` on every row (in place; rows returned sorted by latency)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_group(r), []).append(r)
    for members in groups.values():
        for r, flag in zip(members, pareto_flags(members), strict=True):
            r["pareto"] = flag
        by_rt: dict[str, list[dict[str, Any]]] = {}
        for r in members:
            by_rt.setdefault(r["runtime"], []).append(r)
        for rt_rows in by_rt.values():
            for r, flag in zip(rt_rows, pareto_flags(rt_rows), strict=True):
                r["pareto_in_runtime"] = flag
    return sorted(rows, key=lambda r: (_group(r), r["latency_ms"]))


def frontier(rows: list[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """The Pareto-optimal rows at ``batch``, fastest first."""
    return sorted(
        (r for r in rows if r["batch"] == batch and r.get("pareto")), key=lambda r: r["latency_ms"]
    )


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows (``*`` marks the cross-runtime frontier)."""
    head = [
        "",
        "artifact",
        "runtime",
        "batch",
        "p50 ms",
        "95% CI ms",
        "speed-up vs best dense",
        "accuracy",
        "drop pts",
        "meets",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ci = r.get("latency_ci_ms") or [None, None]
        sp = r.get("speedup_vs_best_dense")
        cells = [
            "*" if r.get("pareto") else "",
            r["artifact"],
            r["runtime"],
            str(r["batch"]),
            f"{r['latency_ms']:.4g}",
            f"{ci[0]:.4g}-{ci[1]:.4g}" if ci[0] is not None else "-",
            f"{sp:.2f}x" if sp is not None else "-",
            f"{r['accuracy']:.4f}",
            f"{r['accuracy_drop_pts']:+.2f}" if r.get("accuracy_drop_pts") is not None else "-",
            {True: "yes", False: "no"}.get(r.get("meets"), "-"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
