"""``sparsekit list models|datasets|methods|runtimes|formats``."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import run
from sparsekit.errors import UsageError


def registries() -> dict:
    from sparsekit.data import DATASETS
    from sparsekit.methods import METHODS
    from sparsekit.models import MODELS

    regs = {"models": MODELS, "datasets": DATASETS, "methods": METHODS}
    try:
        from sparsekit.bench.runtimes import RUNTIMES

        regs["runtimes"] = RUNTIMES
    except ImportError:
        pass
    try:
        from sparsekit.formats import FORMATS

        regs["formats"] = FORMATS
    except ImportError:
        pass
    return regs


@app.command("list")
def list_cmd(what: Annotated[str, typer.Argument(help="models, datasets, methods, runtimes or formats")]) -> None:
    """List what is registered."""

    def go() -> list[tuple[str, str]]:
        regs = registries()
        if what not in regs:
            raise UsageError(f"cannot list {what!r} (valid: {', '.join(regs)})")
        reg = regs[what]
        return [(n, reg.help(n)) for n in reg.names()]

    rows = run(go)
    w = max(len(n) for n, _ in rows) + 2
    for name, help_text in rows:
        typer.echo(f"{name:<{w}}{help_text}")
    if what == "models":
        typer.echo(f"{'tv:NAME':<{w}}any torchvision classifier, random init")
        typer.echo(f"{'pkg.mod:fn':<{w}}your factory (also path/to/file.py:fn)")
