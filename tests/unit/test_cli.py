"""Every core CLI command and every bad-input path, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparsekit.cli.main import app

runner = CliRunner()

BASE = ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "magnitude",
        "--pretrain-epochs", "0", "--finetune-epochs", "1"]


def invoke(args):
    return runner.invoke(app, args)


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in err, err


def test_prune_json_and_info(tmp_path):
    out, js = tmp_path / "run", tmp_path / "r.json"
    r = invoke(BASE + ["--sparsity", "0.99", "--out", str(out), "--json", str(js)])
    assert r.exit_code == 0, r.output
    data = json.loads(js.read_text())
    for key in ("sparsity", "target_sparsity", "accuracy", "dense_accuracy", "out", "timings"):
        assert key in data
    assert data["sparsity"] == pytest.approx(0.99) and 0 <= data["accuracy"] <= 1
    info = invoke(["info", str(out), "--json", "-"])
    assert info.exit_code == 0
    table = json.loads(info.stdout)
    assert table["total"]["sparsity"] == pytest.approx(0.99)
    assert table["total"]["zero_fraction"] >= 0.99
    text = invoke(["info", str(out)])
    assert "99.00%" in text.stdout and "total" in text.stdout
    # rerunning the same command is a no-op that succeeds (stages complete); --json - keeps stdout pure JSON
    again = invoke(BASE + ["--sparsity", "0.99", "--out", str(out), "--json", "-"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["mask_sha256"] == data["mask_sha256"]


def test_finetune_command(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "ft"
    shutil.copytree(tiny_run, run)
    r = invoke(["finetune", str(run), "--epochs", "1", "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sparsity"] == pytest.approx(0.9)  # stdout is pure JSON
    assert "fine-tuned" in r.stderr


@pytest.mark.parametrize("what", ["models", "datasets", "methods"])
def test_list(what):
    r = invoke(["list", what])
    assert r.exit_code == 0 and r.stdout.strip()
    if what == "methods":
        assert "magnitude" in r.stdout and "random" in r.stdout


@pytest.mark.parametrize(
    "extra,code,fragment",
    [
        (["--sparsity", "1.0"], 2, "--sparsity"),
        (["--sparsity", "-0.1"], 2, "--sparsity"),
        (["--sparsity", "abc"], 2, "not a number"),
        (["--sparsity", "nan"], 2, "--sparsity"),
        (["--sparsity", "0.5", "--batch-size", "0"], 2, "--batch-size"),
        (["--sparsity", "0.5", "--include", "nothing.*"], 2, "no prunable tensor"),
        (["--sparsity", "0.5", "--lr", "1e30", "--finetune-epochs", "2"], 1, "loss became"),
    ],
)
def test_prune_bad_values(tmp_path, extra, code, fragment):
    r = invoke(BASE + extra + ["--out", str(tmp_path / "o")])
    fragment = "must be a number" if fragment == "not a number" else fragment
    assert_one_line_error(r, code, fragment)


@pytest.mark.parametrize(
    "flag,value,fragment",
    [
        ("--model", "lenet30", "did you mean 'lenet300'"),
        ("--data", "fashion-mnst", "did you mean 'fashion-mnist'"),
        ("--method", "magnitud", "did you mean 'magnitude'"),
    ],
)
def test_prune_unknown_names(tmp_path, flag, value, fragment):
    args = list(BASE)
    args[args.index(flag) + 1] = value
    r = invoke(args + ["--sparsity", "0.5", "--out", str(tmp_path / "o")])
    assert_one_line_error(r, 2, fragment)
    assert not (tmp_path / "o" / "run.json").exists()


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke(BASE + ["--sparsity", "0.5", "--out", str(blocker / "run")])
    assert_one_line_error(r, 2, "cannot write to --out")


def test_missing_dataset_names_places(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEKIT_DATA", raising=False)
    import sparsekit.data.bundle as bundle

    monkeypatch.setattr(bundle, "SYSTEM_DATA_DIRS", (tmp_path / "none",))
    args = list(BASE)
    args[args.index("--data") + 1] = "mnist"
    r = invoke(args + ["--sparsity", "0.5", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)])
    assert_one_line_error(r, 1, "not found", "--data-dir")


def test_missing_and_corrupt_run_dir(tmp_path, tiny_run):
    r = invoke(["info", str(tmp_path / "nope")])
    assert_one_line_error(r, 1, "not found")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{broken")
    assert_one_line_error(invoke(["info", str(bad)]), 1, "corrupt")
    assert_one_line_error(invoke(["finetune", str(bad)]), 1, "corrupt")


def test_debug_shows_traceback(tmp_path):
    r = invoke(["--debug", "info", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "Traceback" in r.stderr


def test_unknown_command_and_list_target():
    assert_one_line_error(invoke(["prun"]), 2, "prune")
    assert_one_line_error(invoke(["list", "widgets"]), 2, "cannot list")


def test_user_model_without_prunable_tensor(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch, torch.nn as nn\n"
                 "class Bias(nn.Module):\n"
                 "    def __init__(self, k):\n"
                 "        super().__init__()\n"
                 "        self.b = nn.Parameter(torch.zeros(k))\n"
                 "    def forward(self, x):\n"
                 "        return self.b.expand(x.shape[0], -1)\n"
                 "def make(num_classes):\n    return Bias(num_classes)\n")
    args = list(BASE)
    args[args.index("--model") + 1] = f"{f}:make"
    r = invoke(args + ["--sparsity", "0.5", "--out", str(tmp_path / "o")])
    assert_one_line_error(r, 2, "no prunable tensor")


def test_sanity_command(tiny_run):
    r = invoke(["sanity", str(tiny_run), "--variants", "shuffle,invert", "--json", "-"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out["variants"]) == {"shuffle", "invert"} and out["verdict"] == "inconclusive"
    bad = invoke(["sanity", str(tiny_run), "--variants", "shufle"])
    assert_one_line_error(bad, 2, "shuffle")


def test_report_table_and_plots(tiny_run, tmp_path):
    out = tmp_path / "rep"
    r = invoke(["report", str(tiny_run), str(tiny_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "| magnitude |" in r.stdout.replace("lenet300 | synthetic | ", "")
    for name in ("report.md", "report.json", "accuracy_vs_sparsity.png"):
        assert (out / name).is_file()
    assert (out / "accuracy_vs_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(out.glob("layers_*.png"))) == 2
    rows = json.loads((out / "report.json").read_text())
    assert rows[0]["sparsity"] == pytest.approx(0.9)
    assert_one_line_error(invoke(["report", str(tmp_path / "missing")]), 1, "not found")


def test_plain_progress_lines_when_not_a_terminal(tmp_path, monkeypatch):
    import sparsekit.progress as progress

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    r = invoke(BASE + ["--sparsity", "0.5", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0
    assert "finetune epoch 1: 1/" in r.stderr  # periodic plain lines, no bar escape codes
    assert "\x1b[" not in r.stderr


def test_cli_import_and_list_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, sparsekit.cli.main; from sparsekit.cli.list_cmd import catalog; "
            "[catalog(w) for w in ('models', 'datasets', 'methods', 'runtimes', 'formats')]; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("what", ["models", "datasets", "methods", "formats"])
def test_static_list_catalog_equals_live_registries(what):
    from sparsekit.cli.list_cmd import registries, static_catalog

    reg = registries()[what]
    assert static_catalog(what) == [(n, reg.help(n)) for n in reg.names()]


def test_slow_steps_get_progress_lines(tiny_run, tmp_path, monkeypatch):
    import sparsekit.progress as progress

    monkeypatch.setattr(progress, "STEP_NOTICE_S", 0.0)
    r = invoke(["export", str(tiny_run), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert "building the model ..." in r.stderr and "building the model: done in" in r.stderr
    monkeypatch.setattr(progress, "STEP_NOTICE_S", 60.0)
    quick = invoke(["export", str(tiny_run), "--out", str(tmp_path / "m.onnx")])
    assert "done in" not in quick.stderr  # quick steps print nothing


def test_eval_limit_evaluates_on_n_test_samples(tmp_path):
    r = invoke(BASE + ["--sparsity", "0.9", "--eval-limit", "37", "--out", str(tmp_path / "o"), "--json", "-"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["eval_limit"] == 37
    for key in ("accuracy", "accuracy_before_finetune", "dense_accuracy"):
        assert abs(res[key] * 37 - round(res[key] * 37)) < 1e-9, key  # k correct out of 37
    assert_one_line_error(invoke(BASE + ["--sparsity", "0.9", "--eval-limit", "0", "--out", str(tmp_path / "p")]),
                          2, "--eval-limit")


def test_no_diagnose_skips_the_untrained_mask_evaluation_only(tmp_path, monkeypatch):
    """--no-diagnose leaves accuracy_before_finetune out (None) and nothing else: same ticket, same accuracy;
    the option is not part of the run's identity (a run resumes with either)."""
    from sparsekit import pipeline

    calls = []
    real = pipeline._untrained_mask_accuracy
    monkeypatch.setattr(pipeline, "_untrained_mask_accuracy", lambda *a: calls.append(1) or real(*a))
    on = json.loads(invoke(BASE + ["--sparsity", "0.9", "--out", str(tmp_path / "a"), "--json", "-"]).stdout)
    assert calls == [1] and on["accuracy_before_finetune"] is not None
    r = invoke(BASE + ["--sparsity", "0.9", "--no-diagnose", "--out", str(tmp_path / "b"), "--json", "-"])
    assert r.exit_code == 0, r.output
    off = json.loads(r.stdout)
    assert calls == [1] and off["accuracy_before_finetune"] is None
    assert off["mask_sha256"] == on["mask_sha256"] and off["accuracy"] == on["accuracy"]
    again = invoke(BASE + ["--sparsity", "0.9", "--out", str(tmp_path / "b"), "--json", "-"])
    assert again.exit_code == 0 and "already complete" in again.stderr
