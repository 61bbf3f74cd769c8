"""Benchmark report: ratios vs the same-run dense row, honest notes, tables and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsekit.errors import UsageError

#: a ticket counts as "faster" only above this speed-up (timings on shared CPUs wobble by ~5-10 %)
FASTER_MARGIN = 1.05

REPORT_KEYS = (
    "model", "variant", "format", "runtime", "batch", "threads", "latency_ms", "throughput_per_s",
    "peak_rss_bytes", "file_bytes", "macs", "accuracy", "sparsity", "speedup_vs_dense",
    "size_ratio_vs_dense", "note",
)


def finalize_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add speedup_vs_dense, size_ratio_vs_dense and a note to every row (in place, returned)."""
    dense = {(r["pair_key"], r["runtime"], r["batch"], r["threads"]): r for r in rows if r["variant"] == "dense"}
    for r in rows:
        d = dense.get((r["pair_key"], r["runtime"], r["batch"], r["threads"]))
        if d is None:
            r["speedup_vs_dense"] = r["size_ratio_vs_dense"] = None
            r["note"] = "no dense reference measured in this run (bench the run directory, or add its dense ONNX)"
            continue
        r["speedup_vs_dense"] = d["latency_ms"]["p50"] / r["latency_ms"]["p50"] if r["latency_ms"]["p50"] else None
        r["size_ratio_vs_dense"] = r["file_bytes"] / d["file_bytes"] if r.get("file_bytes") and d.get("file_bytes") else None
        r["note"] = _note(r)
    return rows


def _note(r: dict[str, Any]) -> str:
    if r["variant"] == "dense":
        return "dense reference"
    s = r["speedup_vs_dense"]
    faster = s is not None and s >= FASTER_MARGIN
    if r["format"] == "masked":
        if faster:
            return f"{s:.2f}x vs dense although masked-dense runs dense kernels: likely timing noise"
        return "not faster: masked-dense runs at dense speed; use --format structured or torch-csr"
    if r["format"] == "csr" and not faster:
        return "not faster: CSR pays only for Linear layers at >= ~90% sparsity on CPU"
    if r["format"] == "structured" and not faster:
        return "not faster: too few whole channels were free to remove (see sparsekit convert --format structured)"
    return f"{s:.2f}x faster than dense"


def _fmt(v: Any, spec: str, scale: float = 1.0, none: str = "-") -> str:
    return none if v is None else format(v * scale, spec)


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "variant", "format", "runtime", "batch", "p50 ms", "p90 ms", "p99 ms", "items/s",
            "peak RSS MB", "size KB", "MMACs", "accuracy", "sparsity", "speedup", "size ratio", "note"]
    body = []
    for r in report["rows"]:
        lat = r["latency_ms"]
        body.append([
            r["model"], r["variant"], r["format"], r["runtime"], str(r["batch"]),
            _fmt(lat["p50"], ".3f"), _fmt(lat["p90"], ".3f"), _fmt(lat["p99"], ".3f"),
            _fmt(r["throughput_per_s"], ".0f"), _fmt(r["peak_rss_bytes"], ".1f", 1 / 2**20),
            _fmt(r["file_bytes"], ".1f", 1 / 1024), _fmt(r["macs"], ".2f", 1e-6),
            _fmt(r["accuracy"], ".4f"), _fmt(r["sparsity"], ".1%"),
            _fmt(r["speedup_vs_dense"], ".2f") + ("x" if r["speedup_vs_dense"] else ""),
            _fmt(r["size_ratio_vs_dense"], ".3f"), r.get("note") or "",
        ])
    return head, body


def terminal_table(report: dict[str, Any]) -> str:
    head, body = table_rows(report)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body]
    lines += [f"skipped {s['model']} on {s['runtime']}: {s['reason']}" for s in report.get("skipped", [])]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    cfg = report["config"]
    head, body = table_rows(report)
    out = [
        f"Measured {env['date_utc']} on {env['cpu']} ({env['cpu_usable']} usable cores), "
        f"torch {env['versions']['torch']}, onnxruntime {env['versions']['onnxruntime']}; "
        f"{cfg['threads']} thread(s), warm-up {cfg['warmup']}, {cfg['iters']} timed calls per batch size; "
        "each (model, runtime) in a fresh process.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    if report.get("skipped"):
        out.append("")
        out += [f"- skipped {s['model']} on {s['runtime']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> None:
    """PNG: p50 latency and accuracy vs sparsity, one line per (runtime, batch, format)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[tuple[str, int, str], list[tuple[float, float, float | None]]] = {}
    for r in report["rows"]:
        if r["sparsity"] is None:
            continue
        key = (r["runtime"], r["batch"], "dense" if r["variant"] == "dense" else r["format"])
        series.setdefault(key, []).append((r["sparsity"], r["latency_ms"]["p50"], r["accuracy"]))
    for (rt, b, fmt), pts in sorted(series.items()):
        pts.sort()
        xs = [p[0] * 100 for p in pts]
        ax_lat.plot(xs, [p[1] for p in pts], marker="o", label=f"{rt} b={b} {fmt}")
        if b == min(k[1] for k in series):
            ax_acc.plot(xs, [p[2] if p[2] is not None else float("nan") for p in pts], marker="o", label=f"{rt} {fmt}")
    ax_lat.set(xlabel="sparsity (%)", ylabel="p50 latency (ms)", title="latency vs sparsity", yscale="log")
    ax_acc.set(xlabel="sparsity (%)", ylabel="test accuracy", title="accuracy vs sparsity")
    for ax in (ax_lat, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(str(path), dpi=110)
    except OSError as exc:
        raise UsageError(f"cannot write --plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def write_outputs(report: dict[str, Any], markdown_path: str | None, plot_path: str | None) -> None:
    """Write the optional markdown table and plot (atomically for the markdown)."""
    from sparsekit._io import atomic_write

    if markdown_path:
        text = markdown(report)
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
