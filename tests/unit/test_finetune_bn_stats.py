"""After fine-tuning, a BN ticket's running statistics are those of the final masked network (recomputed),
not the EMA that still carries theta_K's dense statistics."""

from __future__ import annotations

import torch

from sparsekit.data import load_dataset
from sparsekit.masking.bn_stats import bn_modules, recalibrate
from sparsekit.pipeline import PruneConfig, prune
from sparsekit.ticket import Ticket


def test_finetuned_bn_ticket_carries_recomputed_statistics(tmp_path):
    out = tmp_path / "r"
    cfg = PruneConfig("resnet20", "synthetic:3x8x8", "magnitude", 0.95, str(out), pretrain_epochs=1,
                      finetune_epochs=1, dense_reference=False, batch_size=64, eval_limit=64)
    prune(cfg)
    model = Ticket.load(out).materialize("final")
    saved = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bn_modules(model).items()}
    assert saved, "resnet20 has BN layers"
    # the same 20 seeded training batches of 256 the pipeline uses
    data = load_dataset("synthetic:3x8x8", None, False)
    batches = (x for x, _ in data.batches("train", 256, shuffle=True, seed=cfg.seed, limit=256 * 20))
    with torch.no_grad():
        stats = recalibrate(model, model, batches)
    for n, (mean, var) in saved.items():
        torch.testing.assert_close(stats[f"{n}.running_mean"], mean)
        torch.testing.assert_close(stats[f"{n}.running_var"], var)
