"""The SearchMethod interface, its registry, and the shared exact selection of score methods.

A method receives a ``SearchContext`` (a private copy of the model at theta_K, the data, the prunable
FQNs, the target sparsity ...) and returns a ``SearchResult`` whose mask has exactly the budgeted
number of survivors. Methods must not rely on changing the model's weights: the pipeline restores
theta_K after the search and trains the ticket from there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.cost.budget import is_weight_latency
from sparsekit.cost.correction import correct
from sparsekit.cost.models import ChannelCost, cost_for
from sparsekit.cost.select import select_by_cost
from sparsekit.data.bundle import DataBundle
from sparsekit.errors import SettingError, UsageError
from sparsekit.masking.coupling.channel_groups import (
    channel_units,
    normalized_channel_scores,
    select_units,
)
from sparsekit.masking.coupling.channel_space import UnitSpace
from sparsekit.masking.select.topk import budget_keep, topk_mask
from sparsekit.registry import Registry
from sparsekit.train.loop import TrainConfig

log = logging.getLogger("sparsekit")

METHODS: Registry = Registry("method")


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


@dataclass
class SearchContext:
    """Everything a method may use to find a mask.

    Attributes:
        model: private copy of the network at theta_K (the method may use it freely).
        data: the dataset (use the train split only).
        names: prunable FQNs, in module order.
        sparsity: target fraction of prunable weights removed, in [0, 1).
        layerwise: per-layer budgets instead of one global ranking.
        granularity: "weight" or "channel" (one decision per output channel / neuron).
        seed: the run seed.
        train_cfg: the optimizer recipe (iterative methods such as ltr train with it).
        pretrain_epochs / finetune_epochs: the pipeline budget (ltr retrains per round).
        run_dir: where diagnostics (search.jsonl, rounds/) may be written; None in pure library use.
        device: torch device string.
        dist: optional distributed context (rank, world_size, all_reduce_mean).
        theta_k: state dict of the model at the rewind point (for rewinding methods).
        search_epochs: epochs of a learned-mask search (None = the method default).
        search_steps: steps (mini-batches) of a learned-mask search; overrides ``search_epochs``
            (None = use the epochs).
        channel_multiple: channel granularity: round kept channels per coupling family to a multiple
            of this (1 = exact budget); with --sparsity it needs layerwise budgets.
        budget: a ``sparsekit.cost.budget.Budget`` with a cost budget (params/MACs/latency at channel
            granularity, sparse-cpu latency at weight granularity), or None: ``sparsity`` counts
            weights (or channels) as before.
        latency: the ``sparsekit.cost.latency.LatencySource`` of a latency budget, prepared by the
            pipeline (its tables are measured in sparsekit.bench); None: prepared on first use.
        progress: callback for one-line progress messages.
    """

    model: nn.Module
    data: DataBundle
    names: list[str]
    sparsity: float
    layerwise: bool = False
    granularity: str = "weight"
    seed: int = 0
    train_cfg: TrainConfig = field(default_factory=TrainConfig)
    pretrain_epochs: int = 0
    finetune_epochs: int = 0
    run_dir: Path | None = None
    device: str = "cpu"
    dist: Any = None
    theta_k: dict[str, torch.Tensor] | None = None
    search_epochs: int | None = None
    search_steps: int | None = None
    channel_multiple: int = 1
    budget: Any = None
    latency: Any = None
    progress: Callable[[str], None] = lambda msg: log.info(msg)

    def params(self) -> dict[str, nn.Parameter]:
        p = dict(self.model.named_parameters())
        return {n: p[n] for n in self.names}


@dataclass
class SearchResult:
    """The found mask plus method diagnostics (JSON-serializable) for the run metadata.

    ``state_updates`` holds buffers the pipeline loads into the ticket after restoring theta_K
    (e.g. BN running statistics recomputed for the masked network by strong-ticket methods).
    """

    mask: Mask
    info: dict[str, Any] = field(default_factory=dict)
    state_updates: dict[str, torch.Tensor] = field(default_factory=dict)


class SearchMethod:
    """Base of every search method.

    Subclasses set ``Options`` (a frozen dataclass whose defaults mean "reference behaviour") and
    implement ``search``. ``granularities`` lists what the method supports.
    """

    Options: ClassVar[type] = NoOptions
    granularities: ClassVar[tuple[str, ...]] = ("weight",)
    #: fine-tune epochs used when the user gives none (None = the pipeline default)
    default_finetune_epochs: ClassVar[int | None] = None
    #: True when the method needs data (SynFlow and random/magnitude do not)
    uses_data: ClassVar[bool] = True
    #: True for learned-mask searches (cts, gates, edge-popup): --search-epochs/--search-steps apply
    learned_search: ClassVar[bool] = False
    #: True when the method honours cost budgets (--budget params/macs/latency at channel granularity)
    cost_budgets: ClassVar[bool] = False
    #: True when the method honours a sparse-cpu latency budget at weight granularity
    weight_latency_budgets: ClassVar[bool] = False

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    def search(self, ctx: SearchContext) -> SearchResult:  # pragma: no cover - interface
        raise NotImplementedError


def search_length(ctx: SearchContext, per_epoch: int, default_epochs: int, method: str) -> tuple[int, int]:
    """(epochs, steps) of a learned-mask search: ``ctx.search_steps`` if given, else ``ctx.search_epochs``
    epochs, else ``default_epochs``; ``per_epoch`` is the number of batches in one epoch.

    A search of zero steps would return the untrained initial mask (all gates / logits equal, so the
    top-k falls back to the index tie-break: the first layers kept, the rest disconnected); it is a
    usage error, not a result.
    """
    if ctx.search_steps is not None:
        steps = ctx.search_steps
        epochs = max(1, math.ceil(steps / max(per_epoch, 1)))
    else:
        epochs = default_epochs if ctx.search_epochs is None else ctx.search_epochs
        steps = epochs * per_epoch
    if steps <= 0:
        what = f"{{search_steps}} {ctx.search_steps}" if ctx.search_steps is not None else f"{{search_epochs}} {epochs}"
        raise SettingError(f"{{method}} {method}: {what} is a search of 0 steps, which returns the untrained "
                           "initial mask; give at least one step (see the method's minimum in the README)",
                           "method", "search_steps", "search_epochs")
    return epochs, steps


def warn_short_search(method: str, steps: int, minimum: int, why: str) -> str | None:
    """Log (and return) a warning when a learned-mask search has fewer than ``minimum`` steps."""
    if steps >= minimum:
        return None
    msg = (f"{method}: a search of {steps} steps is shorter than the {minimum} it needs to settle ({why}); "
           f"the mask may be poor: use --search-steps {minimum} or more")
    log.warning("warning: %s", msg)
    return msg


class ScoreMethod(SearchMethod):
    """A method that only scores weights; the base does exact (global/layerwise) top-k selection.

    With ``granularity == "channel"`` scores are averaged per output channel (dim 0) and whole coupled
    channel groups are kept/removed with an exact channel budget (see ``select_with_info``).
    """

    granularities = ("weight", "channel")
    cost_budgets = True
    weight_latency_budgets = True

    def score(self, ctx: SearchContext) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def search(self, ctx: SearchContext) -> SearchResult:
        if uses_weight_latency(ctx):  # score at the budget's nominal sparsity (SynFlow's rounds use it)
            ctx = dataclasses.replace(ctx, sparsity=1.0 - weight_latency_cost(ctx).uniform_density(ctx.budget.value))
        scores = self.score(ctx)
        return SearchResult(*select_with_info(scores, ctx))


def select(scores: dict[str, torch.Tensor], ctx: SearchContext, invert: bool = False) -> Mask:
    """Exact top-k of scores honoring ctx.layerwise and ctx.granularity (``invert`` keeps the lowest)."""
    return select_with_info(scores, ctx, invert)[0]


def select_with_info(
    scores: dict[str, torch.Tensor], ctx: SearchContext, invert: bool = False
) -> tuple[Mask, dict[str, Any]]:
    """``select`` plus diagnostics for SearchResult.info (channel mode: achieved channel/weight sparsity).

    Channel mode is group-aware (sparsekit.masking.channel_groups): output channels coupled by a
    residual add, concatenation or depthwise conv form one unit, scored by the mean of its rows'
    per-layer normalized scores and kept or removed whole, so every coupled layer agrees and the
    structured format can remove it. The budget is exact up to unit integrity: removed channels as
    close as possible to ``sparsity`` x the candidate channels (output channels of the prunable layers
    except the classifier, whose outputs are the classes and stay dense). ``ctx.layerwise`` applies
    that budget per coupling family (the layers linked by couplings, e.g. one residual stage's
    stream; an uncoupled layer is its own family, so for those it means per layer as before).
    """
    sign = -1.0 if invert else 1.0
    if uses_weight_latency(ctx):
        return select_weights_within_latency({n: sign * s for n, s in scores.items()}, ctx)
    if ctx.granularity == "channel" and uses_cost_budget(ctx):
        space = UnitSpace(ctx.model, list(scores), tuple(ctx.data.in_shape))
        rows = {n: sign * s for n, s in normalized_channel_scores(scores).items()}
        return select_units_within_budget(space.unit_scores(rows), space, ctx)
    if ctx.granularity == "channel":
        ch = {n: sign * s for n, s in normalized_channel_scores(scores).items()}
        units = channel_units(ctx.model, list(scores), tuple(ctx.data.in_shape))
        candidates = {n: s for n, s in ch.items() if n not in units.fixed}
        keep, stats = select_units(candidates, units, ctx.sparsity, ctx.layerwise, ctx.channel_multiple)
        keep.update({n: torch.ones(ch[n].shape[0], dtype=torch.bool) for n in units.fixed})
        mask = Mask({
            n: keep[n].reshape(-1, *([1] * (scores[n].dim() - 1))).expand_as(scores[n]).clone() for n in scores
        })
        info = {
            "channel_selection": "group-aware" if units.coupled else "per-layer (couplings unavailable)",
            **stats,
            "coupled_units": sum(1 for u in units.units if len(u) > 1),
            "partially_prunable_units": units.partial,
            "dense_classifier": units.fixed,
            "weight_sparsity": mask.sparsity,
        }
        return mask, info
    return Mask(topk_mask({n: sign * s.detach().double() for n, s in scores.items()}, ctx.sparsity, ctx.layerwise)), {}


def uses_cost_budget(ctx: SearchContext) -> bool:
    """True when ``ctx`` carries a cost budget (params/MACs/latency), selected with ``select_by_cost``."""
    return ctx.budget is not None and ctx.granularity == "channel"


def select_units_within_budget(unit_scores: torch.Tensor, space: UnitSpace, ctx: SearchContext) -> tuple[Mask, dict[str, Any]]:
    """Channel mask of the best-scored units within ``ctx.budget`` (``select_by_cost``), with diagnostics."""
    cost, budget = cost_for(ctx.budget, space, ctx.model, latency_source(ctx))
    keep, stats = select_by_cost(unit_scores, space, cost, budget, ctx.channel_multiple)
    if callable(getattr(cost, "measure", None)):  # latency: measure the converted ticket and correct
        keep, stats = correct(lambda target: select_by_cost(unit_scores, space, cost, target, ctx.channel_multiple),
                              cost.measure, budget, (keep, stats), cost.dense)
    mask = space.mask(keep)
    info = {"channel_selection": "group-aware, " + cost.kind + " budget" if space.units.coupled
            else "per-layer (couplings unavailable), " + cost.kind + " budget",
            **stats, "coupled_units": sum(1 for u in space.units.units if len(u) > 1),
            "partially_prunable_units": space.units.partial, "dense_classifier": space.units.fixed,
            "weight_sparsity": mask.sparsity}
    return mask, info


def select_unit_scores(unit_scores: torch.Tensor, space: UnitSpace, ctx: SearchContext) -> tuple[Mask, dict[str, Any]]:
    """Channel mask from one score per unit (channel-level searches): within ``ctx.budget`` when it is a
    cost, else ``ctx.sparsity`` of the candidate channels (layerwise / channel-multiple as for scores)."""
    if uses_cost_budget(ctx):
        return select_units_within_budget(unit_scores, space, ctx)
    ext = torch.cat([unit_scores.detach().double().cpu(), torch.zeros(1, dtype=torch.float64)])
    candidates = {n: ext[idx] for n, idx in space.row_units.items() if n not in space.units.fixed}
    keep, stats = select_units(candidates, space.units, ctx.sparsity, ctx.layerwise, ctx.channel_multiple)
    unit_keep = torch.tensor([bool(keep[u[0][0]][u[0][1]]) for u in space.units.units], dtype=torch.bool)
    mask = space.mask(unit_keep)
    return mask, {"channel_selection": "group-aware" if space.units.coupled else "per-layer (couplings unavailable)",
                  **stats, "coupled_units": sum(1 for u in space.units.units if len(u) > 1),
                  "partially_prunable_units": space.units.partial, "dense_classifier": space.units.fixed,
                  "weight_sparsity": mask.sparsity}


def channel_budget(space: UnitSpace, ctx: SearchContext) -> tuple[Any, float]:
    """(cost model, absolute budget) a channel-level search holds: the cost budget, or the channel count."""
    if uses_cost_budget(ctx):
        return cost_for(ctx.budget, space, ctx.model, latency_source(ctx))
    cost = ChannelCost(space)
    return cost, float(budget_keep(int(cost.dense), ctx.sparsity))


def latency_source(ctx: SearchContext) -> Any:
    """The LatencySource of ``ctx``'s latency budget (prepared by the pipeline, else here), or None."""
    if ctx.budget is None or ctx.budget.kind != "latency":
        return None
    if ctx.latency is None:
        from sparsekit.cost.latency import prepare

        ctx.latency = prepare(ctx.budget, ctx.run_dir)
    return ctx.latency


def uses_weight_latency(ctx: SearchContext) -> bool:
    """True when ``ctx`` carries a sparse-cpu latency budget at weight granularity."""
    return is_weight_latency(ctx.budget, ctx.granularity)


def weight_latency_cost(ctx: SearchContext) -> Any:
    """The ``EngineLatency`` of ``ctx``'s model (table measured once and cached, calibrated); refuses,
    with one line, a budget the engine cannot reach."""
    cost = latency_source(ctx).for_weights(ctx.model, list(ctx.names), tuple(ctx.data.in_shape))
    cost.check(ctx.budget.value)
    return cost


#: how a weight-level latency budget turns scores into per-layer kept counts (EngineLatency methods)
LATENCY_ALLOCATIONS = ("greedy", "rank")


def select_weights_within_latency(
    scores: dict[str, torch.Tensor], ctx: SearchContext, allocation: str = "greedy"
) -> tuple[Mask, dict[str, Any]]:
    """Weight mask within a sparse-cpu latency budget: per-layer kept counts allocated against the engine
    table - ``greedy`` (``EngineLatency.allocate``: by score lost per ms saved, for score methods) or
    ``rank`` (``allocate_by_rank``: one global ranking's largest prefix that fits, for scores that already
    priced latency) - exact top-k within each layer; then measured on the engine and corrected like a
    channel latency budget (``sparsekit.cost.correction``)."""
    if allocation not in LATENCY_ALLOCATIONS:
        raise UsageError(f"latency allocation {allocation!r} is not one of {', '.join(LATENCY_ALLOCATIONS)}")
    cost, budget = weight_latency_cost(ctx), float(ctx.budget.value)
    dense = cost.dense_ms()

    def select_at(target: float) -> tuple[Mask, dict[str, Any]]:
        counts = cost.allocate(scores, target, fill=True) if allocation == "greedy" else \
            cost.allocate_by_rank(scores, target)
        keep = {}
        for n, s in scores.items():
            k = counts.get(n, s.numel())
            keep.update(topk_mask({n: s.detach().double().nan_to_num(neginf=-1e300, posinf=1e300)},
                                  1.0 - k / s.numel(), layerwise=True))
        table_ms = float(cost.of_densities({n: counts[n] / scores[n].numel() for n in counts}))
        return Mask(keep), {"budget_kind": "latency", "budget_asked": target, "budget_achieved": table_ms,
                            "budget_dense": dense, "budget_fraction_asked": target / dense,
                            "budget_fraction_achieved": table_ms / dense,
                            "budget_layer_density": {n: counts[n] / scores[n].numel() for n in counts}}

    mask, stats = select_at(budget)
    if cost.measure is not None:
        mask, stats = correct(select_at, lambda m: cost.measure(dict(m.items())), budget, (mask, stats), dense)
    return mask, {"weight_selection": f"per-layer densities from the sparse-cpu latency table ({allocation})", **stats,
                  "weight_sparsity": mask.sparsity}


def get_method(name: str, options: dict[str, Any] | None = None) -> SearchMethod:
    cls = METHODS.get(name)
    return cls(parse_options(cls.Options, options or {}, f"--method {name}"))


def parse_options(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Build a frozen options dataclass from a dict; unknown keys are errors naming the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        k = key.replace("-", "_")
        if k not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            raise UsageError(f"{where} has no option {key!r} (valid: {valid})")
        kwargs[k] = _coerce(value, fields[k], where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {exc}") from None


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise UsageError(f"{where}: option {f.name} expects {type(default).__name__}, got {value!r}") from None
    return value


def keep_count(ctx: SearchContext) -> int:
    total = sum(ctx.model.get_parameter(n).numel() for n in ctx.names)
    return budget_keep(total, ctx.sparsity)
