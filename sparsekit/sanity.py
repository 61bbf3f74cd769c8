"""Sanity checks of a ticket (Frankle et al. 2021; docs/algorithms.md §5).

For a complete run directory, three ablated tickets are trained with the run's own budget (recipe and
epochs from run.json) and compared with the original ticket:

* ``shuffle`` — layerwise shuffle: each layer's mask is permuted uniformly at random (same per-layer
  count, new positions), weights at theta_K.
* ``reinit`` — same mask, fresh initial weights from another seed. The fresh network goes through the
  run's whole recipe: ``pretrain_epochs`` dense epochs (none for a k = 0 run, the classic check), then
  the masked fine-tune. So for rewinding runs this asks whether the mask only works with *its* theta_K.
* ``invert`` — score inversion: keep the lowest-scoring weights. Score methods (``ScoreMethod``) are
  re-scored at theta_K and selected with ``select(..., invert=True)``; methods whose ``Options`` has an
  ``invert`` field (cts: keep the lowest logits after an identical search; synflow: invert every
  round) are rerun with ``invert=True``. Other methods (ltr, gates ...) report it as skipped.

Reading (§5): with >= 2 seeds the noise of a comparison is twice the larger sample std of the two
groups. The method *fails* when shuffle and reinit are both within noise of the original (or better),
*passes* when both drop by more than the noise, and is *mixed* otherwise. With one seed no noise can be
estimated and the verdict is "inconclusive".
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from sparsekit import paths
from sparsekit.binary_mask import Mask
from sparsekit.data.bundle import DataBundle, load_dataset
from sparsekit.errors import UsageError
from sparsekit.masking.bn_stats import recalibrate_for_mask, recalibrate_on_data
from sparsekit.methods._strong import apply_recorded
from sparsekit.methods.base import METHODS, ScoreMethod, SearchContext, parse_options, select
from sparsekit.models.init import apply_weight_init
from sparsekit.models.registry import build_model
from sparsekit.ticket import Ticket, load_state
from sparsekit.train.loop import evaluate, train_epochs

log = logging.getLogger("sparsekit")

VARIANTS = ("shuffle", "reinit", "invert")
#: seed offsets so ablations never reuse the run's own random streams
SHUFFLE_SEED = 50_021
REINIT_SEED = 70_001
#: a drop counts when it exceeds NOISE_FACTOR x the larger seed std of the two groups
NOISE_FACTOR = 2.0


def layerwise_shuffle(mask: Mask, seed: int) -> Mask:
    """Permute every layer's mask uniformly at random (per-layer counts kept, positions redrawn).

    Example:
        >>> m = Mask({"w": torch.tensor([True, True, False, False, False, False])})
        >>> layerwise_shuffle(m, 0)["w"].sum().item()
        2
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in mask.items():
        flat = t.reshape(-1)
        out[name] = flat[torch.randperm(flat.numel(), generator=g)].reshape(t.shape)
    return Mask(out)


class _Run:
    """What the checks need from a run directory: spec, recipe, data, theta_K and the mask."""

    def __init__(self, run_dir: Path | str, data: DataBundle | None, data_dir: str | None, device: str) -> None:
        self.ticket = Ticket.load(run_dir)
        self.record = record = self.ticket.record
        self.cfg = record.config
        self.seed = record.seed
        self.device = device
        self.data = data if data is not None else load_dataset(record.data_name, data_dir)
        self.pretrain_epochs = record.pretrain_epochs
        self.epochs = record.finetune_epochs
        # the run's own recipe (schedule, augmentation, ...), horizon pretrain + fine-tune epochs
        self.tcfg = record.train_config(self.epochs, device=device)
        self.mask = self.ticket.mask()
        self.theta_k = self.ticket.state("theta_k")
        self.accuracy = float(record.metrics["accuracy"])
        # how the ticket got BN statistics for its mask (each ablation gets them the same way):
        # strong-ticket searches recompute them for the final mask (search_state.safetensors), and a
        # ticket with no training after the search has them recomputed by the pipeline.
        self.search_recal = paths.search_state(self.ticket.run_dir).is_file()
        info = record.method_info
        self.search_info = info
        options = record.method_options
        self.recal_batch = int(info.get("batch_size") or self.cfg["batch_size"])
        self.recal_batches = int(options.get("bn_batches", 50))

    def model_at_theta_k(self) -> torch.nn.Module:
        model = build_model(self.ticket.spec, seed=0)
        load_state(model, self.theta_k, str(self.ticket.run_dir))
        return model

    def finetune(self, model: torch.nn.Module, mask: Mask, seed: int) -> float:
        """Train a masked model with the run's fine-tune budget; return its test accuracy.

        BN statistics are recomputed for ``mask`` exactly as the ticket's were (same helper, batches
        and seed), else a BN ablation would be judged with the dense network's statistics.
        """
        if self.search_recal:
            # strong tickets: the search's frozen-weight treatment (weight scale, non-affine BN)
            apply_recorded(model, mask.names, self.search_info)
            ctx = dataclasses.replace(self.search_context(with_model=False), model=model)
            model.load_state_dict(recalibrate_for_mask(model.to(self.device), mask, ctx, self.recal_batch,
                                                       self.recal_batches), strict=False)
        train_epochs(model, self.data, self.tcfg, self.epochs, mask=mask, seed=seed,
                     first_epoch=self.pretrain_epochs, stage="sanity")
        mask.apply(model)
        if (self.epochs == 0 and not self.search_recal) or (self.epochs > 0 and self.cfg.get("bn_recalibrate")):
            # as pipeline._masked_bn_stats (after fine-tuning too when the run recomputed its ticket's):
            # 20 shuffled training batches of 256, the run's seed
            model.load_state_dict(recalibrate_on_data(model, self.data, self.seed, self.device), strict=False)
        return evaluate(model, self.data, device=self.device)["accuracy"]

    def reinit_model(self, seed: int) -> torch.nn.Module:
        """A fresh init (other seed) taken through the run's dense pretraining."""
        model = build_model(self.ticket.spec, seed=seed)
        apply_weight_init(model, self.mask.names, self.cfg.get("weight_init", "default"), seed)
        train_epochs(model, self.data, self.tcfg, self.pretrain_epochs, seed=seed, stage="sanity-pretrain")
        return model

    def search_context(self, with_model: bool = True) -> SearchContext:
        return SearchContext(
            model=self.model_at_theta_k().to(self.device) if with_model else torch.nn.Identity(),
            data=self.data,
            names=self.mask.names,
            train_cfg=self.tcfg,
            pretrain_epochs=self.pretrain_epochs,
            finetune_epochs=self.epochs,
            device=self.device,
            theta_k=self.theta_k,
            **self.record.search_context(),  # sparsity, granularity, seed, search length, budget
        )


def inverted_mask(run: _Run) -> tuple[Mask | None, str]:
    """The score-inverted mask of the run's method, or (None, reason) when it has no scores."""
    name = run.record.method_name
    cls = METHODS.get(name)
    options = run.record.method_options
    fields = getattr(cls.Options, "__dataclass_fields__", {})
    if "invert" in fields:
        method = cls(parse_options(cls.Options, {**options, "invert": True}, f"--method {name}"))
        return method.search(run.search_context()).mask, f"{name} rerun with invert=True"
    if issubclass(cls, ScoreMethod):
        method = cls(parse_options(cls.Options, options, f"--method {name}"))
        ctx = run.search_context()
        return select(method.score(ctx), ctx, invert=True), f"{name} re-scored at theta_K, lowest scores kept"
    return None, f"method {name} has no per-weight scores to invert"


def _stats(accs: list[float]) -> dict[str, Any]:
    return {
        "accuracies": accs,
        "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else None,
    }


def read_variant(orig: list[float], var: list[float]) -> dict[str, Any]:
    """Delta of the means and whether the drop exceeds the seed noise (None with one seed).

    Example:
        >>> read_variant([0.80, 0.81], [0.70, 0.71])["drop"]
        True
    """
    delta = statistics.fmean(var) - statistics.fmean(orig)
    if len(orig) < 2 or len(var) < 2:
        return {"delta": delta, "noise": None, "drop": None}
    noise = NOISE_FACTOR * max(statistics.stdev(orig), statistics.stdev(var))
    return {"delta": delta, "noise": noise, "drop": -delta > noise}


def verdict(readings: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(verdict, sentence) from the shuffle/reinit readings (§5)."""
    key = {k: readings[k] for k in ("shuffle", "reinit") if k in readings}
    if not key:
        return "inconclusive", "inconclusive: run shuffle and/or reinit to judge the mask"
    if any(r["drop"] is None for r in key.values()):
        return "inconclusive", "inconclusive: needs >= 2 seeds to separate a drop from run-to-run noise"
    names = " and ".join(key)
    if all(r["drop"] for r in key.values()):
        return "pass", f"pass: {names} lose more accuracy than the seed noise (the mask carries weight-level information)"
    if not any(r["drop"] for r in key.values()):
        return "fail", f"fail: {names} are within noise of the ticket (only per-layer densities matter)"
    dropped = [k for k, r in key.items() if r["drop"]]
    return "mixed", f"mixed: only {', '.join(dropped)} drops beyond the seed noise"


def run_sanity(
    run_dir: Path | str,
    seeds: int = 1,
    data_dir: str | None = None,
    variants: Iterable[str] = VARIANTS,
    data: DataBundle | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the ablated tickets of a complete run and read the result (see the module doc).

    Args:
        run_dir: a complete ``sparsekit prune`` run directory.
        seeds: training seeds per variant (the original ticket is retrained for seeds >= 2; its
            first seed is the run itself). >= 2 are needed for a verdict, 3 recommended.
        data_dir: where the run's dataset lives (default search path otherwise).
        variants: any of "shuffle", "reinit", "invert".
        data: an already loaded dataset (skips loading; tests use synthetic data).
        device: torch device for retraining.
        progress: optional callback for one-line progress messages.

    Returns:
        JSON-serializable dict: original/variant accuracies with mean/std, delta vs the ticket,
        noise, per-variant drop flags, ``verdict`` (pass|fail|mixed|inconclusive) and ``reading``.
    """
    variants = tuple(variants)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise UsageError(f"sanity variants must be among {', '.join(VARIANTS)}, got {list(variants) or 'none'}")
    if seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    say = progress or (lambda msg: log.info(msg))
    run = _Run(run_dir, data, data_dir, device)
    train_seeds = [run.seed + j for j in range(seeds)]

    orig = [run.accuracy]
    for s in train_seeds[1:]:
        orig.append(run.finetune(run.model_at_theta_k(), run.mask, s))
        say(f"sanity original seed {s}: {orig[-1]:.4f}")

    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for variant in variants:
        accs: list[float] = []
        note = ""
        for j, s in enumerate(train_seeds):
            if variant == "shuffle":
                mask = layerwise_shuffle(run.mask, SHUFFLE_SEED + run.seed + j)
                model = run.model_at_theta_k()
            elif variant == "reinit":
                mask, model = run.mask, run.reinit_model(REINIT_SEED + run.seed + j)
            else:
                if j == 0:
                    inv, note = inverted_mask(run)
                    if inv is None:
                        break
                mask, model = inv, run.model_at_theta_k()
            accs.append(run.finetune(model, mask, s))
            say(f"sanity {variant} seed {s}: {accs[-1]:.4f}")
        if not accs:
            skipped[variant] = note
            continue
        results[variant] = {**_stats(accs), **read_variant(orig, accs)}
        if note:
            results[variant]["how"] = note
    v, sentence = verdict(results)
    return {
        "run_dir": str(run_dir),
        "method": run.record.method_name,
        "sparsity": float(run.cfg["sparsity"]),
        "seeds": seeds,
        "budget": {"pretrain_epochs": run.pretrain_epochs, "finetune_epochs": run.epochs,
                   "lr": run.tcfg.lr, "momentum": run.tcfg.momentum,
                   "weight_decay": run.tcfg.weight_decay, "batch_size": run.tcfg.batch_size},
        "original": _stats(orig),
        "variants": results,
        "skipped": skipped,
        "verdict": v,
        "reading": sentence,
    }
