"""The mask is held exactly: momentum and weight decay never resurrect a pruned weight."""

from __future__ import annotations

import torch

from sparsekit.binary_mask import Mask
from sparsekit.masking.select.topk import topk_mask
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


# --- the training recipe: schedule, warm-up, augmentation, clipping, label smoothing ------------------

import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from sparsekit.data.synthetic import make_synthetic  # noqa: E402
from sparsekit.errors import UsageError  # noqa: E402
from sparsekit.train.loop import crop_flip, resolve_augment  # noqa: E402


def test_schedule_known_answers():
    cos = TrainConfig(lr=0.2, schedule="cosine")
    assert [cos.lr_at(t, 4) for t in (0, 2, 4)] == [pytest.approx(0.2), pytest.approx(0.1), pytest.approx(0.0)]
    step = TrainConfig(lr=1.0, schedule="step")
    assert [step.lr_at(t, 8) for t in (0, 3.9, 4, 5.9, 6, 8)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert TrainConfig(lr=0.3).lr_at(7, 8) == 0.3  # the library default: constant
    warm = TrainConfig(lr=0.1, schedule="cosine", warmup_epochs=2)
    assert [warm.lr_at(t, 6) for t in (0.5, 2, 4)] == pytest.approx([0.025, 0.1, 0.05])
    # an explicit horizon wins over the call's own end (the rewinding recipe)
    assert TrainConfig(lr=0.2, schedule="cosine", horizon_epochs=4).lr_at(2, 3) == pytest.approx(0.1)
    for bad in ({"schedule": "linear"}, {"augment": "auto"}, {"label_smoothing": 1.0}, {"warmup_epochs": -1},
                {"grad_clip": -1.0}):
        with pytest.raises(UsageError):
            TrainConfig(**bad)


def test_lr_is_set_per_step_from_the_absolute_epoch(synthetic, monkeypatch):
    seen: list[float] = []
    real_step = torch.optim.SGD.step

    def spy(self, *a, **kw):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    cfg = TrainConfig(lr=0.1, batch_size=512, schedule="cosine", horizon_epochs=3)  # 4 batches / epoch
    model = build_model(ModelSpec("lenet300", synthetic.in_shape, 10), seed=0)
    train_epochs(model, synthetic, cfg, 2, first_epoch=1)  # epochs 1..3 of a 3-epoch schedule
    expected = [cfg.lr_at(1 + i / 4, 3) for i in range(8)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(0.075) and seen[-1] < 0.005


def test_resolve_augment_and_crop_flip():
    assert resolve_augment("auto", (3, 32, 32)) == "crop-flip"
    assert resolve_augment("auto", (3, 224, 224)) == "crop-flip"
    assert resolve_augment("auto", (1, 28, 28)) == "none" and resolve_augment("auto", (3, 16, 16)) == "none"
    assert resolve_augment("crop-flip", (1, 28, 28)) == "crop-flip"
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(crop_flip(x, torch.Generator().manual_seed(0)), out)  # seeded
    # every output is a crop of the reflect-padded input, maybe flipped: check against all 162 candidates
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    for b in range(2):
        cands = [padded[b, :, i : i + 8, j : j + 8] for i in range(9) for j in range(9)]
        cands += [c.flip(2) for c in cands]
        assert any(torch.equal(out[b], c) for c in cands)
    outs = torch.stack([crop_flip(x, torch.Generator().manual_seed(s)) for s in range(20)])
    assert not torch.equal(outs[0], outs[1]) and (outs != x).any()


def test_label_smoothing_is_in_the_loss():
    data = make_synthetic(n_train=256, n_test=32)
    model = build_model(ModelSpec("lenet300", data.in_shape, 10), seed=0)
    x, y = data.train.tensors
    with torch.no_grad():
        want = float(F.cross_entropy(model(x), y, label_smoothing=0.3))
    rec = []
    cfg = TrainConfig(lr=1e-12, momentum=0.0, weight_decay=0.0, batch_size=256, label_smoothing=0.3)
    train_epochs(model, data, cfg, 1, on_epoch=rec.append)  # one batch; the model barely moves
    assert rec[0]["train_loss"] == pytest.approx(want, rel=1e-5)


def test_grad_clip_bounds_the_update():
    data = make_synthetic(n_train=64, n_test=32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    cfg = TrainConfig(lr=1.0, momentum=0.0, weight_decay=0.0, batch_size=64, grad_clip=1e-3)
    train_epochs(model, data, cfg, 1)  # one SGD step: |delta| = lr * |clipped grad| <= 1e-3
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-3)


def test_pipeline_recipe_resolved_in_run_json_and_old_runs_still_load(tiny_run, tmp_path):
    from sparsekit.pipeline import PruneConfig, finetune, stored_train_config

    meta = json.loads((tiny_run / "run.json").read_text())
    assert meta["recipe"]["schedule"] == "cosine" and meta["recipe"]["augment"] == "none"  # auto, 1x16x16
    assert meta["recipe"]["horizon_epochs"] == 2
    cfg = PruneConfig("lenet300", "synthetic:3x32x32", "cts", 0.9, str(tmp_path / "x"))
    assert cfg.train_config((3, 32, 32)).augment == "crop-flip"
    # a run.json from before the recipe existed: no "recipe", no new config keys -> constant LR, no aug
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    meta_old = json.loads((old / "run.json").read_text())
    meta_old.pop("recipe")
    for k in ("schedule", "augment", "warmup_epochs", "grad_clip", "label_smoothing"):
        meta_old["config"].pop(k, None)
    (old / "run.json").write_text(json.dumps(meta_old))
    tcfg = stored_train_config(meta_old, 1, 1)
    assert (tcfg.schedule, tcfg.augment, tcfg.grad_clip, tcfg.label_smoothing) == ("constant", "none", 0.0, 0.0)
    result = finetune(old, epochs=1, dense_reference=False)
    assert 0.0 <= result["accuracy"] <= 1.0 and not math.isnan(result["accuracy"])
    # the legacy recipe spelled out has the legacy identity, so such old runs still resume
    ident = PruneConfig("lenet300", "synthetic", "cts", 0.9, str(tmp_path), schedule="constant", augment="none").identity()
    assert not {"schedule", "augment", "warmup_epochs", "grad_clip", "label_smoothing"} & set(ident)
