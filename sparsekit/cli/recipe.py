"""Recipes: the whole pipeline (prune, finetune, convert, export, bench, check) from one TOML file.

Each TOML table is named after a CLI command and its keys are that command's option names
(``pretrain_epochs`` or ``pretrain-epochs``), so every CLI option can be expressed and none needs a
second spelling. Positional arguments are wired automatically: the run directory of ``[prune]`` feeds
finetune/convert/export/bench, the ONNX file of ``[export]`` and the run directory feed bench, and the
JSON report of ``[bench]`` feeds check.

    [prune]
    model = "lenet300"
    data = "fashion-mnist"
    method = "cts"
    sparsity = 0.99
    out = "runs/lenet-cts"
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsekit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STAGES = ("prune", "finetune", "convert", "export", "bench", "check")
# options the recipe runner sets itself (positional wiring)
_WIRED = {"run_dir", "inputs", "report"}


@dataclass
class Step:
    command: str
    argv: list[str]


def load_recipe(path: Path, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Parse a TOML recipe and apply ``section.key=value`` overrides (values parsed as TOML)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe not found: {path}")
    try:
        recipe = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"recipe {path} is not valid TOML: {exc}") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise UsageError(f"--set expects SECTION.KEY=VALUE (e.g. prune.sparsity=0.9), got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word such as cts or fashion-mnist
        recipe.setdefault(section, {})[name] = value
    unknown = [s for s in recipe if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown recipe section(s) {unknown} (valid: {', '.join(STAGES)})")
    if "prune" not in recipe:
        raise UsageError("a recipe needs a [prune] section")
    return recipe


def _command_params(command: str) -> dict[str, Any]:
    import typer

    # the stage commands register themselves on `app` when imported; importing them here (not
    # cli.main, which imports this module through run_recipe) keeps the CLI import graph acyclic
    from sparsekit.cli import bench, check, convert, export, finetune, prune  # noqa: F401
    from sparsekit.cli.app import app

    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}


def _argv_for(command: str, options: dict[str, Any]) -> list[str]:
    params = {}
    for p in _command_params(command).values():
        if p.name in _WIRED or not p.opts[0].startswith("-"):
            continue  # positional arguments are wired by the runner
        for spelling in p.opts:  # "--json" -> json, "--pretrain-epochs" -> pretrain_epochs
            params[spelling.lstrip("-").replace("-", "_")] = p
    valid = sorted(params)
    argv: list[str] = []
    for key, value in options.items():
        name = key.replace("-", "_")
        p = params.get(name)
        if p is None:
            raise UsageError(f"[{command}] has no option {key!r} (valid: {', '.join(valid)})")
        if getattr(p, "is_flag", False) or isinstance(value, bool):
            if not isinstance(value, bool):
                raise UsageError(f"[{command}] {key} must be true or false, got {value!r}")
            if value:
                argv.append(p.opts[0])
            elif p.secondary_opts:
                argv.append(p.secondary_opts[0])
        elif getattr(p, "multiple", False):
            for v in value if isinstance(value, list) else [value]:
                argv += [p.opts[0], str(v)]
        elif isinstance(value, list):
            argv += [p.opts[0], ",".join(str(v) for v in value)]
        else:
            argv += [p.opts[0], str(value)]
    return argv


def plan(recipe: dict[str, dict[str, Any]]) -> list[Step]:
    """Turn a recipe into CLI steps (validates every key before anything runs)."""
    prune = dict(recipe["prune"])
    if "out" not in prune:
        raise UsageError("[prune] needs out = \"runs/NAME\" (the run directory)")
    run_dir = str(prune["out"])
    steps = [Step("prune", _argv_for("prune", prune))]
    if "finetune" in recipe:
        steps.append(Step("finetune", [run_dir, *_argv_for("finetune", recipe["finetune"])]))
    if "convert" in recipe:
        steps.append(Step("convert", [run_dir, *_argv_for("convert", recipe["convert"])]))
    onnx = None
    if "export" in recipe:
        export = dict(recipe["export"])
        export.setdefault("out", str(Path(run_dir) / "model.onnx"))
        onnx = str(export["out"])
        steps.append(Step("export", [run_dir, *_argv_for("export", export)]))
    report = None
    if "bench" in recipe:
        bench = dict(recipe["bench"])
        bench.setdefault("data", prune.get("data"))
        bench.setdefault("json", str(Path(run_dir) / "bench.json"))
        report = str(bench["json"])
        inputs = [run_dir] + ([onnx] if onnx else [])
        steps.append(Step("bench", [*inputs, *_argv_for("bench", bench)]))
    if "check" in recipe:
        if report is None:
            raise UsageError("[check] needs a [bench] section (it gates the bench report)")
        steps.append(Step("check", [report, *_argv_for("check", recipe["check"])]))
    return steps
