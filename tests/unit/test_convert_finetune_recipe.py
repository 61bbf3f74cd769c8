"""``convert --finetune-epochs`` fine-tunes the projection with the run's own training recipe."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sparsekit.pipeline import PruneConfig, prune
from sparsekit.train import loop
from sparsekit.train.loop import TrainConfig

#: a recipe where every field differs from the TrainConfig defaults the old hand-built config fell back to
RECIPE = dict(
    lr=0.05,
    momentum=0.8,
    weight_decay=5e-4,
    batch_size=64,
    schedule="step",
    warmup_epochs=0.5,
    augment="crop-flip",
    grad_clip=1.0,
    label_smoothing=0.1,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "run"
    prune(
        PruneConfig(
            "lenet300",
            "synthetic:1x16x16",
            "magnitude",
            0.9,
            str(out),
            seed=3,
            pretrain_epochs=1,
            finetune_epochs=0,
            dense_reference=False,
            **RECIPE,
        )
    )
    return out


def test_convert_finetune_uses_the_runs_recipe(run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sparsekit.cli.main import app

    calls = []

    def recording_train_epochs(model, data, cfg, epochs, **kw):
        calls.append((cfg, epochs, kw))
        return model

    monkeypatch.setattr(loop, "train_epochs", recording_train_epochs)
    r = CliRunner().invoke(
        app,
        [
            "convert",
            str(run),
            "--format",
            "block",
            "--block",
            "4x4",
            "--finetune-epochs",
            "2",
            "--json",
            str(tmp_path / "c.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert len(calls) == 1
    cfg, epochs, kw = calls[0]
    assert epochs == 2 and kw["seed"] == 3 and kw["stage"] == "convert-finetune"
    # the run's fine-tune segment of its schedule: from epoch pretrain_epochs, horizon pretrain + epochs
    assert kw["first_epoch"] == 1 and cfg.horizon_epochs == 1 + 2
    assert cfg == TrainConfig(**RECIPE, device="cpu", horizon_epochs=3)
    stored = json.loads((run / "run.json").read_text())["recipe"]
    assert {**stored, "horizon_epochs": 3} == dataclasses.asdict(cfg)
    assert json.loads((tmp_path / "c.json").read_text())["report"]["finetune_epochs"] == 2


def test_convert_finetune_of_a_run_without_a_stored_recipe(run, tmp_path, monkeypatch):
    """Runs written before run.json had ``recipe``: their config, with the legacy constant schedule."""
    import shutil

    from sparsekit.formats.store import convert_run

    old = tmp_path / "old"
    shutil.copytree(run, old)
    meta = json.loads((old / "run.json").read_text())
    del meta["recipe"]
    for key in ("schedule", "warmup_epochs", "augment", "grad_clip", "label_smoothing"):
        del meta["config"][key]
    (old / "run.json").write_text(json.dumps(meta))
    calls = []
    monkeypatch.setattr(
        loop, "train_epochs", lambda model, data, cfg, epochs, **kw: calls.append(cfg) or model
    )
    convert_run(old, "block", finetune_epochs=1, block=(4, 4))
    assert calls == [
        TrainConfig(
            lr=0.05,
            momentum=0.8,
            weight_decay=5e-4,
            batch_size=64,
            schedule="constant",
            augment="none",
            horizon_epochs=2,
        )
    ]
