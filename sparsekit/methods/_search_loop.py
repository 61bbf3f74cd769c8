"""The learned-mask search loop shared by the learned searches: gates, edge-popup and cts.

A learned search trains some mask parameters (gate parameters, scores, logits) for a number of steps
over the training split, with a learning-rate schedule, a step budget, derived seeds, an optional
channel-level budget, progress lines and a per-step diagnostics log (search.jsonl). What differs
between the methods is the step itself (loss, gradient, sparsity control) and what is recorded; that
is what a method passes in. This module owns the rest:

* ``plan_search``: batch size per rank, steps per epoch, (epochs, steps) from ``--search-epochs`` /
  ``--search-steps`` / the method default (``search_length``), an optional cap (``max_steps``) and the
  too-short warning (``warn_short_search``) as a ``SearchPlan``;
* learning-rate schedules, ``step_drop`` and ``cosine`` (``step -> lr``; the loop writes the value
  into every optimizer group before each step);
* seeds derived from the run seed: ``derived_seed(seed, salt)`` for generators (noise, score init,
  evaluation samples) and the per-epoch shuffle seed of the data order (``SearchPlan.data_seed``);
* ``channel_setup``: the coupled-unit space, its cost model and budget, the starting keep fraction;
* ``run_search``: the loop itself, with progress lines (``SearchProgress``), the buffered
  search.jsonl (``SearchLog``, flushed before checkpoints and when the loop ends or fails),
  optional resume (steps before ``resume_at`` are skipped, their batches drawn in the same order)
  and optional periodic checkpoints.

The arithmetic (seed formulas, the cosine's rounding, where the LR is set) is each method's, kept
bit for bit: a seeded search gives the same mask as before the loop was shared.

How cts runs on it (its ``_Search.run``; ``world`` from ``ctx.dist`` as today,
``settle`` = ``(settle_steps(o.ema), "GradBalance's EMA, beta ...: 4 / beta")`` with
``balance=gradbalance``, else None; ``train_epochs`` = pretrain + fine-tune epochs):
    plan = plan_search(ctx, "cts", max(1, o.batch_size // world),
                       lambda per_epoch: default_search_epochs(train_epochs, per_epoch, o.ema),
                       max_steps=o.max_steps, settle=settle, data_seed=cts_shuffle_seed(ctx.seed))
    drop_at = plan.total - math.ceil(o.lr_drop_fraction * plan.total)
    result = run_search(ctx, plan, step_fn, opt=self.opt,
                        lr_at=step_drop(o.lr, drop_at if drop_at > 0 else None),
                        log_path=log_path, record=self._record, progress_fields=self._progress_fields,
                        log_every=1, record_always=False, resume_at=self._resume(log_path),
                        checkpoint=self._checkpoint, checkpoint_every=o.checkpoint_every)
  with ``step_fn(step, x, y) -> float`` = ``self._step(x, y, capture)`` (the capture closed by cts
  after the loop), the noise generator seeded ``derived_seed(ctx.seed, NOISE_SALT + rank)`` and the
  channel branch of ``_Search.__init__`` replaced by ``channel_setup(ctx)`` (its weight-latency
  branch stays in cts). cts's schedule: ``step_drop`` sets lr x 0.1 from ``drop_at`` on (never when
  ``drop_at`` is 0), the same values cts writes today, and ``lr_at(step)`` after a resume equals the
  lr its checkpoint stored. cts's final record uses ``result.steps`` and epoch ``plan.epochs - 1``,
  its ``warning`` is ``plan.warning`` and ``search_seconds`` is ``result.seconds``. Checked by
  comparing masks of a seeded search before and after the move (as for gates and edge-popup:
  bit-identical masks, state updates, infos and search.jsonl on lenet300 / Fashion-MNIST; for cts
  kl / ce / msefeature, gradbalance / lagrange, weight and channel granularity, a resumed search).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparsekit.cost.models import uniform_keep
from sparsekit.masking.coupling.channel_space import UnitSpace
from sparsekit.methods._search_log import SearchLog
from sparsekit.methods._search_progress import SearchProgress
from sparsekit.methods.base import SearchContext, channel_budget, search_length, warn_short_search

#: salts of ``derived_seed``: one generator each, so adding one never shifts another's stream
NOISE_SALT = 17  # the per-step relaxation noise (+ rank): gates, cts
EVAL_SALT = 23  # gates' expected-gate samples of the conversion diagnostic
SCORE_INIT_SALT = 29  # edge-popup's initial scores


def derived_seed(seed: int, salt: int) -> int:
    """Seed of one of a search's generators: ``seed * 1_000_003 + salt``."""
    return seed * 1_000_003 + salt


def shuffle_seed(seed: int) -> Callable[[int], int]:
    """Data-order seed of each epoch of gates and edge-popup: ``seed * 100_003 + 31 + epoch``."""
    return lambda epoch: seed * 100_003 + 31 + epoch


def cts_shuffle_seed(seed: int) -> Callable[[int], int]:
    """Data-order seed of each epoch of cts: ``seed * 7_919 + epoch + 1``."""
    return lambda epoch: seed * 7_919 + epoch + 1


# -- learning-rate schedules: step -> lr -------------------------------------------------------------


def step_drop(lr0: float, drop_step: int | None, factor: float = 0.1) -> Callable[[int], float]:
    """``lr0``, then ``lr0 * factor`` from step ``drop_step`` on (None: never)."""
    if drop_step is None:
        return lambda step: lr0
    return lambda step: lr0 * (factor if step >= drop_step else 1.0)


def cosine(lr0: float, total: int, torch_rounding: bool = False) -> Callable[[int], float]:
    """Cosine from ``lr0`` at step 0 to 0 at step ``total``, per step.

    Two spellings of the same value that round differently in the last bit (on ~20 % of the steps):
    gates computes ``lr0 * 0.5 * (1 + cos(pi * (step / total)))``; edge-popup (``torch_rounding``)
    used torch's ``LambdaLR``: ``lr0 * (0.5 * (1 + cos(pi * step / total)))``. Both are kept so a
    seeded search gives the same mask as before.
    """
    if torch_rounding:
        return lambda step: lr0 * (0.5 * (1 + math.cos(math.pi * step / total)))
    return lambda step: lr0 * 0.5 * (1.0 + math.cos(math.pi * (step / total)))


# -- the plan: batch size, step budget, warning ------------------------------------------------------


@dataclass(frozen=True)
class SearchPlan:
    """How long a search runs and over which batches."""

    method: str
    batch_size: int  # per rank
    rank: int
    world: int
    per_epoch: int  # batches per epoch on this rank
    epochs: int
    total: int  # steps
    warning: str | None  # the too-short-search warning, also logged
    data_seed: Callable[[int], int]  # epoch -> shuffle seed


def plan_search(ctx: SearchContext, method: str, batch_size: int, default_epochs: Callable[[int], int],
                max_steps: int = 0, settle: tuple[int, str] | None = None,
                data_seed: Callable[[int], int] | None = None) -> SearchPlan:
    """The ``SearchPlan`` of ``ctx``: ``default_epochs(per_epoch)`` unless --search-epochs/-steps say
    otherwise, at most ``max_steps`` (0 = no cap); ``settle`` = (minimum steps, why) warns below it."""
    rank = getattr(ctx.dist, "rank", 0)
    world = getattr(ctx.dist, "world_size", 1)
    per_epoch = ctx.data.num_batches("train", batch_size, world_size=world)
    epochs, total = search_length(ctx, per_epoch, default_epochs(per_epoch), method)
    if max_steps:
        total = min(total, max_steps)
    warning = warn_short_search(method, total, *settle) if settle is not None else None
    return SearchPlan(method, batch_size, rank, world, per_epoch, epochs, total, warning,
                      data_seed or shuffle_seed(ctx.seed))


# -- channel-level budget ----------------------------------------------------------------------------


@dataclass
class ChannelSetup:
    """A channel-level search: one mask parameter per coupled unit, the budget a cost of the keeps."""

    space: UnitSpace
    cost: Any  # a cost model: .dense, .expected(keep), .fraction(mask)
    density: float  # the budget as a fraction of the dense cost
    init_density: float  # the uniform keep probability whose expected cost is the budget
    budget_size: float  # the dense cost (GradBalance's size)


def channel_setup(ctx: SearchContext) -> ChannelSetup:
    """Units, cost model and budget of a channel-level search (channels, or params/MACs/latency)."""
    space = UnitSpace(ctx.model, ctx.names, tuple(ctx.data.in_shape))
    cost, budget = channel_budget(space, ctx)
    density = budget / cost.dense
    return ChannelSetup(space, cost, density, uniform_keep(cost, density, space.size), cost.dense)


# -- the loop ----------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    steps: int
    last_loss: float  # the step function's last return value (nan if no step ran)
    seconds: float


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def run_search(ctx: SearchContext, plan: SearchPlan,
               step_fn: Callable[[int, torch.Tensor, torch.Tensor], float], *, opt: torch.optim.Optimizer | None, lr_at: Callable[[int], float] | None,
               log_path: Path | None, record: Callable[[int, int, float], dict[str, Any]],
               progress_fields: Callable[[float], dict[str, Any]], log_every: int = 1,
               record_always: bool = False, resume_at: int = 0,
               checkpoint: Callable[[int], None] | None = None, checkpoint_every: int = 0) -> LoopResult:
    """Run ``plan.total`` steps of ``step_fn(step, x, y) -> loss`` over shuffled training batches.

    Before each step the optimizer's lr is set to ``lr_at(step)``; ``x``, ``y`` are on ``ctx.device``.
    After step ``s`` (counted from 1): ``record(s, epoch, loss)`` is appended to search.jsonl every
    ``log_every`` steps and at the last one (``record`` is only called when there is a log, unless
    ``record_always``), a progress line is offered, and every ``checkpoint_every`` steps (not at the
    last) the log is flushed and ``checkpoint(s)`` called. Steps below ``resume_at`` are skipped.
    """
    device = torch.device(ctx.device)
    slog = SearchLog(log_path)
    progress = SearchProgress(plan.method, plan.total, ctx.progress)
    step, loss, t0 = 0, float("nan"), time.perf_counter()
    try:
        for epoch in range(plan.epochs):
            batches = ctx.data.batches("train", plan.batch_size, shuffle=True, seed=plan.data_seed(epoch),
                                       rank=plan.rank, world_size=plan.world)
            for x, y in batches:
                if step >= plan.total:
                    break
                if step < resume_at:  # done before the interruption; its state was restored
                    step += 1
                    continue
                if lr_at is not None and opt is not None:
                    _set_lr(opt, lr_at(step))
                loss = step_fn(step, x.to(device), y.to(device))
                step += 1
                due = step % log_every == 0 or step == plan.total
                if due and (record_always or log_path is not None):
                    slog.add(record(step, epoch, loss))
                progress.update(step, lambda v=loss: progress_fields(v))
                if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 \
                        and step < plan.total:
                    slog.flush()
                    checkpoint(step)
            if step >= plan.total:
                break
    finally:
        slog.flush()
    return LoopResult(step, loss, time.perf_counter() - t0)
