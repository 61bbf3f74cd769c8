"""``sparsekit sanity DIR [--seeds N]``: retrain shuffled / reinitialized / inverted tickets vs the ticket."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, parse_csv, run


@app.command("sanity")
def sanity_cmd(
    run_dir: Annotated[str, typer.Argument(help="complete run directory written by prune")],
    seeds: Annotated[int, typer.Option(help="training seeds per variant (>= 2 for a verdict, 3 recommended)")] = 1,
    variants: Annotated[str, typer.Option(help="comma list of shuffle, reinit, invert")] = "shuffle,reinit,invert",
    data_dir: Annotated[str | None, typer.Option(help="directory holding the dataset files")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write the result as JSON to PATH (- for stdout)")] = None,
) -> None:
    """Sanity checks (Frankle et al. 2021) with the run's own training budget."""
    from sparsekit.sanity import run_sanity

    def go() -> dict:
        r = run_sanity(run_dir, seeds=seeds, data_dir=data_dir, variants=parse_csv(variants, "--variants"))
        emit_json(r, json_out)
        return r

    r = run(go)
    if json_out == "-":
        return
    o = r["original"]
    typer.echo(f"{r['method']} ticket at {r['sparsity']:.2%} sparsity, {r['seeds']} seed(s)")
    typer.echo(f"{'variant':<10}{'accuracy':>10}{'delta pp':>10}{'noise pp':>10}  drop")
    typer.echo(f"{'ticket':<10}{o['mean']:>10.4f}")
    for name, v in r["variants"].items():
        noise = "-" if v["noise"] is None else f"{100 * v['noise']:.2f}"
        drop = "?" if v["drop"] is None else ("yes" if v["drop"] else "no")
        typer.echo(f"{name:<10}{v['mean']:>10.4f}{100 * v['delta']:>+10.2f}{noise:>10}  {drop}")
    for name, why in r["skipped"].items():
        typer.echo(f"{name:<10}skipped: {why}")
    typer.echo(r["reading"])
