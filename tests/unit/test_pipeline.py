"""The prune pipeline and the run-directory artifact."""

from __future__ import annotations

import json

import pytest
import torch

from sparsekit import paths
from sparsekit.errors import ArtifactError, UsageError
from sparsekit.pipeline import PruneConfig, finetune, prune
from sparsekit.ticket import SCHEMA_VERSION, Ticket


def test_run_directory_contents(tiny_run):
    meta = json.loads(paths.run_json(tiny_run).read_text())
    assert meta["complete"] is True and meta["schema_version"] == SCHEMA_VERSION
    for key in ("model", "data", "method", "config", "seed", "target_sparsity", "sparsity", "layers",
                "metrics", "timings", "versions", "mask_sha256"):
        assert key in meta, key
    assert meta["sparsity"] == pytest.approx(0.9, abs=1e-9)
    for f in (paths.theta_k, paths.mask, paths.final_weights, paths.dense_weights):
        assert f(tiny_run).is_file()
    assert 0.0 <= meta["metrics"]["accuracy"] <= 1.0
    assert 0.0 <= meta["metrics"]["dense_accuracy"] <= 1.0


def test_ticket_roundtrip_and_exact_zeros(tiny_run):
    t = Ticket.load(tiny_run)
    model = t.materialize("final")
    mask = t.mask()
    for name, m in mask.items():
        w = model.get_parameter(name)
        assert torch.all(w[~m] == 0)
    saved = t.state("final")
    for name, m in mask.items():
        assert torch.all(saved[name][~m] == 0)
    assert mask.sha256() == t.meta["mask_sha256"]


def test_same_seed_same_mask(tmp_path):
    a = prune(PruneConfig("lenet300", "synthetic", "random", 0.8, str(tmp_path / "a"), pretrain_epochs=0, finetune_epochs=0, dense_reference=False))
    b = prune(PruneConfig("lenet300", "synthetic", "random", 0.8, str(tmp_path / "b"), pretrain_epochs=0, finetune_epochs=0, dense_reference=False))
    c = prune(PruneConfig("lenet300", "synthetic", "random", 0.8, str(tmp_path / "c"), seed=1, pretrain_epochs=0, finetune_epochs=0, dense_reference=False))
    assert a["mask_sha256"] == b["mask_sha256"] != c["mask_sha256"]


def test_incomplete_run_is_not_loadable_and_rerun_resumes(tmp_path, monkeypatch):
    out = tmp_path / "r"
    cfg = PruneConfig("lenet300", "synthetic", "magnitude", 0.9, str(out), pretrain_epochs=1, finetune_epochs=1)
    import sparsekit.pipeline as pl

    real_train = pl.train_epochs

    def crash_in_finetune(*a, **k):
        if k.get("stage") == "finetune":
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr(pl, "train_epochs", crash_in_finetune)
    with pytest.raises(KeyboardInterrupt):
        prune(cfg)
    with pytest.raises(ArtifactError, match="incomplete"):
        Ticket.load(out)
    meta = json.loads(paths.run_json(out).read_text())
    assert meta["stages"]["pretrain"]["complete"] and meta["stages"]["search"]["complete"]
    monkeypatch.setattr(pl, "train_epochs", real_train)
    calls = []
    monkeypatch.setattr(pl, "train_epochs", lambda *a, **k: calls.append(k.get("stage")) or real_train(*a, **k))
    result = prune(cfg)
    assert "pretrain" not in calls and "finetune" in calls  # completed stages are skipped
    assert Ticket.load(out).meta["complete"] and result["sparsity"] == pytest.approx(0.9)


def test_different_config_same_out_is_refused(tiny_run):
    with pytest.raises(UsageError, match="different configuration"):
        prune(PruneConfig("lenet300", "synthetic", "random", 0.5, str(tiny_run)))


def test_bad_config_values(tmp_path):
    with pytest.raises(UsageError):
        PruneConfig("lenet300", "synthetic", "magnitude", 1.0, str(tmp_path))
    with pytest.raises(UsageError, match="did you mean"):
        PruneConfig("lenet300", "synthetic", "magnitud", 0.5, str(tmp_path))
    with pytest.raises(UsageError):
        PruneConfig("lenet300", "synthetic", "magnitude", 0.5, str(tmp_path), pretrain_epochs=-1)


def test_finetune_again(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    r = finetune(run, epochs=2)
    assert r["sparsity"] == pytest.approx(0.9)
    assert Ticket.load(run).meta["stages"]["finetune"]["epochs"] == 2
    assert Ticket.load(run).meta["stages"]["dense"]["epochs"] == 2


def test_corrupt_artifacts(tmp_path, tiny_run):
    import shutil

    with pytest.raises(ArtifactError, match="not found"):
        Ticket.load(tmp_path / "missing")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    paths.run_json(bad).write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt JSON"):
        Ticket.load(bad)
    bad2 = tmp_path / "bad2"
    shutil.copytree(tiny_run, bad2)
    paths.mask(bad2).write_bytes(b"\x00\x01garbage")
    with pytest.raises(ArtifactError, match="corrupt tensor file"):
        Ticket.load(bad2).mask()


def test_resume_mid_stage_from_epoch_checkpoint(tmp_path, monkeypatch):
    """A run killed after an epoch checkpoint resumes there and ends with the uninterrupted result."""
    import sparsekit.train.loop as loop

    def cfg(out):
        return PruneConfig("lenet300", "synthetic", "magnitude", 0.9, str(out), pretrain_epochs=3,
                           finetune_epochs=1, dense_reference=False)

    reference = prune(cfg(tmp_path / "ref"))
    real_save = loop._save_checkpoint
    saves = []

    def save_then_die(path, model, opt, stage, epochs_done):
        real_save(path, model, opt, stage, epochs_done)
        saves.append(epochs_done)
        if stage == "pretrain" and epochs_done == 2:
            raise KeyboardInterrupt  # killed right after the epoch-2 checkpoint

    monkeypatch.setattr(loop, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        prune(cfg(tmp_path / "r"))
    assert paths.checkpoint(tmp_path / "r", "pretrain").is_file()
    monkeypatch.setattr(loop, "_save_checkpoint", real_save)
    epochs_run = []
    real_train_epoch_cb = loop.train_epochs

    def spy(*a, **k):
        cb = k.get("on_epoch")
        k["on_epoch"] = lambda rec: (epochs_run.append((rec["stage"], rec["epoch"])), cb and cb(rec))
        return real_train_epoch_cb(*a, **k)

    import sparsekit.pipeline as pl

    monkeypatch.setattr(pl, "train_epochs", spy)
    resumed = prune(cfg(tmp_path / "r"))
    assert ("pretrain", 1) not in epochs_run and ("pretrain", 3) in epochs_run
    assert resumed["mask_sha256"] == reference["mask_sha256"]
    assert resumed["accuracy"] == pytest.approx(reference["accuracy"])
    assert not paths.checkpoint(tmp_path / "r", "pretrain").exists()  # cleaned once the stage completed


def test_cts_search_killed_mid_way_resumes_to_the_same_mask(tmp_path, monkeypatch):
    """Kill a CTS search right after a mid-search checkpoint; rerunning finishes with the same mask."""
    import sparsekit.methods.cts as cts

    def cfg(out):
        return PruneConfig("lenet300", "synthetic", "cts", 0.95, str(out), pretrain_epochs=0, finetune_epochs=0,
                           search_epochs=2, dense_reference=False,
                           method_options={"batch_size": 256, "checkpoint_every": 3})

    reference = prune(cfg(tmp_path / "ref"))
    real = cts._Search._checkpoint

    def checkpoint_then_die(self, step):
        real(self, step)
        if step == 9:
            raise KeyboardInterrupt  # killed right after the step-9 checkpoint

    monkeypatch.setattr(cts._Search, "_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        prune(cfg(tmp_path / "r"))
    assert paths.checkpoint(tmp_path / "r", "search").is_file()
    monkeypatch.setattr(cts._Search, "_checkpoint", real)
    real_step, steps_after_resume = cts._Search._step, []
    monkeypatch.setattr(cts._Search, "_step", lambda self, *a: steps_after_resume.append(1) or real_step(self, *a))
    resumed = prune(cfg(tmp_path / "r"))
    assert len(steps_after_resume) == reference["search_info"]["steps"] - 9  # continued, not restarted
    assert resumed["mask_sha256"] == reference["mask_sha256"]
    log = [json.loads(x) for x in paths.search_log(tmp_path / "r").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(log) + 1))  # no step logged twice
    assert not paths.checkpoint(tmp_path / "r", "search").exists()
