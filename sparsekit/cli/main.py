"""Entry point: ``sparsekit`` = the Typer app with every command module registered."""

from __future__ import annotations

from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import state


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and results")] = False,
    trust_model_code: Annotated[bool, typer.Option(
        "--trust-model-code",
        help="import the user model code (pkg.mod:fn, file.py:fn) a run directory names; never by default "
             "(also SPARSEKIT_TRUST_MODEL_CODE=1)")] = False,
) -> None:
    state.debug, state.quiet = state.debug or debug, state.quiet or quiet


# command modules (one line per command)
from sparsekit.cli import advise as _advise  # noqa: E402,F401
from sparsekit.cli import bench as _bench  # noqa: E402,F401
from sparsekit.cli import check as _check  # noqa: E402,F401
from sparsekit.cli import convert as _convert  # noqa: E402,F401
from sparsekit.cli import export as _export  # noqa: E402,F401
from sparsekit.cli import finetune as _finetune  # noqa: E402,F401
from sparsekit.cli import info as _info  # noqa: E402,F401
from sparsekit.cli import list_cmd as _list  # noqa: E402,F401
from sparsekit.cli import prune as _prune  # noqa: E402,F401
from sparsekit.cli import report as _report  # noqa: E402,F401
from sparsekit.cli import run_recipe as _run_recipe  # noqa: E402,F401
from sparsekit.cli import sanity as _sanity  # noqa: E402,F401
from sparsekit.cli import sweep as _sweep  # noqa: E402,F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()
