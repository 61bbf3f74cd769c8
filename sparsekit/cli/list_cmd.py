"""``sparsekit list models|datasets|methods|runtimes|formats``.

Listing must be instant, so it does not import the registering modules (they import torch): it reads
their ``@REGISTRY.register("name", help="...")`` lines from the source with ``ast``. A registration
that is not two string literals makes the listing fall back to importing the live registry, and a
test checks the static catalog equals the live registries.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated

import typer

from sparsekit.cli.app import app
from sparsekit.cli.common import run
from sparsekit.errors import UsageError

#: what -> (package directory under sparsekit/, registry variable name)
_STATIC = {"models": ("models", "MODELS"), "datasets": ("data", "DATASETS"), "methods": ("methods", "METHODS"),
           "formats": ("formats", "FORMATS")}
LISTABLE = ("models", "datasets", "methods", "runtimes", "formats")


class _NotStatic(Exception):
    pass


def static_catalog(what: str) -> list[tuple[str, str]]:
    """(name, help) of every ``@REG.register(...)`` in sparsekit/<pkg>/*.py, without importing them.

    Raises _NotStatic when a registration is not made of literals (the caller imports instead).
    """
    pkg, reg = _STATIC[what]
    rows: dict[str, str] = {}
    needle = f"{reg}.register("
    for path in sorted((Path(__file__).resolve().parent.parent / pkg).glob("*.py")):
        src = path.read_text()
        start = src.find(needle)
        while start >= 0:
            line_start = src.rfind("\n", 0, start) + 1
            if src[line_start:start].strip() not in ("", "@"):  # mentioned in a docstring, not code
                start = src.find(needle, start + 1)
                continue
            # parse only the call (parsing whole modules costs ~0.15 s): find its closing parenthesis
            depth, end = 0, start + len(needle) - 1
            while end < len(src):
                depth += {"(": 1, ")": -1}.get(src[end], 0)
                if depth == 0:
                    break
                end += 1
            try:
                call = ast.parse(src[start:end + 1], mode="eval").body
            except SyntaxError:
                raise _NotStatic(path.name) from None
            args = {kw.arg: kw.value for kw in call.keywords}
            name = call.args[0] if call.args else args.get("name")
            help_node = call.args[1] if len(call.args) > 1 else args.get("help")
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)
                    and isinstance(help_node, ast.Constant) and isinstance(help_node.value, str)):
                raise _NotStatic(path.name)
            rows[name.value] = help_node.value
            start = src.find(needle, end)
    return sorted(rows.items())


def registries() -> dict:
    """The live registries (imports torch)."""
    from sparsekit.bench.runtimes import RUNTIMES
    from sparsekit.data import DATASETS
    from sparsekit.formats import FORMATS
    from sparsekit.methods import METHODS
    from sparsekit.models import MODELS

    return {"models": MODELS, "datasets": DATASETS, "methods": METHODS, "runtimes": RUNTIMES, "formats": FORMATS}


def catalog(what: str) -> list[tuple[str, str]]:
    if what not in LISTABLE:
        raise UsageError(f"cannot list {what!r} (valid: {', '.join(LISTABLE)})")
    if what == "runtimes":  # sparsekit.bench.runtimes imports no torch; the status is a find_spec
        from sparsekit.bench.runtimes import RUNTIMES

        rows = []
        for n in RUNTIMES.names():
            status = RUNTIMES.get(n).install_status()
            rows.append((n, RUNTIMES.help(n) + (f" [{status}]" if status else "")))
        return rows
    try:
        return static_catalog(what)
    except _NotStatic:
        reg = registries()[what]
        return [(n, reg.help(n)) for n in reg.names()]


def method_options() -> dict[str, list[tuple[str, str, str, str]]]:
    """Each method's options (name, type, default, help), from its ``Options`` dataclass (imports torch)."""
    from sparsekit.cli.options import describe_options
    from sparsekit.methods import METHODS

    return {n: describe_options(METHODS.get(n).Options) for n in METHODS.names()}


@app.command("list")
def list_cmd(
    what: Annotated[str, typer.Argument(help="models, datasets, methods, runtimes or formats")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="methods: also each method's options "
                                          "(--opt KEY=VALUE): name, type, default, help")] = False,
) -> None:
    """List what is registered."""
    rows = run(lambda: catalog(what))
    if what == "models":
        rows = [*rows, ("tv:NAME", "any torchvision classifier, random init"),
                ("pkg.mod:fn", "your factory (also path/to/file.py:fn)")]
    options = run(method_options) if verbose and what == "methods" else {}
    w = max(len(n) for n, _ in rows) + 2
    for name, help_text in rows:
        typer.echo(f"{name:<{w}}{help_text}")
        opts = options.get(name)
        if opts is None:
            continue
        if not opts:
            typer.echo("    (no options)")
        for key, typ, default, text in opts:
            typer.echo(f"    --opt {key}={default}  ({typ})" + (f"\n        {text}" if text else ""))
