"""One declaration per setting: `sparsekit prune`'s options are PruneConfig's fields (issue 19 item 3)."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

import sparsekit.pipeline as pipeline
from sparsekit.cli import options
from sparsekit.cli.main import app
from sparsekit.errors import SettingError, UsageError
from sparsekit.pipeline import PruneConfig

runner = CliRunner()

#: PruneConfig fields that the CLI does not set (library-only); every other field must have an option
LIBRARY_ONLY: set[str] = set()


def prune_params() -> dict:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands["prune"].params}  # type: ignore[attr-defined]


def test_static_reader_equals_the_live_dataclass():
    assert options.static_settings() == options.live_settings()
    assert [s.name for s in options.settings()] == [f.name for f in dataclasses.fields(PruneConfig)]


def test_every_field_is_an_option_whose_help_is_the_field_metadata():
    params = prune_params()
    for f in dataclasses.fields(PruneConfig):
        if f.name in LIBRARY_ONLY:
            assert f.metadata.get("cli") is False, f.name
            continue
        assert f.name in params, f"PruneConfig.{f.name} has no `prune` option"
        expected = f.metadata.get("cli_help", f.metadata["help"])
        assert params[f.name].help == expected, f.name
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        assert "/".join(params[f.name].opts + params[f.name].secondary_opts) == flag, f.name


def test_option_defaults_are_the_field_defaults():
    params = prune_params()
    for f in dataclasses.fields(PruneConfig):
        p = params[f.name]
        if isinstance(f.default, tuple) or f.default_factory is not dataclasses.MISSING:
            assert p.default is None and p.multiple and not p.required, f.name  # None = the field's default
        elif "cli_default" in f.metadata:
            assert p.default == f.metadata["cli_default"] and not p.required, f.name
        elif f.default is dataclasses.MISSING:
            assert p.required, f.name
        else:
            assert p.default == f.default and not p.required, f.name


def test_today_flags_and_aliases_are_kept():
    opts = {o for p in prune_params().values() for o in (*p.opts, *p.secondary_opts)}
    for flag in ("--model", "--data", "--method", "--out", "--sparsity", "--budget", "--budget-runtime",
                 "--layerwise", "--global", "--dense", "--no-dense", "--download", "--no-download", "--force",
                 "--allow-layer-collapse", "--include", "--exclude", "--opt", "--objective", "--balance",
                 "--relaxation", "--weight-scale", "--threads", "--json", "--eval-limit", "--workers"):
        assert flag in opts, flag


class _Captured(UsageError):
    pass


def _capture(monkeypatch) -> list[dict]:
    seen: list[dict] = []

    def fake_config(**kwargs):
        seen.append(kwargs)
        raise _Captured("captured")

    monkeypatch.setattr(pipeline, "PruneConfig", fake_config)
    return seen


def _non_default(p, f: dataclasses.Field) -> tuple[list[str], object]:
    """argv giving field f a value other than its default, and the value PruneConfig should get."""
    if f.name == "budget":
        return ["--budget", "params=0.25"], "params=0.25"
    if f.name == "method_options":
        return ["--opt", "k=v", "--opt", "bn=running"], {"k": "v", "bn": "running"}
    if getattr(p, "is_flag", False):
        return [p.secondary_opts[0] if p.default else p.opts[0]], not p.default
    if p.multiple:
        return [p.opts[0], "a.*", p.opts[0], "b.*"], ("a.*", "b.*")
    base = f.type.split("|")[0].strip()
    value = {"int": 7, "float": 0.375}.get(base, f"x-{f.name}")
    return [p.opts[0], str(value)], value


def test_every_field_reaches_the_config_from_its_flag(monkeypatch):
    seen = _capture(monkeypatch)
    params = prune_params()
    argv, expected = ["prune"], {}
    for f in dataclasses.fields(PruneConfig):
        if f.name == "sparsity":
            continue  # with --budget params=0.25 the CLI derives it: 1 - 0.25
        args, value = _non_default(params[f.name], f)
        argv += args
        expected[f.name] = value
    r = runner.invoke(app, argv)
    assert r.exit_code == 2 and "captured" in r.stderr, r.output
    expected["sparsity"] = 0.75
    assert seen == [expected]


def test_method_flags_are_aliases_of_opt(monkeypatch):
    seen = _capture(monkeypatch)
    argv = ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "cts", "--sparsity", "0.5",
            "--out", "o", "--opt", "objective=ce", "--opt", "lr=0.2", "--objective", "fkl", "--balance", "lagrange",
            "--relaxation", "gaussian", "--weight-scale", "none"]
    assert runner.invoke(app, argv).exit_code == 2
    assert seen[0]["method_options"] == {"objective": "fkl", "lr": "0.2", "balance": "lagrange",
                                         "relaxation": "gaussian", "weight_scale": "none"}
    assert "include" not in seen[0] and "exclude" not in seen[0]  # absent: the fields' defaults apply


def test_opt_needs_key_value():
    r = runner.invoke(app, ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "cts",
                            "--sparsity", "0.5", "--out", "o", "--opt", "lr"])
    assert r.exit_code == 2 and "--opt expects KEY=VALUE" in r.stderr


def test_library_errors_name_settings_and_the_cli_names_flags(tmp_path):
    base = dict(model="lenet300", data="synthetic", method="magnitude", sparsity=0.5, out=str(tmp_path / "o"))
    with pytest.raises(SettingError) as exc:
        PruneConfig(**base, eval_limit=0)
    assert str(exc.value) == "eval_limit must be >= 1, got 0"
    with pytest.raises(SettingError) as exc:
        PruneConfig(**base, channel_multiple=8)
    assert "channel_multiple rounds" in str(exc.value) and "--" not in str(exc.value)
    assert exc.value.render(options.flag_for).startswith("--channel-multiple rounds")
    assert "--layerwise or a --budget" in exc.value.render(options.flag_for)  # --layerwise/--global
    r = runner.invoke(app, ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "magnitude",
                            "--sparsity", "0.5", "--out", str(tmp_path / "o"), "--pretrain-epochs", "-1"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: --pretrain-epochs must be >= 0, got -1"


def test_setting_error_leaves_other_braces_alone():
    e = SettingError("{sparsity} of {model} must be < 1, got {x}", "sparsity")
    assert str(e) == "sparsity of {model} must be < 1, got {x}"
    assert e.render(options.flag_for) == "--sparsity of {model} must be < 1, got {x}"
    assert options.flag_for("dense_reference") == "--dense" and options.flag_for("method_options") == "--opt"
    assert options.flag_for("not_a_field") == "--not-a-field"


def test_static_reader_refuses_non_literal_metadata(tmp_path):
    src = tmp_path / "conf.py"
    src.write_text("N = 3\n\n@dataclass\nclass C:\n    a: int = field(default=N, metadata={'help': 'a'})\n"
                   "    b: str = field(default='x', metadata=make())\n\n    def f(self):\n        pass\n")
    with pytest.raises(options._NotStatic):
        options.static_settings(src, "C")
    src.write_text("N = 3\n\n@dataclass\nclass C:\n    a: int | None = field(default=N, metadata={'help': 'a'})\n"
                   "    b: tuple[str, ...] = ('*',)\n\n    def f(self):\n        pass\n")
    assert options.static_settings(src, "C") == [
        options.Setting("a", "int | None", 3, {"help": "a"}), options.Setting("b", "tuple[str, ...]", ("*",), {})]


def test_list_methods_verbose_documents_every_option():
    from sparsekit.methods import METHODS

    r = runner.invoke(app, ["list", "methods", "-v"])
    assert r.exit_code == 0, r.output
    blocks: dict[str, str] = {}
    for line in r.stdout.splitlines():
        if not line.startswith(" "):
            name = line.split()[0]
            blocks[name] = ""
        else:
            blocks[name] += line + "\n"
    assert set(blocks) == set(METHODS.names())
    for name in METHODS.names():
        fields = dataclasses.fields(METHODS.get(name).Options)
        if not fields:
            assert "(no options)" in blocks[name]
        for f in fields:
            assert f"--opt {f.name}=" in blocks[name], (name, f.name)
            assert f.metadata["help"] in blocks[name], (name, f.name)
    assert "--opt objective=kl  (str)" in blocks["cts"] and "--opt two_sided=false  (bool)" in blocks["gates"]
    plain = runner.invoke(app, ["list", "methods"]).stdout
    assert "--opt" not in plain and len(plain.splitlines()) == len(METHODS.names())
