"""Masks and budgets: exact counts, deterministic ties, validation, persistence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsekit.binary_mask import Mask, sparsity_of
from sparsekit.errors import ArtifactError, UsageError
from sparsekit.masking.prunable import PrunePolicy, prunable_tensors
from sparsekit.masking.select.topk import budget_keep, topk_mask


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 0.9, 0.99, 0.9926, 0.999])
def test_global_topk_exact_count(s):
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(37, 11, generator=g), "b": torch.randn(300, generator=g), "c": torch.randn(5, 3, 3, 3, generator=g)}
    d = sum(t.numel() for t in scores.values())
    mask = topk_mask(scores, s)
    kept = sum(int(m.sum()) for m in mask.values())
    assert d - kept == round(s * d)
    assert all(m.shape == scores[n].shape and m.dtype == torch.bool for n, m in mask.items())


@pytest.mark.parametrize("s", [0.0, 0.5, 0.9, 0.99])
def test_layerwise_topk_exact_per_layer(s):
    scores = {"a": torch.rand(40, 25), "b": torch.rand(300)}
    mask = topk_mask(scores, s, layerwise=True)
    for _n, m in mask.items():
        assert m.numel() - int(m.sum()) == round(s * m.numel())


def test_ties_are_deterministic_and_exact():
    # all-equal scores: kthvalue+>= would keep everything; exact top-k keeps k, lowest indices first
    scores = {"a": torch.ones(10), "b": torch.ones(10)}
    m1 = topk_mask(scores, 0.75)
    m2 = topk_mask(scores, 0.75)
    assert sum(int(v.sum()) for v in m1.values()) == 5
    assert m1["a"].tolist() == [True] * 5 + [False] * 5
    assert torch.equal(m1["a"], m2["a"]) and torch.equal(m1["b"], m2["b"])


def test_topk_keeps_largest():
    m = topk_mask({"w": torch.tensor([0.1, 5.0, -3.0, 2.0])}, 0.5)
    assert m["w"].tolist() == [False, True, False, True]


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_budget_rejects_bad_sparsity(bad):
    with pytest.raises(UsageError):
        budget_keep(100, bad)


def test_nan_scores_rejected():
    with pytest.raises(UsageError):
        topk_mask({"w": torch.tensor([1.0, float("nan")])}, 0.5)


def test_prunable_policy_include_exclude():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert list(prunable_tensors(model)) == ["0.weight", "3.weight"]
    assert list(prunable_tensors(model, PrunePolicy(exclude=("3.*",)))) == ["0.weight"]
    assert list(prunable_tensors(model, PrunePolicy(include=("3.weight",)))) == ["3.weight"]
    with pytest.raises(UsageError, match="no prunable tensor"):
        prunable_tensors(model, PrunePolicy(include=("nothing",)))
    with pytest.raises(UsageError, match="no prunable tensor"):
        prunable_tensors(nn.Sequential(nn.ReLU()))


def test_mask_validation_and_stats():
    m = Mask({"w": torch.tensor([[1, 0], [0, 0]])})
    assert m.sparsity == 0.75 and m.kept == 1 and m.density == 0.25
    with pytest.raises(ArtifactError):
        Mask({"w": torch.tensor([0.5, 1.0])})
    with pytest.raises(ArtifactError):
        Mask({})
    model = nn.Linear(2, 2, bias=False)
    with pytest.raises(ArtifactError, match="unknown tensor"):
        Mask({"nope": torch.ones(2, 2)}).validate(model)
    with pytest.raises(ArtifactError, match="shape"):
        Mask({"weight": torch.ones(3, 2)}).validate(model)


def test_mask_roundtrip_and_hash(tmp_path):
    m = Mask({"a.weight": torch.rand(5, 4) > 0.5, "b.weight": torch.rand(3) > 0.5})
    m.save(tmp_path / "m.safetensors")
    back = Mask.load(tmp_path / "m.safetensors")
    assert back == m and back.sha256() == m.sha256()
    flipped = Mask({n: (~t if n == "b.weight" else t) for n, t in m.items()})
    assert flipped.sha256() != m.sha256()


def test_mask_apply_and_counted_sparsity():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2))
    names = ["0.weight", "1.weight"]
    mask = Mask(topk_mask({n: model.get_parameter(n).abs() for n in names}, 0.8))
    mask.apply(model)
    assert sparsity_of(model, names) == pytest.approx(0.8)


def test_write_marked_section_replaces_only_its_section(tmp_path):
    from sparsekit._io import write_marked_section

    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n<!-- a:start -->\nold a\n<!-- a:end -->\n\nkeep me\n")
    write_marked_section(doc, "a", "new a")
    write_marked_section(doc, "b", "first b")
    text = doc.read_text()
    assert "old a" not in text and "new a" in text and "keep me" in text
    assert text.index("<!-- a:end -->") < text.index("keep me") < text.index("<!-- b:start -->\nfirst b")
