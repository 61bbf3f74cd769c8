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
    finetune_epochs: Annotated[int, typer.Option(
        "--finetune-epochs", help="nm/block: fine-tune the projection N epochs with its mask held (saved)")] = 0,
    json_out: Annotated[str | None, typer.Option("--json", help="write JSON to PATH (- for stdout)")] = None,
) -> None:
    """Convert a ticket to a sparse format, verified equal to masked-dense."""
    from sparsekit.formats import FORMATS, convert_run, parse_block

    def go() -> dict:
        FORMATS.get(fmt)  # unknown format -> exit 2 with "did you mean"
        opts = {"nm": {"n": n, "m": m}, "block": {"block": parse_block(block)}}.get(fmt, {})
        res = convert_run(run_dir, fmt, data_dir=data_dir, finetune_epochs=finetune_epochs, **opts)
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
        for row in rep["layers"]:
            if not row["eligible"]:
                typer.echo(f"  {row['name']:<32} skipped: {row['skipped']}")
            else:
                typer.echo(f"  {row['name']:<32} density {row['density_before']:.2%} -> {row['density_after']:.2%}, "
                           f"kept {row['survivors_kept']:.1%} of its surviving weights "
                           f"({row['magnitude_kept']:.1%} of their magnitude)")
        typer.echo(f"density (mask) {rep['density_before']:.2%} -> {rep['density_after']:.2%}; non-zero weights "
                   f"{rep['nonzero_density_before']:.2%} -> {rep['nonzero_density_after']:.2%} "
                   f"({rep['survivors_kept']:.1%} of the ticket's survivors kept, {rep['weights_changed']:,} dropped)")
        n_ok, n_skip = len(rep["patterned_layers"]), len(rep["skipped_layers"])
        typer.echo(f"pattern {rep['pattern']} valid on {n_ok} of {n_ok + n_skip} layers"
                   + (f" ({n_skip} skipped, left as they were)" if n_skip else ""))
        if rep.get("accuracy_after") is not None:
            ft = (f"; after {rep['finetune_epochs']} fine-tune epoch(s) {rep['accuracy_after_finetune']:.4f}"
                  if rep.get("finetune_epochs") else "")
            typer.echo(f"accuracy: ticket {rep['accuracy_before']:.4f} -> projected {rep['accuracy_after']:.4f}{ft}")
        elif rep.get("accuracy_note"):
            typer.echo(f"note: {rep['accuracy_note']}")
        if rep.get("note"):
            typer.echo(f"note: {rep['note']}")
