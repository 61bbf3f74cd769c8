"""``sparsekit export DIR --out FILE.onnx``: verified single-file ONNX of a ticket or its dense reference."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run


@app.command("export")
def export_cmd(
    run_dir: Annotated[str, typer.Argument(help="run directory")],
    out: Annotated[str, typer.Option("--out", help="ONNX file to write")],
    dense: Annotated[bool, typer.Option("--dense", help="export the dense reference")] = False,
    fmt: Annotated[str, typer.Option("--format", help="masked (zeros kept) or structured (empty channels removed)")] = "masked",
    sparse_initializers: Annotated[
        bool, typer.Option("--sparse-initializers", help="store sparse weights as ONNX sparse initializers")
    ] = False,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="where the run's dataset is")] = None,
    static_batch: Annotated[int | None, typer.Option(
        "--static-batch", help="fixed batch dimension N instead of a dynamic one (runtimes that refuse dynamic shapes)")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write JSON to PATH (- for stdout)")] = None,
) -> None:
    """Export to ONNX and verify it (checker, ORT vs torch on real test data, zeros kept)."""
    from sparsekit.export import export_run

    def go() -> dict:
        res = export_run(run_dir, out, dense=dense, fmt=fmt, sparse_initializers=sparse_initializers,
                         data_dir=data_dir, static_batch=static_batch).to_dict()
        emit_json(res, json_out)
        return res

    res = run(go)
    if json_out == "-":
        return
    v = res["verification"]
    z = v["zeros"]
    typer.echo(f"wrote {res['path']} ({res['file_bytes']:,} bytes, {res['variant']}, {res['format']}, "
               f"{res['exporter']} exporter)")
    status = {"passed": "verified", "perturbed": "verified (with perturbed weights)",
              "vacuous": "NOT verified (constant outputs)"}.get(v.get("verified", "passed"), "verified")
    typer.echo(f"{status}: onnx.checker {v['checker']}; ORT vs torch max |diff| "
               f"{v['parity']['max_abs_diff']:.2e} <= EXPORT_ATOL {v['parity']['atol']:g} on batches "
               f"{', '.join(str(b['batch']) for b in v['parity']['batches'])}"
               + (f"; fixed batch {res['metadata'].get('sparsekit.batch')}"
                  if res["metadata"].get("sparsekit.batch", "dynamic") != "dynamic" else ""))
    if res["variant"] == "dense":
        typer.echo(f"zeros: dense reference ({z['zeros_total']:,} zeros in its weights)")
    elif z["masked_total"] == 0:
        typer.echo("zeros: every masked weight was removed with its channel")
    else:
        typer.echo(f"zeros: {z['masked_total']:,} masked weights, all zero in the export "
                   f"({z['zeros_total']:,} zeros in its weights)")
    if res.get("structured"):
        s = res["structured"]
        typer.echo(f"structured: {s['channels_removed']} channels removed, MACs {s['macs_before']:,} -> "
                   f"{s['macs_after']:,} ({s['mac_ratio']:.2f}x fewer)")
        if s.get("bn_channels_repaired"):
            typer.echo(f"note: stale BatchNorm running means of {s['bn_channels_repaired']} dead channels set to 0; "
                       f"logits moved by up to {s['bn_repair_max_abs_change']:.3g} vs the ticket as saved")
    if res.get("sparse_initializers"):
        s = res["sparse_initializers"]
        typer.echo(f"sparse initializers: {s['converted']} weights, {s['dense_bytes']:,} -> {s['sparse_bytes']:,} bytes")
    for note in res["notes"]:
        typer.echo(f"note: {note}")
