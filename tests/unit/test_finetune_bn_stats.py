"""After fine-tuning, a BN ticket's running statistics (and the dense reference's) are recomputed as an exact
average over seeded training batches of the final network, not the EMA that still carries theta_K's dense
statistics; ``bn_recalibrate=False`` keeps the fine-tune's EMA (the behaviour before the setting)."""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from sparsekit.data import load_dataset
from sparsekit.masking.bn_stats import RECAL_BATCH_SIZE, RECAL_BATCHES
from sparsekit.pipeline import PruneConfig, finetune, prune
from sparsekit.ticket import Ticket
from tests.unit._nets import one_thread  # noqa: F401  (autouse: one torch thread)

DATA = "synthetic:1x8x8"
NET = '''
import torch
from torch import nn

def make(in_shape, num_classes):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )
'''


def _prune(tmp_path, name: str, **kw) -> tuple[PruneConfig, Ticket]:
    # the run names the test's own model file: reading it back imports that file
    monkeypatch = kw.pop("monkeypatch")
    monkeypatch.setenv("SPARSEKIT_TRUST_MODEL_CODE", "1")
    net = tmp_path / "bnnet.py"
    net.write_text(NET)
    cfg = PruneConfig(f"{net}:make", DATA, "magnitude", 0.7, str(tmp_path / name), pretrain_epochs=1,
                      finetune_epochs=1, batch_size=64, eval_limit=64, **kw)
    prune(cfg)
    return cfg, Ticket.load(tmp_path / name)


def _exact_bn_average(model: nn.Module, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Independent of sparsekit's recalibration: run the network with batch statistics over the seeded
    training batches, record each BN input's per-channel mean and unbiased variance, average over batches."""
    net = copy.deepcopy(model)
    net.train()
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            def hook(_m, args, name=name):
                x = args[0].double()
                seen.setdefault(name, []).append((x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)))
            hooks.append(m.register_forward_pre_hook(hook))
    data = load_dataset(DATA, None, False)
    batches = data.batches("train", RECAL_BATCH_SIZE, shuffle=True, seed=seed,
                           limit=RECAL_BATCH_SIZE * RECAL_BATCHES)
    with torch.no_grad():
        for x, _ in batches:
            net(x)
    for h in hooks:
        h.remove()
    return {n: (torch.stack([m for m, _ in v]).mean(0).float(), torch.stack([s for _, s in v]).mean(0).float())
            for n, v in seen.items()}


def _saved_bn(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    return {n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
            for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_ticket_and_dense_reference_carry_the_exact_bn_average(tmp_path, monkeypatch):
    cfg, ticket = _prune(tmp_path, "on", monkeypatch=monkeypatch)
    final, dense = ticket.materialize("final"), ticket.materialize("dense")
    for model in (final, dense):
        saved, want = _saved_bn(model), _exact_bn_average(model, cfg.seed)
        assert len(saved) == 2 and saved.keys() == want.keys()
        for n, (mean, var, tracked) in saved.items():
            torch.testing.assert_close(mean, want[n][0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(var, want[n][1], rtol=1e-4, atol=1e-5)
            assert 0 < tracked <= RECAL_BATCHES  # one count per recalibration batch, not per training step
    # the ticket's statistics are those of the MASKED network: they differ from the dense reference's
    assert not torch.allclose(_saved_bn(final)["4"][1], _saved_bn(dense)["4"][1])
    meta = json.loads((tmp_path / "on" / "run.json").read_text())
    assert meta["config"]["bn_recalibrate"] is True and meta["result"]["bn_recalibrate"] is True


def test_sparsekit_finetune_recalibrates_as_the_run_did(tmp_path, monkeypatch):
    cfg, _ = _prune(tmp_path, "on", monkeypatch=monkeypatch)
    finetune(tmp_path / "on", epochs=2)  # a different budget: ticket and dense reference retrained
    ticket = Ticket.load(tmp_path / "on")
    for model in (ticket.materialize("final"), ticket.materialize("dense")):
        saved, want = _saved_bn(model), _exact_bn_average(model, cfg.seed)
        for n, (mean, var, tracked) in saved.items():
            torch.testing.assert_close(mean, want[n][0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(var, want[n][1], rtol=1e-4, atol=1e-5)
            assert tracked <= RECAL_BATCHES


def test_off_keeps_the_fine_tune_ema(tmp_path, monkeypatch):
    cfg, ticket = _prune(tmp_path, "off", monkeypatch=monkeypatch, bn_recalibrate=False)
    steps = -(-2048 // cfg.batch_size) * (cfg.pretrain_epochs + cfg.finetune_epochs)  # pretrain + fine-tune
    for kind in ("final", "dense"):
        model = ticket.materialize(kind)
        want = _exact_bn_average(model, cfg.seed)
        for n, (_, var, tracked) in _saved_bn(model).items():
            assert tracked >= steps  # the EMA of every training step, never reset
            assert not torch.allclose(var, want[n][1], rtol=1e-3, atol=1e-4)
    meta = json.loads((tmp_path / "off" / "run.json").read_text())
    assert meta["result"]["bn_recalibrate"] is False
    assert Ticket.load(tmp_path / "off").record.config["bn_recalibrate"] is False


def test_sanity_retrain_with_the_runs_seed_reproduces_the_ticket(tmp_path, monkeypatch):
    """`sparsekit sanity` trains its ablations as the ticket was trained, BN recomputation included:
    re-deriving the ticket itself with the run's seed gives run.json's accuracy."""
    from sparsekit.sanity import _Run

    monkeypatch.setenv("SPARSEKIT_TRUST_MODEL_CODE", "1")
    net = tmp_path / "bnnet.py"
    net.write_text(NET)
    out = tmp_path / "s"
    prune(PruneConfig(f"{net}:make", DATA, "magnitude", 0.9, str(out), pretrain_epochs=1, finetune_epochs=1,
                      batch_size=64, dense_reference=False))
    run = _Run(out, None, None, "cpu")
    assert run.finetune(run.model_at_theta_k(), run.mask, run.seed) == run.accuracy
