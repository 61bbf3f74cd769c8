"""``sparsekit report DIR... [--out DIR]``: compare runs in a table and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run


@app.command("report")
def report_cmd(
    run_dirs: Annotated[list[str], typer.Argument(help="run directories to compare")],
    out: Annotated[str | None, typer.Option(help="directory for report.md, report.json and PNG plots")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write rows as JSON to PATH (- for stdout)")] = None,
) -> None:
    """Print a comparison table of tickets; with --out also write plots."""
    from sparsekit.run_report import write_report

    def go() -> dict:
        r = write_report(run_dirs, Path(out) if out else None)
        emit_json(r["rows"], json_out)
        return r

    r = run(go)
    if json_out != "-":
        typer.echo(r["markdown"], nl=False)
        for f in r["files"]:
            typer.echo(f"wrote {f}")
