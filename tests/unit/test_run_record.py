"""The run record: run.json loaded once, typed accessors, legacy defaults, one atomic writer."""

from __future__ import annotations

import json

import pytest

from sparsekit.cost.budget import Budget
from sparsekit.errors import ArtifactError
from sparsekit.ticket import LEGACY_CONFIG, SCHEMA_VERSION, RunRecord, Ticket
from sparsekit.train.loop import TrainConfig

#: a run.json as the first schema wrote it: none of the config keys added later, no ``recipe``
OLD_RUN = {
    "schema_version": 1,
    "complete": True,
    "model": {"name": "lenet300", "in_shape": [3, 32, 32], "num_classes": 10},
    "data": {"name": "cifar10"},
    "method": {"name": "cts", "options": {"objective": "kl"}, "info": {"batch_size": 256}},
    "config": {
        "model": "lenet300",
        "data": "cifar10",
        "method": "cts",
        "sparsity": 0.9,
        "seed": 4,
        "pretrain_epochs": 2,
        "finetune_epochs": 5,
        "batch_size": 128,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "layerwise": False,
        "granularity": "weight",
    },
    "seed": 4,
    "target_sparsity": 0.9,
    "stages": {
        "pretrain": {"complete": True, "epochs": 2},
        "finetune": {"complete": True, "epochs": 5},
    },
    "timings": {"ticket_total_s": 12.5},
    "metrics": {"accuracy": 0.91, "dense_accuracy": 0.93},
    "sparsity": 0.9000001,
    "mask_sha256": "abc",
    "layers": [{"name": "fc1.weight"}],
    "result": {"accuracy": 0.91},
    "a_key_from_elsewhere": {"kept": [1, 2]},
}


def _write(tmp_path, meta, name="run"):
    run = tmp_path / name
    run.mkdir()
    (run / "run.json").write_text(json.dumps(meta))
    return run


def test_an_old_run_loads_with_its_legacy_defaults(tmp_path):
    r = RunRecord.load(_write(tmp_path, OLD_RUN))
    assert r.complete and r.seed == 4 and r.data_name == "cifar10" and r.model_name == "lenet300"
    assert (
        r.method_name == "cts"
        and r.method_options == {"objective": "kl"}
        and r.method_info["batch_size"] == 256
    )
    assert r.pretrain_epochs == 2 and r.finetune_epochs == 5 and r.granularity == "weight"
    assert r.sparsity == pytest.approx(0.9000001) and r.mask_sha256 == "abc" and r.accuracy == 0.91
    for key, legacy in LEGACY_CONFIG.items():
        assert r.config[key] == legacy
    # no recipe stored: constant LR and no augmentation, even for 3x32x32 images (where "auto" would flip)
    assert r.train_config() == TrainConfig(
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=128,
        schedule="constant",
        augment="none",
        horizon_epochs=2 + 5,
    )
    assert r.budget() is None and r.measured_budget() is None
    assert r.search_context() == {
        "sparsity": 0.9,
        "layerwise": False,
        "granularity": "weight",
        "seed": 4,
        "search_epochs": None,
        "search_steps": None,
        "channel_multiple": 1,
        "budget": None,
    }


def test_a_stored_recipe_wins_and_sets_the_horizon(tmp_path):
    meta = {
        **OLD_RUN,
        "recipe": {
            "lr": 0.2,
            "momentum": 0.5,
            "weight_decay": 0.0,
            "batch_size": 32,
            "grad_clip": 2.0,
            "device": "cuda",
            "schedule": "cosine",
            "warmup_epochs": 1.0,
            "horizon_epochs": 7,
            "augment": "crop-flip",
            "label_smoothing": 0.1,
            "a_future_field": 1,
        },
    }
    r = RunRecord(meta)
    cfg = r.train_config(epochs=3, device="cpu")
    assert cfg == TrainConfig(
        lr=0.2,
        momentum=0.5,
        weight_decay=0.0,
        batch_size=32,
        grad_clip=2.0,
        device="cpu",
        schedule="cosine",
        warmup_epochs=1.0,
        horizon_epochs=2 + 3,
        augment="crop-flip",
        label_smoothing=0.1,
    )
    assert r.train_config(epochs=3, first_epoch_count=0).horizon_epochs == 3


def test_budget_is_what_run_json_stores(tmp_path):
    cfg = {
        **OLD_RUN["config"],
        "granularity": "channel",
        "budget": "latency=2.5",
        "budget_runtime": "torch-cpu",
        "budget_batch": 8,
        "budget_threads": 2,
        "channel_multiple": 4,
        "layerwise": False,
    }
    r = RunRecord(
        {
            **OLD_RUN,
            "config": cfg,
            "result": {"budget": {"kind": "latency", "value": 2.5, "ms": 2.4}},
        }
    )
    assert r.budget() == Budget("latency", 2.5, "torch-cpu", 8, 2)
    assert (
        r.search_context()["budget"] == r.budget() and r.search_context()["channel_multiple"] == 4
    )
    assert r.measured_budget()["ms"] == 2.4
    # params= at weight granularity is a count: the search gets no cost budget, the record still has it
    weight = RunRecord({**OLD_RUN, "config": {**OLD_RUN["config"], "budget": "params=0.1"}})
    assert weight.budget() == Budget("params", 0.1) and weight.search_context()["budget"] is None


def test_save_keeps_every_key_and_writes_atomically(tmp_path):
    run = _write(tmp_path, OLD_RUN)
    r = RunRecord.load(run)
    r.timings["finetune_s"] = 1.5
    r.stages["dense"] = {"complete": True, "epochs": 5}
    r.save(run)
    back = json.loads((run / "run.json").read_text())
    assert back == {
        **OLD_RUN,
        "timings": {"ticket_total_s": 12.5, "finetune_s": 1.5},
        "stages": {**OLD_RUN["stages"], "dense": {"complete": True, "epochs": 5}},
    }
    assert list(back) == list(OLD_RUN)  # key order as stored
    assert [p.name for p in run.iterdir()] == ["run.json"]  # no temp file left behind
    assert RunRecord.load(run).stage_epochs("dense") == 5 and RunRecord.load(run).stage_done(
        "dense"
    )


def test_ticket_reads_through_its_record(tmp_path):
    run = _write(tmp_path, OLD_RUN)
    t = Ticket.load(run)
    assert t.meta is t.record.raw and t.data_spec == "cifar10" and t.spec.in_shape == (3, 32, 32)
    assert Ticket(run, dict(OLD_RUN)).record.seed == 4  # Ticket(run_dir, meta) still builds one


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"complete": True}, "no schema_version"),
        ({**OLD_RUN, "schema_version": SCHEMA_VERSION + 1}, "schema_version"),
        ({**OLD_RUN, "complete": False}, "incomplete"),
    ],
)
def test_load_refuses_what_is_not_a_usable_run(tmp_path, meta, message):
    run = _write(tmp_path, meta)
    with pytest.raises(ArtifactError, match=message):
        RunRecord.load(run)


def test_incomplete_runs_load_when_asked_and_missing_ones_do_not(tmp_path):
    run = _write(tmp_path, {**OLD_RUN, "complete": False})
    assert not RunRecord.load(run, require_complete=False).complete
    assert RunRecord.exists(run) and not RunRecord.exists(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="not found"):
        RunRecord.load(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="no fine-tune stage"):
        RunRecord({**OLD_RUN, "stages": {}}).train_config()
