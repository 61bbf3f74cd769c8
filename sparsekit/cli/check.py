"""``sparsekit check REPORT.json``: CI gates; exit 0 pass, 1 a gate failed, 2 bad report/usage."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run


@app.command("check")
def check_cmd(
    report: Annotated[str, typer.Argument(help="report JSON from sparsekit bench --json")],
    max_accuracy_drop: Annotated[float | None, typer.Option("--max-accuracy-drop", help="max drop vs dense, percentage points")] = None,
    min_speedup: Annotated[float | None, typer.Option("--min-speedup", help="min dense p50 / ticket p50 (see --against)")] = None,
    against: Annotated[str, typer.Option("--against", help="best-dense (fastest dense runtime in the report) or same-runtime")] = "best-dense",
    max_size_ratio: Annotated[float | None, typer.Option("--max-size-ratio", help="max ticket size / dense size")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="only rows of this runtime")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="only rows of this batch size")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="only ticket rows of this format (masked, structured, csr)")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write the result JSON to PATH (- for stdout)")] = None,
) -> None:
    """Gate a benchmark report (for CI)."""
    from sparsekit.bench.check import Gates, check_report, load_report

    def go() -> dict:
        res = check_report(load_report(report), Gates(max_accuracy_drop, min_speedup, max_size_ratio, runtime, batch, fmt, against))
        out = res.to_dict()
        emit_json(out, json_out)
        return out

    res = run(go)
    if json_out != "-":
        for f in res["failures"]:
            typer.echo(f"FAIL {f['row']}: {f['gate']} {f['measured']}, required {f['required']}", err=True)
        status = "passed" if res["passed"] else f"FAILED ({len(res['failures'])} gate(s))"
        typer.echo(f"check {status}: {res['checked_rows']} ticket row(s), {len(res['passes'])} gate(s) held")
    if not res["passed"]:
        raise typer.Exit(1)
