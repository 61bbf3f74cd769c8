"""``sparsekit info DIR``: per-layer table (name, shape, kept, sparsity) and totals."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run


def layer_table(run_dir: str) -> dict:
    """Counts from the saved fine-tuned weights (exact zeros) and the mask."""
    from sparsekit.ticket import Ticket

    ticket = Ticket.load(run_dir)
    mask = ticket.mask()
    state = ticket.state("final")
    rows = []
    for name, m in mask.items():
        w = state[name]
        rows.append({
            "name": name,
            "shape": list(w.shape),
            "numel": w.numel(),
            "kept": int(m.sum()),
            "nonzero": int((w != 0).sum()),
            "sparsity": 1 - int(m.sum()) / w.numel(),
        })
    total = sum(r["numel"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    zeros = sum(r["numel"] - r["nonzero"] for r in rows)
    record = ticket.record
    return {
        "run": str(run_dir),
        "model": record.model_name,
        "data": record.data_name,
        "method": record.method_name,
        "layers": rows,
        "total": {"numel": total, "kept": kept, "sparsity": 1 - kept / total, "zero_fraction": zeros / total},
        "metrics": record.metrics,
        "mask_sha256": record.mask_sha256,
    }


@app.command("info")
def info_cmd(
    run_dir: Annotated[str, typer.Argument(help="run directory")],
    json_out: Annotated[str | None, typer.Option("--json", help="write JSON to PATH (- for stdout)")] = None,
) -> None:
    """Show a ticket's per-layer sparsity and totals."""

    def go() -> dict:
        t = layer_table(run_dir)
        emit_json(t, json_out)
        return t

    t = run(go)
    if json_out == "-":
        return
    w = max(len(r["name"]) for r in t["layers"]) + 2
    typer.echo(f"{t['model']} / {t['data']} / {t['method']}  ({t['run']})")
    typer.echo(f"{'layer':<{w}}{'shape':<20}{'kept':>10}{'total':>10}{'sparsity':>11}")
    for r in t["layers"]:
        shape = "x".join(str(s) for s in r["shape"])
        typer.echo(f"{r['name']:<{w}}{shape:<20}{r['kept']:>10}{r['numel']:>10}{r['sparsity']:>10.2%}")
    tot = t["total"]
    typer.echo(f"{'total':<{w}}{'':<20}{tot['kept']:>10}{tot['numel']:>10}{tot['sparsity']:>10.2%}")
    m = t["metrics"]
    if "accuracy" in m:
        dense = f", dense {m['dense_accuracy']:.4f}" if m.get("dense_accuracy") is not None else ""
        typer.echo(f"accuracy {m['accuracy']:.4f}{dense}")
