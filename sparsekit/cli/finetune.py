"""``sparsekit finetune DIR``: retrain a ticket from theta_K with its mask held exactly."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import emit_json, run, set_threads


@app.command("finetune")
def finetune_cmd(
    run_dir: Annotated[str, typer.Argument(help="run directory written by prune")],
    epochs: Annotated[int | None, typer.Option(help="epochs [default: the run's fine-tune budget]")] = None,
    data_dir: Annotated[str | None, typer.Option(help="directory holding the dataset files")] = None,
    dense: Annotated[bool, typer.Option("--dense/--no-dense", help="retrain the dense reference to the same budget")] = True,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes decoding image-folder samples (0 = main process)")] = 0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch [default: torch's choice]")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write the result as JSON to PATH (- for stdout)")] = None,
) -> None:
    """Fine-tune an existing ticket again (e.g. with a larger budget)."""
    from sparsekit.dist import from_environment, shutdown
    from sparsekit.pipeline import finetune

    def go() -> dict:
        set_threads(threads)
        dist = from_environment("cpu")
        try:
            r = finetune(run_dir, epochs, data_dir=data_dir, dense_reference=dense, dist=dist, workers=workers)
        finally:
            shutdown(dist)
        if dist is not None and not dist.is_main:
            return {**r, "_main": False}
        emit_json(r, json_out)
        return {**r, "_main": True}

    r = run(go)
    if not r.pop("_main"):
        return
    dense_txt = f", dense {r['dense_accuracy']:.4f}" if r.get("dense_accuracy") is not None else ""
    typer.echo(f"fine-tuned: accuracy {r['accuracy']:.4f}{dense_txt}, sparsity {r['sparsity']:.4%}",
               err=json_out == "-")  # stdout carries only the JSON then
