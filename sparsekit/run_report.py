"""Compare runs: a table of tickets and PNG plots (accuracy vs sparsity, per-layer density)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsekit._io import atomic_write, write_json
from sparsekit.errors import UsageError
from sparsekit.ticket import Ticket

COLUMNS = ("run", "model", "data", "method", "sparsity", "accuracy", "dense_accuracy",
           "accuracy_before_finetune", "ticket_total_s")


def collect(run_dirs: list[str]) -> list[dict[str, Any]]:
    """One row per complete run directory."""
    if not run_dirs:
        raise UsageError("give at least one run directory")
    rows = []
    for d in run_dirs:
        r = Ticket.load(d).record
        rows.append({
            "run": str(d),
            "model": r.model_name,
            "data": r.data_name,
            "method": r.method_name,
            "objective": r.method_options.get("objective"),
            "seed": r.seed,
            "sparsity": r.sparsity,
            "accuracy": r.metrics.get("accuracy"),
            "dense_accuracy": r.metrics.get("dense_accuracy"),
            "accuracy_before_finetune": r.metrics.get("accuracy_before_finetune"),
            "ticket_total_s": r.timings.get("ticket_total_s"),
            "mask_sha256": r.mask_sha256,
            "layers": r.layers,
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_sparsity(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = sorted({(r["method"], r["objective"]) for r in rows}, key=str)
    for method, objective in labels:
        pts = sorted((1 - r["sparsity"], r["accuracy"]) for r in rows
                     if (r["method"], r["objective"]) == (method, objective))
        ax.plot([100 * p[0] for p in pts], [100 * p[1] for p in pts], "o-",
                label=method + (f" ({objective})" if objective else ""))
    dense = [r["dense_accuracy"] for r in rows if r["dense_accuracy"] is not None]
    if dense:
        ax.axhline(100 * max(dense), color="gray", ls="--", label="dense (same budget)")
    ax.set_xscale("log")
    ax.set_xlabel("density % (log)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def plot_layer_density(row: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = row["layers"]
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(layers)), 3.5))
    ax.bar(range(len(layers)), [100 * (1 - ly["sparsity"]) for ly in layers])
    ax.set_xticks(range(len(layers)), [ly["name"] for ly in layers], rotation=90, fontsize=6)
    ax.set_ylabel("density %")
    ax.set_title(f"{row['method']} {row['model']} at {row['sparsity']:.2%} sparsity", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def write_report(run_dirs: list[str], out: Path | None) -> dict[str, Any]:
    """Collect rows; with ``out`` also write report.md, report.json and the PNG plots there."""
    rows = collect(run_dirs)
    result: dict[str, Any] = {"rows": [{k: v for k, v in r.items() if k != "layers"} for r in rows], "files": []}
    if out is not None:
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
        md = out / "report.md"
        atomic_write(md, lambda p: p.write_text(markdown_table(rows)))
        write_json(out / "report.json", result["rows"])
        plot_accuracy_vs_sparsity(rows, out / "accuracy_vs_sparsity.png")
        files = [md, out / "report.json", out / "accuracy_vs_sparsity.png"]
        for i, r in enumerate(rows):
            p = out / f"layers_{i:02d}_{Path(r['run']).name}.png"
            plot_layer_density(r, p)
            files.append(p)
        result["files"] = [str(f) for f in files]
    result["markdown"] = markdown_table(rows)
    return result
