"""The mask is held exactly: momentum and weight decay never resurrect a pruned weight."""

from __future__ import annotations

import torch

from sparsekit.mask import Mask
from sparsekit.masking.topk import topk_mask
from sparsekit.models import ModelSpec, build_model
from sparsekit.train.loop import TrainConfig, evaluate, train_epochs


def test_mask_held_with_momentum_and_weight_decay(synthetic):
    model = build_model(ModelSpec("lenet300", synthetic.in_shape, 10), seed=0)
    names = [n for n, p in model.named_parameters() if n.endswith("weight")]
    mask = Mask(topk_mask({n: torch.rand_like(model.get_parameter(n)) for n in names}, 0.95))
    cfg = TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-3, batch_size=64)
    train_epochs(model, synthetic, cfg, 2, mask=mask)
    for n in names:
        w = model.get_parameter(n)
        assert torch.all(w[~mask[n]] == 0), n
        assert (w[mask[n]] != 0).float().mean() > 0.99  # survivors actually trained
    assert evaluate(model, synthetic)["accuracy"] > 0.3


def test_training_is_seeded(synthetic):
    def run():
        m = build_model(ModelSpec("lenet300", synthetic.in_shape, 10), seed=3)
        train_epochs(m, synthetic, TrainConfig(batch_size=128), 1, seed=5)
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    assert torch.equal(run(), run())


def test_nan_loss_is_a_clear_error(synthetic):
    import pytest

    from sparsekit.errors import TrainingDivergedError

    model = build_model(ModelSpec("lenet300", synthetic.in_shape, 10), seed=0)
    with pytest.raises(TrainingDivergedError, match="loss became"):
        train_epochs(model, synthetic, TrainConfig(lr=1e30), 1)
