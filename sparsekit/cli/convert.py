"""``sparsekit convert DIR --format structured|csr|nm|block``: convert and save under DIR/converted/."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run


@app.command("convert")
def convert_cmd(
    run_dir: Annotated[str, typer.Argument(help="run directory")],
    fmt: Annotated[str, typer.Option("--format", help="structured, csr, nm or block")],
    n: Annotated[int, typer.Option("--n", help="N of N:M")] = 2,
    m: Annotated[int, typer.Option("--m", help="M of N:M")] = 4,
    block: Annotated[str, typer.Option("--block", help="block size HxW")] = "4x4",
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="where the run's dataset is")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write JSON to PATH (- for stdout)")] = None,
) -> None:
    """Convert a ticket to a sparse format, verified equal to masked-dense."""
    from sparsekit.formats import FORMATS, convert_run, parse_block

    def go() -> dict:
        FORMATS.get(fmt)  # unknown format -> exit 2 with "did you mean"
        opts = {"nm": {"n": n, "m": m}, "block": {"block": parse_block(block)}}.get(fmt, {})
        res = convert_run(run_dir, fmt, data_dir=data_dir, **opts)
        emit_json(res, json_out)
        return res

    res = run(go)
    if json_out == "-":
        return
    rep = res["report"]
    typer.echo(f"{fmt}: saved {res['path']} (max |diff| vs masked-dense {rep['max_abs_diff']:.2e} <= atol {rep['atol']:g})")
    if fmt == "structured":
        for row in rep["layers"]:
            if row["out_after"] != row["out_before"] or row["in_after"] != row["in_before"]:
                typer.echo(f"  {row['name']:<32} out {row['out_before']:>5} -> {row['out_after']:<5} "
                           f"in {row['in_before']:>5} -> {row['in_after']}")
        if rep.get("bn_channels_repaired"):
            typer.echo(f"note: set stale BatchNorm running means of {rep['bn_channels_repaired']} dead channels to 0 "
                       f"(their input is identically 0); logits moved by up to {rep['bn_repair_max_abs_change']:.3g} "
                       "vs the ticket as saved")
        typer.echo(f"channels removed {rep['channels_removed']}; MACs {rep['macs_before']:,} -> {rep['macs_after']:,} "
                   f"({rep['mac_ratio']:.2f}x fewer); params {rep['params_before']:,} -> {rep['params_after']:,}")
    elif fmt == "csr":
        for row in rep["layers"]:
            typer.echo(f"  {row['name']:<32} {row['format']:<6} sparsity {row['sparsity']:.1%} "
                       f"{row['dense_bytes']:,} -> {row['storage_bytes']:,} bytes")
        typer.echo(f"storage {rep['dense_bytes']:,} -> {rep['storage_bytes']:,} bytes; {rep['note']}")
    else:
        typer.echo(f"projection changed {rep['weights_changed']:,} non-zero weights; sparsity "
                   f"{rep['sparsity_before']:.2%} -> {rep['sparsity_after']:.2%}; pattern valid")
        if rep.get("note"):
            typer.echo(f"note: {rep['note']}")
