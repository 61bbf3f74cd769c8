"""Bad input and failures: one clear line, the right exit code, and nothing half-written."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest
import typer
from typer.testing import CliRunner

from sparsekit.cli.main import app

runner = CliRunner()
BASE = ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "magnitude",
        "--pretrain-epochs", "0", "--finetune-epochs", "1", "--no-dense"]


def one_line(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in result.output, err
    for f in fragments:
        assert f in err, err
    return err


def tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_nonexistent_data_dir_is_a_usage_error(tmp_path):
    out = tmp_path / "o"
    r = runner.invoke(app, BASE + ["--sparsity", "0.5", "--out", str(out), "--data-dir", str(tmp_path / "nope")])
    one_line(r, 2, "--data-dir", "does not exist")
    assert not out.exists()


def test_missing_data_leaves_no_run_dir(tmp_path, monkeypatch):
    import sparsekit.data.bundle as bundle

    monkeypatch.delenv("SPARSEKIT_DATA", raising=False)
    monkeypatch.setattr(bundle, "SYSTEM_DATA_DIRS", (tmp_path / "none",))
    args = list(BASE)
    args[args.index("--data") + 1] = "fashion-mnist"
    out = tmp_path / "o"
    one_line(runner.invoke(app, args + ["--sparsity", "0.5", "--out", str(out), "--data-dir", str(tmp_path)]),
             1, "not found")
    assert not out.exists()


def test_nan_loss_leaves_no_new_run_dir(tmp_path):
    out = tmp_path / "o"
    r = runner.invoke(app, BASE + ["--sparsity", "0.5", "--lr", "1e30", "--finetune-epochs", "2", "--out", str(out)])
    one_line(r, 1, "loss became")
    assert not out.exists()
    # an empty directory the user made stays, and stays empty
    out.mkdir()
    one_line(runner.invoke(app, BASE + ["--sparsity", "0.5", "--lr", "1e30", "--finetune-epochs", "2",
                                        "--out", str(out)]), 1, "loss became")
    assert out.is_dir() and not any(out.iterdir())


def test_nan_loss_with_force_keeps_the_previous_complete_run(tmp_path):
    out = tmp_path / "o"
    assert runner.invoke(app, BASE + ["--sparsity", "0.5", "--out", str(out)]).exit_code == 0
    before = tree_digest(out)
    r = runner.invoke(app, BASE + ["--sparsity", "0.5", "--lr", "1e30", "--finetune-epochs", "2", "--force",
                                   "--out", str(out)])
    one_line(r, 1, "loss became")
    assert tree_digest(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.previous")]


@pytest.mark.parametrize(
    "body,fragment",
    [
        ("return nn.Sequential(nn.Flatten(), nn.Linear(256, 3))", "must output (2, 10)"),  # wrong class count
        ("return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))", "fails on an input of shape (2, 1, 16, 16)"),
        ("return Pair()", "returns a tuple"),
    ],
    ids=["classes", "input-size", "tuple"],
)
def test_bad_user_factory_fails_early_and_writes_nothing(tmp_path, body, fragment):
    f = tmp_path / "m.py"
    f.write_text(
        "import torch.nn as nn\n"
        "class Pair(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(256, 10)\n"
        "    def forward(self, x):\n"
        "        y = self.fc(x.flatten(1))\n"
        "        return y, y\n"
        f"def make():\n    {body}\n"
    )
    args = list(BASE)
    args[args.index("--model") + 1] = f"{f}:make"
    out = tmp_path / "o"
    one_line(runner.invoke(app, args + ["--sparsity", "0.5", "--out", str(out)]), 2, fragment)
    assert not out.exists()


def test_sparsity_that_keeps_no_weight_is_refused(tmp_path):
    out = tmp_path / "o"
    one_line(runner.invoke(app, BASE + ["--sparsity", "0.999999", "--out", str(out)]), 2, "keeps 0 of the")
    # layerwise: the 10x100 head alone would keep no weight at 0.9995
    one_line(runner.invoke(app, BASE + ["--sparsity", "0.9995", "--layerwise", "--out", str(out)]), 2,
             "--layerwise keeps 0", "5.weight")
    assert not out.exists()


def test_channel_multiple_needs_layerwise_channel(tmp_path):
    out = tmp_path / "o"
    one_line(runner.invoke(app, BASE + ["--sparsity", "0.5", "--channel-multiple", "8", "--out", str(out)]), 2,
             "--channel-multiple", "--layerwise")
    assert not out.exists()


def test_recipe_with_failed_prune_writes_no_resolved_recipe(tmp_path):
    out = tmp_path / "r"
    f = tmp_path / "r.toml"
    f.write_text(f'[prune]\nmodel = "lenet300"\ndata = "synthetic"\nmethod = "magnitude"\nsparsity = 0.5\n'
                 f'pretrain_epochs = 0\nfinetune_epochs = 2\nlr = 1e30\nout = "{out}"\n')
    r = runner.invoke(app, ["run", str(f)])
    assert r.exit_code == 1, r.output
    assert not (out / "recipe.resolved.json").exists() and not out.exists()


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_interrupts_exit_with_one_resume_line(sig, code, word, capsys):
    import time

    from sparsekit.cli.common import run

    # a process started in the background by a script inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: give this one the handler an interactive Python has (what Ctrl-C hits)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)

    def work():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the signal arrives here
        raise AssertionError("not interrupted")

    try:
        with pytest.raises(typer.Exit) as exc:
            run(work)
    finally:
        signal.signal(signal.SIGINT, previous_int)
    assert exc.value.exit_code == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err and "run the same command again" in err
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_interrupted_fresh_prune_keeps_its_dir_for_resume(tmp_path, monkeypatch):
    import sparsekit.pipeline as pipeline

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "evaluate", boom)
    out = tmp_path / "o"
    r = runner.invoke(app, BASE + ["--sparsity", "0.5", "--out", str(out)])
    one_line(r, 130, "run the same command again")
    assert (out / "run.json").is_file()


def test_failed_finetune_leaves_the_run_as_it_was(tiny_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta["config"]["lr"] = 1e30  # the next fine-tune diverges
    if isinstance(meta.get("recipe"), dict):
        meta["recipe"]["lr"] = 1e30  # runs that record their resolved training recipe
    (run / "run.json").write_text(json.dumps(meta))
    before = tree_digest(run)
    one_line(runner.invoke(app, ["finetune", str(run), "--epochs", "2"]), 1, "loss became")
    assert tree_digest(run) == before  # still complete, same weights, no stray copies
    assert runner.invoke(app, ["info", str(run)]).exit_code == 0
