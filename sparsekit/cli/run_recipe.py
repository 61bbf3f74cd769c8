"""``sparsekit run RECIPE.toml [--set section.key=value ...]``: the whole pipeline from one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import run


@app.command("run")
def run_cmd(
    recipe: Annotated[str, typer.Argument(help="TOML recipe: [prune] [finetune] [convert] [export] [bench] [check]")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override SECTION.KEY=VALUE (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved commands and stop")] = False,
) -> None:
    """Run prune -> (finetune) -> (convert) -> (export) -> (bench) -> (check) from a recipe."""
    from typer.main import get_command

    from sparsekit._io import write_json
    from sparsekit.cli.recipe import load_recipe, plan

    resolved = run(lambda: load_recipe(Path(recipe), set_))
    steps = run(lambda: plan(resolved))
    if dry_run:
        for s in steps:
            typer.echo("sparsekit " + s.command + " " + " ".join(s.argv))
        return
    group = get_command(app)
    run_dir = Path(resolved["prune"]["out"])
    for i, step in enumerate(steps):
        typer.echo(f"[{i + 1}/{len(steps)}] sparsekit {step.command} {' '.join(step.argv)}", err=True)
        code = group.commands[step.command].main(args=step.argv, prog_name=f"sparsekit {step.command}",
                                                 standalone_mode=False)
        if isinstance(code, int) and code != 0:
            raise typer.Exit(code)  # a failed or refused prune leaves no recipe.resolved.json behind
        if step.command == "prune" and (run_dir / "run.json").is_file():
            write_json(run_dir / "recipe.resolved.json", resolved)  # what exactly produced this run
