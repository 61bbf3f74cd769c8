"""Sanity checks: layerwise shuffle, score inversion, reinit, and the §5 reading."""

from __future__ import annotations

import pytest
import torch

from sparsekit.binary_mask import Mask
from sparsekit.data.synthetic import make_synthetic
from sparsekit.errors import UsageError
from sparsekit.pipeline import PruneConfig, prune
from sparsekit.sanity import layerwise_shuffle, read_variant, run_sanity, verdict


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=512, n_test=128)


def _run(tmp_path_factory, data, method, **kw):
    out = tmp_path_factory.mktemp("sanity") / method
    prune(PruneConfig("lenet300", "synthetic", method, 0.9, str(out), pretrain_epochs=1, finetune_epochs=1,
                      dense_reference=False, **kw), data=data)
    return out


@pytest.fixture(scope="module")
def magnitude_run(tmp_path_factory, data):
    return _run(tmp_path_factory, data, "magnitude")


def test_layerwise_shuffle_changes_mask_and_keeps_counts():
    g = torch.Generator().manual_seed(0)
    mask = Mask({"a": torch.rand(30, 20, generator=g) > 0.8, "b": torch.rand(50, generator=g) > 0.5})
    shuffled = layerwise_shuffle(mask, seed=1)
    assert shuffled != mask
    for n, t in mask.items():
        assert int(shuffled[n].sum()) == int(t.sum())
        assert shuffled[n].shape == t.shape
        assert not torch.equal(shuffled[n], t)
    assert layerwise_shuffle(mask, seed=1) == shuffled  # seeded


def test_reading_known_answers():
    drop = read_variant([0.80, 0.82], [0.60, 0.61])
    assert drop["drop"] is True and drop["delta"] == pytest.approx(-0.205)
    same = read_variant([0.80, 0.82], [0.81, 0.80])
    assert same["drop"] is False
    assert read_variant([0.8], [0.7])["drop"] is None
    assert verdict({"shuffle": drop, "reinit": drop})[0] == "pass"
    assert verdict({"shuffle": same, "reinit": same})[0] == "fail"
    assert verdict({"shuffle": drop, "reinit": same})[0] == "mixed"
    v, sentence = verdict({"shuffle": read_variant([0.8], [0.7])})
    assert v == "inconclusive" and ">= 2 seeds" in sentence


def test_run_sanity_one_seed_all_variants(magnitude_run, data):
    rep = run_sanity(magnitude_run, seeds=1, data=data)
    assert set(rep["variants"]) == {"shuffle", "reinit", "invert"}
    assert rep["verdict"] == "inconclusive"
    assert rep["original"]["accuracies"] == [pytest.approx(rep["original"]["mean"])]
    for v in rep["variants"].values():
        assert 0.0 <= v["mean"] <= 1.0
        assert v["delta"] == pytest.approx(v["mean"] - rep["original"]["mean"])
    assert "lowest" in rep["variants"]["invert"]["how"]
    assert rep["budget"]["finetune_epochs"] == 1


def test_run_sanity_two_seeds_gives_a_verdict(magnitude_run, data):
    rep = run_sanity(magnitude_run, seeds=2, data=data, variants=("shuffle",))
    assert len(rep["original"]["accuracies"]) == 2 and len(rep["variants"]["shuffle"]["accuracies"]) == 2
    assert rep["verdict"] in ("pass", "fail", "mixed")


def test_cts_inversion_reruns_the_search(tmp_path_factory, data):
    out = _run(tmp_path_factory, data, "cts", search_epochs=1, method_options={"max_steps": 2, "batch_size": 256})
    rep = run_sanity(out, data=data, variants=("invert",))
    assert "invert=True" in rep["variants"]["invert"]["how"]


def test_bad_variant_and_unscored_method(magnitude_run, data, tmp_path_factory):
    with pytest.raises(UsageError, match="variants"):
        run_sanity(magnitude_run, data=data, variants=("nope",))
    with pytest.raises(UsageError, match="seeds"):
        run_sanity(magnitude_run, data=data, seeds=0)
    ltr = _run(tmp_path_factory, data, "ltr")
    rep = run_sanity(ltr, data=data, variants=("invert",))
    assert "invert" in rep["skipped"] and rep["verdict"] == "inconclusive"
