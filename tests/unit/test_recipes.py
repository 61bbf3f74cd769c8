"""Recipes: every example plans cleanly, bad keys are named, a recipe runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparsekit.cli.main import app
from sparsekit.cli.recipe import load_recipe, plan
from sparsekit.errors import UsageError
from sparsekit.methods import METHODS

EXAMPLES = sorted(Path("examples/recipes").glob("*.toml"))
runner = CliRunner()


def test_an_example_recipe_per_builtin_method():
    methods = {load_recipe(p)["prune"]["method"] for p in EXAMPLES}
    assert set(METHODS.names()) <= methods


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_recipe_plans(path):
    steps = plan(load_recipe(path))
    assert steps[0].command == "prune"
    assert "--method" in steps[0].argv


def test_unknown_key_and_section_are_named(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[prune]\nmodel = "lenet300"\nout = "x"\nsparsityy = 0.5\n')
    with pytest.raises(UsageError, match="no option 'sparsityy'.*sparsity"):
        plan(load_recipe(f))
    f.write_text('[prune]\nout = "x"\n[deploy]\nx = 1\n')
    with pytest.raises(UsageError, match="unknown recipe section"):
        load_recipe(f)
    f.write_text("[prune\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_recipe(f)


def test_set_overrides_and_every_cli_option_expressible(tmp_path):
    recipe = load_recipe(EXAMPLES[0], ["prune.sparsity=0.5", "prune.layerwise=true", "prune.exclude=['5.*']"])
    argv = plan(recipe)[0].argv
    assert argv[argv.index("--sparsity") + 1] == "0.5"
    assert "--layerwise" in argv and argv[argv.index("--exclude") + 1] == "5.*"


def test_recipe_runs_and_saves_resolved(tmp_path):
    f = tmp_path / "r.toml"
    out = tmp_path / "run"
    f.write_text(
        '[prune]\nmodel = "lenet300"\ndata = "synthetic"\nmethod = "magnitude"\nsparsity = 0.9\n'
        f'out = "{out}"\npretrain_epochs = 0\nfinetune_epochs = 1\n'
    )
    r = runner.invoke(app, ["run", str(f), "--set", "prune.seed=3"])
    assert r.exit_code == 0, r.output
    resolved = json.loads((out / "recipe.resolved.json").read_text())
    assert resolved["prune"]["seed"] == 3
    assert json.loads((out / "run.json").read_text())["seed"] == 3
    bad = runner.invoke(app, ["run", str(f), "--set", "prune.bogus=1"])
    assert bad.exit_code == 2 and "bogus" in bad.stderr
