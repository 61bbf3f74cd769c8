"""Benchmark report: speed-ups vs the best dense runtime and vs the same runtime, notes, tables, plot.

Two speed-ups per row, both measured in the same bench run:
- ``speedup_vs_best_dense``: the fastest dense runtime's p50 (same run, batch and threads) / this row's
  p50 -- the number a deployment decision needs, and what notes, tables, plots and ``check`` use;
- ``speedup_vs_same_runtime_dense``: this runtime's own dense p50 / this row's p50.
The best dense runtime is chosen among EVERY dense row of the run (torch, ORT, OpenVINO, MNN dense,
sparse-cpu's dense...); ``best_dense_summary`` lists, per run, batch and threads, which one it was
and every dense runtime's p50 (the report's ``best_dense``). Each comes with a 95 % bootstrap interval (``stats.ratio_interval``); a ratio is called faster or
slower only when its whole interval is above or below 1.0. ``speedup_vs_dense`` is a DEPRECATED alias
of ``speedup_vs_same_runtime_dense`` (its meaning before report schema 2), kept for one release.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from sparsekit.bench.stats import FASTER, SAME, SLOWER, ratio_interval, verdict
from sparsekit.errors import UsageError

#: a structured model counts as "channels removed" only above this MAC ratio vs dense
MAC_RATIO_MIN = 1.01
#: the widest default table (characters); `--wide` shows every column
TABLE_WIDTH = 120

REPORT_KEYS = (
    "model", "variant", "format", "runtime", "batch", "threads", "latency_ms", "block_medians_ms", "processes",
    "throughput_per_s", "peak_rss_bytes", "runtime_baseline_rss_bytes", "model_memory_bytes", "file_bytes",
    "macs", "accuracy", "sparsity", "best_dense_runtime", "speedup_vs_best_dense", "speedup_vs_best_dense_ci",
    "verdict_vs_best_dense", "speedup_vs_same_runtime_dense", "speedup_vs_same_runtime_dense_ci",
    "verdict_vs_same_runtime_dense", "speedup_vs_dense", "mac_ratio_vs_dense", "size_ratio_vs_dense", "note",
)


def _blocks(r: dict[str, Any]) -> list[list[float]]:
    """Block medians per process; a row without them (an old report) falls back to its p50."""
    return r.get("block_medians_ms") or [[r["latency_ms"]["p50"]]]


def _ratio(ref: dict[str, Any], row: dict[str, Any], seed: int) -> tuple[float, list[float]]:
    if ref is row:
        return 1.0, [1.0, 1.0]
    point, low, high = ratio_interval(_blocks(ref), _blocks(row), seed=seed)
    return point, [low, high]


def finalize_rows(rows: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Add both speed-ups (+ intervals, verdicts), ratios and a note to every row (in place, returned)."""
    group = lambda r: (r["pair_key"], r["batch"], r["threads"])  # noqa: E731
    dense_rows = [r for r in rows if r["variant"] == "dense"]
    same = {(*group(r), r["runtime"]): r for r in dense_rows}
    for r in rows:  # torch-csr's dense is torch-cpu's when both were benched
        if r.get("dense_runtime") and (*group(r), r["runtime"]) not in same:
            alias = same.get((*group(r), r["dense_runtime"]))
            if alias is not None:
                same[(*group(r), r["runtime"])] = alias
    best: dict[tuple, dict[str, Any]] = {}
    for r in dense_rows:
        k = group(r)
        if k not in best or r["latency_ms"]["p50"] < best[k]["latency_ms"]["p50"]:
            best[k] = r
    runtimes_per_group: dict[tuple, set[str]] = {}
    for r in rows:
        runtimes_per_group.setdefault(group(r), set()).add(r["runtime"])
    for r in rows:
        b, s = best.get(group(r)), same.get((*group(r), r["runtime"]))
        r["best_dense_runtime"] = b["runtime"] if b else None
        r["dense_runtimes_compared"] = len({d["runtime"] for d in dense_rows if group(d) == group(r)})
        for key, ref in (("best_dense", b), ("same_runtime_dense", s)):
            if ref is None:
                r[f"speedup_vs_{key}"] = r[f"speedup_vs_{key}_ci"] = r[f"verdict_vs_{key}"] = None
                continue
            point, ci = _ratio(ref, r, seed)
            r[f"speedup_vs_{key}"], r[f"speedup_vs_{key}_ci"] = point, ci
            r[f"verdict_vs_{key}"] = verdict(*ci) if ref is not r else SAME
        r["speedup_vs_dense"] = r["speedup_vs_same_runtime_dense"]  # deprecated alias (schema 1 meaning)
        ref = s or b
        r["size_ratio_vs_dense"] = (r["file_bytes"] / ref["file_bytes"]
                                    if ref and r.get("file_bytes") and ref.get("file_bytes") else None)
        r["mac_ratio_vs_dense"] = (ref["macs"] / r["macs"] if ref and r.get("macs") and ref.get("macs") else None)
        r["note"], r["why"] = _note(r, b is r, len(runtimes_per_group[group(r)]))
    return rows


def best_dense_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (run, batch, threads): the fastest dense runtime and every dense runtime's p50 (ms).

    Example:
        >>> best_dense_summary(report["rows"])[0]["runtime"]  # doctest: +SKIP
        'openvino-cpu'
    """
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["variant"] != "dense":
            continue
        k = (r["pair_key"], r["batch"], r["threads"])
        entry = out.setdefault(k, {"model": _model(r), "pair_key": r["pair_key"], "batch": r["batch"],
                                   "threads": r["threads"], "runtime": None, "p50_ms": None, "dense_p50_ms": {}})
        p50 = r["latency_ms"]["p50"]
        entry["dense_p50_ms"][r["runtime"]] = p50
        if entry["p50_ms"] is None or p50 < entry["p50_ms"]:
            entry["runtime"], entry["p50_ms"] = r["runtime"], p50
    return [out[k] for k in sorted(out, key=lambda k: (str(k[0]), k[1], k[2]))]


def _note(r: dict[str, Any], is_best: bool, n_runtimes: int) -> tuple[str, str | None]:
    """(short note for the table, longer explanation or None); true to the measured verdict."""
    if r["speedup_vs_best_dense"] is None:
        return "no dense measured", "no dense reference was measured in this run (bench the run directory)"
    v, best = r["verdict_vs_best_dense"], r["best_dense_runtime"]
    alone = r["dense_runtimes_compared"] == 1
    vs = "its own dense (1 runtime)" if alone and n_runtimes == 1 else f"{best} dense"
    if r["variant"] == "dense":
        if is_best:
            return ("dense reference" if alone else "fastest dense"), None
        return (f"slower than {best} dense" if v == SLOWER else f"~ {best} dense"), None
    if v == FASTER:
        short = f"faster than {vs}"
    elif v == SLOWER:
        short = f"slower than {vs}"
    else:
        short = "no measurable difference"
    why = None
    macs = r.get("mac_ratio_vs_dense")
    kernels = r.get("runtime_sparse") or ("engine" if r.get("runtime") == "sparse-cpu" else "masked")
    if r["format"] == "masked" and kernels == "masked":
        why = "masked-dense runs dense kernels: the zeros cost as much as the weights"
        if v == FASTER:
            why += "; this difference is timing noise or cache effects, not sparsity"
    elif r["format"] == "masked" and kernels == "mnn" and v != FASTER:
        why = ("MNN's converter gives sparse kernels only to the layers where it predicts a gain; "
               "the others run dense")
    elif r["format"] == "csr" and v != FASTER:
        why = "CSR pays only for Linear layers at >= ~90% sparsity, and only against a slow dense runtime"
    elif r["format"] == "structured":
        if macs is not None and macs < MAC_RATIO_MIN:
            why = "no channels were removed: same MACs as dense, any difference is noise"
        elif v != FASTER and macs is not None:
            why = (f"{macs:.2f}x fewer MACs did not turn into time here (fixed per-op costs, widths "
                   "that are not multiples of 8)")
    if alone and n_runtimes == 1:
        why = (why + "; " if why else "") + "only one runtime benched: a faster dense runtime may exist"
    return short, why


def _fmt(v: Any, spec: str, scale: float = 1.0, none: str = "-") -> str:
    return none if v is None else format(v * scale, spec)


def _speedup_cell(r: dict[str, Any], key: str) -> str:
    s, ci = r.get(f"speedup_vs_{key}"), r.get(f"speedup_vs_{key}_ci")
    if s is None:
        return "-"
    return f"{s:.2f}x" if not ci or ci[0] == ci[1] else f"{s:.2f}x ({ci[0]:.2f}-{ci[1]:.2f})"


def _variant(r: dict[str, Any]) -> str:
    return "dense" if r["variant"] == "dense" else r["format"]


def _model(r: dict[str, Any]) -> str:
    label = r["model"]
    for suffix in ("/ticket-structured", "/ticket", "/dense"):
        if label.endswith(suffix):
            return label[: -len(suffix)]
    return label


COLUMNS: dict[str, tuple[Any, bool]] = {
    # header: (cell function, shown by default)
    "model": (_model, True),
    "variant": (_variant, True),
    "runtime": (lambda r: r["runtime"], True),
    "batch": (lambda r: str(r["batch"]), True),
    "p50 ms": (lambda r: _fmt(r["latency_ms"]["p50"], ".3f"), True),
    "p90 ms": (lambda r: _fmt(r["latency_ms"]["p90"], ".3f"), False),
    "p99 ms": (lambda r: _fmt(r["latency_ms"]["p99"], ".3f"), False),
    "items/s": (lambda r: _fmt(r["throughput_per_s"], ".0f"), False),
    "vs best dense (95% CI)": (lambda r: _speedup_cell(r, "best_dense"), True),
    "vs same-rt dense (95% CI)": (lambda r: _speedup_cell(r, "same_runtime_dense"), False),
    "model MB": (lambda r: _fmt(r.get("model_memory_bytes"), ".1f", 1 / 2**20), True),
    "peak RSS MB": (lambda r: _fmt(r.get("peak_rss_bytes"), ".1f", 1 / 2**20), False),
    "size KB": (lambda r: _fmt(r.get("file_bytes"), ".0f", 1 / 1024), False),
    "MMACs": (lambda r: _fmt(r.get("macs"), ".2f", 1e-6), False),
    "acc %": (lambda r: _fmt(r.get("accuracy"), ".1f", 100), True),
    "sparsity": (lambda r: _fmt(r.get("sparsity"), ".1%"), False),
    "size ratio": (lambda r: _fmt(r.get("size_ratio_vs_dense"), ".3f"), False),
    "note": (lambda r: r.get("note") or "", True),
}


def table_rows(report: dict[str, Any], wide: bool = False, fit: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and cells; ``fit`` (terminal, not --wide) shortens long model names to TABLE_WIDTH."""
    head = [h for h, (_, default) in COLUMNS.items() if wide or default]
    body = [[COLUMNS[h][0](r) for h in head] for r in report["rows"]]
    if fit and not wide:  # keep the default table within TABLE_WIDTH: shorten long model names first
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
        excess = sum(widths) + 2 * (len(head) - 1) - TABLE_WIDTH
        m = head.index("model")
        if excess > 0 and widths[m] > 12:
            keep = max(12, widths[m] - excess)
            for row in body:
                if len(row[m]) > keep:
                    row[m] = row[m][: keep - 1] + "~"
    return head, body


def footnotes(report: dict[str, Any]) -> list[str]:
    """Why-lines for ticket rows (deduplicated) and what the speed-ups mean."""
    seen: dict[str, list[str]] = {}
    for r in report["rows"]:
        if r.get("why"):
            seen.setdefault(r["why"], []).append(f"{_model(r)} {_variant(r)} on {r['runtime']}")
    lines = ["vs best dense: the fastest dense runtime of the same run, batch and threads (p50 ratio, "
             "95% bootstrap CI over processes and rounds); faster/slower only when the CI excludes 1.0."]
    best = report.get("best_dense") or best_dense_summary(report["rows"])
    multi = [b for b in best if len(b["dense_p50_ms"]) > 1]
    if multi:
        lines.append("fastest dense: " + "; ".join(
            f"{b['model']} batch {b['batch']}: {b['runtime']} of {len(b['dense_p50_ms'])}" for b in multi))
    for why, where in seen.items():
        rows = sorted(set(where))
        lines.append(f"{', '.join(rows[:3])}{' ...' if len(rows) > 3 else ''}: {why}")
    return lines


def _render(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body]
    return lines


def terminal_table(report: dict[str, Any], wide: bool = False) -> str:
    head, body = table_rows(report, wide, fit=True)
    lines = _render(head, body)
    notes = footnotes(report)
    wrap = (lambda t: [t]) if wide else (lambda t: textwrap.wrap(t, TABLE_WIDTH, subsequent_indent="  "))
    lines += [""] + [w for n in notes for w in wrap("* " + n)]
    for s in report.get("skipped", []):
        lines += wrap(f"skipped {s['model']} on {s['runtime']}: {s['reason']}")
    return "\n".join(lines)


def markdown(report: dict[str, Any], wide: bool = False) -> str:
    env = report["environment"]
    cfg = report["config"]
    head, body = table_rows(report, wide)
    v = env["versions"]
    out = [
        f"Measured {env['date_utc']} on {env['cpu']} ({env['cpu_usable']} usable cores, "
        f"{'/'.join(env.get('cpu_flags') or []) or 'no SIMD flags read'}; load average at start "
        f"{env.get('load_average_at_start')}), sparsekit {v.get('sparsekit')} at commit {env.get('git_commit')}, "
        f"torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}"
        + "".join(f", {k} {v[k]}" for k in ("openvino", "mnn") if v.get(k))
        + f"; {cfg['threads']} thread(s); "
        f"{cfg['repeats']} fresh timing processes per (run, runtime), dense and ticket interleaved in "
        f"shuffled rounds, >= {cfg['min_time']} s timed per variant, batch and process; memory measured "
        "in a separate process per variant.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    out.append("")
    out += [f"- {n}" for n in footnotes(report)]
    out += [f"- skipped {s['model']} on {s['runtime']}: {s['reason']}" for s in report.get("skipped", [])]
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> None:
    """PNG: speed-up vs the best dense runtime (with its CI) and accuracy, vs sparsity."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax_sp, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[tuple[str, int, str], list[tuple[float, float, list[float], float | None]]] = {}
    for r in report["rows"]:
        if r["sparsity"] is None or r.get("speedup_vs_best_dense") is None:
            continue
        key = (r["runtime"], r["batch"], _variant(r))
        series.setdefault(key, []).append((r["sparsity"], r["speedup_vs_best_dense"],
                                           r.get("speedup_vs_best_dense_ci") or [r["speedup_vs_best_dense"]] * 2,
                                           r["accuracy"]))
    for (rt, b, fmt), pts in sorted(series.items()):
        pts.sort(key=lambda p: p[0])
        xs = [p[0] * 100 for p in pts]
        ys = [p[1] for p in pts]
        err = [[y - p[2][0] for y, p in zip(ys, pts, strict=True)], [p[2][1] - y for y, p in zip(ys, pts, strict=True)]]
        ax_sp.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{rt} b={b} {fmt}")
        if b == min(k[1] for k in series):
            ax_acc.plot(xs, [p[3] if p[3] is not None else float("nan") for p in pts], marker="o", label=f"{rt} {fmt}")
    ax_sp.axhline(1.0, color="k", lw=0.8)
    ax_sp.set(xlabel="sparsity (%)", ylabel="speed-up vs best dense runtime", title="speed-up (95% CI)", yscale="log")
    ax_acc.set(xlabel="sparsity (%)", ylabel="test accuracy", title="accuracy vs sparsity")
    for ax in (ax_sp, ax_acc):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(str(path), dpi=110)
    except OSError as exc:
        raise UsageError(f"cannot write --plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def write_outputs(report: dict[str, Any], markdown_path: str | None, plot_path: str | None,
                  wide: bool = False) -> None:
    """Write the optional markdown table and plot (atomically for the markdown)."""
    from sparsekit._io import atomic_write

    if markdown_path:
        text = markdown(report, wide)
        try:
            atomic_write(Path(markdown_path), lambda p: p.write_text(text))
        except OSError as exc:
            raise UsageError(f"cannot write --markdown {markdown_path}: {exc.strerror or exc}") from None
    if plot_path:
        plot(report, plot_path)


def check_writable(path: str | None, what: str) -> None:
    """Fail before a long benchmark if an output file cannot be written."""
    import os

    if not path or path == "-":
        return
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK) or Path(path).is_dir():
        raise UsageError(f"cannot write {what} {path}: directory {parent} is missing or not writable")
