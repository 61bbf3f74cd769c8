"""Degenerate results are refused: zero-step searches, too-short searches, disconnected masks; sanity BN."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from sparsekit.data.synthetic import make_synthetic
from sparsekit.errors import LayerCollapseError, UsageError
from sparsekit.masking.prunable import prunable_tensors
from sparsekit.methods import SearchContext, get_method
from sparsekit.methods.cts import settle_steps
from sparsekit.pipeline import PruneConfig, prune
from sparsekit.train.loop import TrainConfig
from tests.unit._nets import (
    lenet,
    one_thread,  # noqa: F401  (autouse: one torch thread)
)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=512, n_test=128)


def _ctx(data, **kw) -> SearchContext:
    model = lenet(data)
    kw.setdefault("train_cfg", TrainConfig(batch_size=64))
    return SearchContext(model=model, data=data, names=list(prunable_tensors(model)), sparsity=0.9, **kw)


# --- zero-step searches ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cts", "gates", "edge-popup"])
@pytest.mark.parametrize("kw", [{"search_epochs": 0}, {"search_steps": 0}])
def test_zero_step_search_is_a_usage_error(method, kw, data, tmp_path):
    with pytest.raises(UsageError, match="0 steps"):
        PruneConfig("lenet300", "synthetic", method, 0.9, str(tmp_path / "r"), **kw)
    with pytest.raises(UsageError, match="0 steps"):
        get_method(method).search(_ctx(data, **kw))


def test_search_epochs_and_steps_together_are_refused(tmp_path):
    with pytest.raises(UsageError, match="not both"):
        PruneConfig("lenet300", "synthetic", "cts", 0.9, str(tmp_path / "r"), search_epochs=1, search_steps=5)
    # score methods ignore the search length: no error
    PruneConfig("lenet300", "synthetic", "magnitude", 0.9, str(tmp_path / "r"), search_epochs=0)


def test_cli_search_epochs_zero_exits_2(tmp_path):
    from sparsekit.cli.main import app

    r = CliRunner().invoke(app, ["prune", "--model", "lenet300", "--data", "synthetic", "--method", "cts",
                                 "--sparsity", "0.9", "--out", str(tmp_path / "r"), "--search-epochs", "0"])
    assert r.exit_code == 2, r.output
    assert "0 steps" in r.output and not (tmp_path / "r" / "run.json").exists()


# --- --search-steps and the too-short warning ------------------------------------------------------


@pytest.mark.parametrize("method, opts", [("cts", {"batch_size": 64}), ("gates", {}), ("edge-popup", {})])
def test_search_steps_sets_the_exact_number_of_steps(method, opts, data):
    # 13 steps = 1 epoch of 8 batches + 5: crosses an epoch boundary
    info = get_method(method, opts).search(_ctx(data, search_steps=13)).info
    assert info["steps"] == 13


@pytest.mark.parametrize("method, opts", [("cts", {}), ("gates", {"objective": "gradbalance"})])
def test_too_short_search_warns_with_steps_and_minimum(method, opts, data, caplog):
    # (gates' objective=project has no multiplier to settle: no warning)
    with caplog.at_level(logging.WARNING, logger="sparsekit"):
        info = get_method(method, {"batch_size": 64, **opts}).search(_ctx(data, search_steps=10)).info
    minimum = settle_steps(0.01)
    assert minimum == 400
    (msg,) = info["warnings"]
    assert "10 steps" in msg and f"{minimum}" in msg
    assert any("10 steps" in r.getMessage() for r in caplog.records)


def test_long_enough_search_does_not_warn(data):
    # 1 / ema = 4 steps for ema 1.0: a 10-step search has settled
    info = get_method("cts", {"batch_size": 64, "ema": 1.0}).search(_ctx(data, search_steps=10)).info
    assert "warnings" not in info


def test_identity_without_new_options_matches_old_runs(tmp_path):
    ident = PruneConfig("lenet300", "synthetic", "cts", 0.9, str(tmp_path)).identity()
    assert "search_steps" not in ident and "allow_layer_collapse" not in ident
    assert PruneConfig("lenet300", "synthetic", "cts", 0.9, str(tmp_path), search_steps=50).identity()["search_steps"] == 50


# --- layer collapse ---------------------------------------------------------------------------------


def _collapse_cfg(tmp_path, **kw) -> PruneConfig:
    total = 256 * 300 + 300 * 100 + 100 * 10
    # 2 surviving weights cannot cover 3 layers: some layer keeps none
    return PruneConfig("lenet300", "synthetic", "random", 1 - 2 / total, str(tmp_path / "r"), pretrain_epochs=0,
                       finetune_epochs=0, dense_reference=False, **kw)


def test_layer_collapse_is_a_clear_failure(tmp_path, data):
    with pytest.raises(LayerCollapseError, match="keeps 0 weights") as exc:
        prune(_collapse_cfg(tmp_path), data=data)
    assert exc.value.exit_code == 1 and "--allow-layer-collapse" in str(exc.value)


def test_allow_layer_collapse_keeps_the_mask_and_records_it(tmp_path, data):
    result = prune(_collapse_cfg(tmp_path, allow_layer_collapse=True), data=data)
    assert result["search_info"]["collapsed_layers"]
    assert set(result["search_info"]["collapsed_layers"]) <= {"1.weight", "3.weight", "5.weight"}


# --- sanity ablations get BN statistics the way the ticket did -------------------------------------


@pytest.mark.parametrize("method, opts, pretrain", [("gates", {"bn_batches": 2}, 0), ("magnitude", {}, 1)])
def test_sanity_retrain_of_an_untrained_bn_ticket_reproduces_it(method, opts, pretrain, tmp_path):
    """With no fine-tuning, re-deriving the original ticket in sanity must give the ticket itself."""
    from sparsekit.sanity import run_sanity

    bn_data = make_synthetic(n_train=256, n_test=128)
    out = tmp_path / method
    prune(PruneConfig("resnet20", "synthetic", method, 0.5, str(out), pretrain_epochs=pretrain, search_epochs=1,
                      finetune_epochs=0, batch_size=64, dense_reference=False, method_options=opts), data=bn_data)
    rep = run_sanity(out, seeds=2, data=bn_data, variants=("shuffle",))
    ticket, retrained = rep["original"]["accuracies"]
    assert retrained == ticket
