"""Concrete Ticket Search (CTS, Arora & Teuscher 2025; docs/algorithms.md §2).

One logit per prunable weight, a binary Concrete relaxation of the mask
(sparsekit.masking.relax.concrete), weights frozen at theta_K, Adam on the logits, sparsity held near
1.1 * kappa by GradBalance (sparsekit.masking.relax.gradbalance), and an exact global top-k over the
logits at the end. The loop itself (batches, LR schedule, log, checkpoints) is the shared
sparsekit.methods._search_loop.

Per step (one training mini-batch, no augmentation):
    dense  = f(x; theta_K)                      (no grad; skipped for the ce objective)
    m~     = sigmoid(a + logistic_noise / tau)  (one noise sample per forward, shared by the batch)
    L      = loss_scale * R(f(x; m~ * theta_K), dense, y)
    g      = balance.step(dL/da, sigmoid(a))    (GradBalance or the Lagrangian variant)
    Adam step on a with a.grad = g

With ``--budget latency=MS --budget-runtime sparse-cpu`` (weight granularity) GradBalance holds the
expected engine latency (sparsekit.cost.engine_latency: per-layer table at each layer's mean keep
probability) instead of the expected density, with the same rule; the final selection keeps the largest
prefix of the keep probabilities' global ranking whose table latency fits (option latency_allocation=rank,
the default: the per-layer densities the search learned while it priced latency; =greedy re-spends them
against the table as score methods do), measured on the engine and corrected (methods.base).

Deviations from the reference, on purpose:
    * the LR cut (x0.1) happens at a *step* (the last ``lr_drop_fraction`` of all steps) instead of
      at epoch floor(0.88 * E) - 1: with the short searches used here (1-3 epochs) the epoch rule
      would cut the LR for the whole search or never.
    * BatchNorm: the reference has no running statistics; we use batch statistics in the search for
      both the dense teacher and the sparse student and restore every buffer afterwards (§2.8).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call

from sparsekit import paths
from sparsekit._io import load_tensors, read_json, save_tensors, write_json
from sparsekit.cost.engine_latency import FlatLatency
from sparsekit.cost.models import CostModel
from sparsekit.errors import SettingError
from sparsekit.masking.coupling.channel_space import UnitSpace
from sparsekit.masking.relax.concrete import (
    DEFAULT_TAU,
    init_logits,
    keep_probability,
    logistic_noise,
    relaxed_mask,
)
from sparsekit.masking.relax.gradbalance import GradBalance, LagrangeBalance
from sparsekit.methods._search_loop import (
    NOISE_SALT,
    channel_setup,
    cts_shuffle_seed,
    derived_seed,
    plan_search,
    run_search,
    step_drop,
)
from sparsekit.methods._search_mode import check_bn_mode, search_mode
from sparsekit.methods.base import (
    LATENCY_ALLOCATIONS,
    METHODS,
    SearchContext,
    SearchMethod,
    SearchResult,
    select_unit_scores,
    select_weights_within_latency,
    select_with_info,
    uses_weight_latency,
    weight_latency_cost,
)
from sparsekit.methods.cts_objectives import OBJECTIVES, ReluCapture, get_objective

log = logging.getLogger("sparsekit")

#: the reference's shortest search (its "short" length, r = 0.125 of a 160-epoch training budget on
#: CIFAR-10: 20 epochs x 98 steps at batch 512 = 1,960 steps; docs/algorithms.md §2.6) -> 2,000.
#: On lenet300 / Fashion-MNIST at 99.26 % (docs/algorithms.md §7.3): CTS-KL 84.2 % at 400 steps,
#: 85.0 % at 2,000, 85.1 % at 4,000 (plateau).
REFERENCE_MIN_STEPS = 2000
BALANCES = ("gradbalance", "lagrange")


def default_search_epochs(train_epochs: int, per_epoch: int, ema: float) -> int:
    """Default CTS search length in epochs (when neither --search-epochs nor --search-steps is given).

    The reference rule: a search of r x the training budget, r = 1 by default (``train_epochs`` =
    pretrain + fine-tune epochs), never shorter than the reference's shortest search
    (REFERENCE_MIN_STEPS = 2,000 steps) nor than the length GradBalance needs to settle
    (``settle_steps(ema)``, 400 steps at beta 0.01). Whole epochs, so the steps are rounded up to a
    multiple of ``per_epoch`` (the number of search batches in one epoch).
    """
    min_steps = max(REFERENCE_MIN_STEPS, settle_steps(ema))
    return max(train_epochs, math.ceil(min_steps / max(per_epoch, 1)), 1)


def default_length_rule() -> str:
    """One sentence for --help and the README."""
    return (f"default CTS search length: the training budget (pretrain + fine-tune epochs; the reference's "
            f"r = 1), but at least {REFERENCE_MIN_STEPS:,} steps (the reference's shortest search, 20 epochs "
            f"x 98 steps at batch 512) and at least GradBalance's settle length 4 / ema (400 steps), rounded up "
            f"to whole epochs")


BALANCES = ("gradbalance", "lagrange")


def settle_steps(ema: float) -> int:
    """Shortest search that is not warned about: 4 / beta steps (400 for GradBalance's beta = 0.01).

    lambda is an EMA with time constant 1 / beta; after 4 / beta steps 98 % of its initial transient
    has decayed. Measured on lenet300 / Fashion-MNIST (theta_1, batch 512, one seed), accuracy of
    the mask at theta_K before fine-tuning: 99.26 %: 25 / 50 / 100 / 200 / 400 / 1000 steps ->
    19.9 / 19.2 / 54.1 / 65.8 / 74.0 / 77.6 %; 90 %: 25 / 50 / 100 / 200 / 1000 steps ->
    33.4 / 58.5 / 64.5 / 68.4 / 78.9 % (at 100-200 steps the soft mask is still at ~0.5-0.6 x the
    target density: lambda overshoots and its EMA has not come back).
    """
    return math.ceil(4.0 / ema)


@dataclass(frozen=True)
class Options:
    """CTS options; defaults reproduce the reference implementation (docs/algorithms.md §2.6)."""

    objective: str = field(default="kl", metadata={"help": "kl (reverse KL sparse||dense), fkl, ce, msefeature"})
    balance: str = field(default="gradbalance", metadata={"help": "gradbalance or lagrange"})
    lr: float = field(default=0.1, metadata={"help": "Adam learning rate of the logits"})
    batch_size: int = field(default=512, metadata={"help": "global search batch size"})
    tau: float = field(default=DEFAULT_TAU, metadata={"help": "Concrete temperature"})
    loss_scale: float = field(default=0.0, metadata={"help": "multiplier of R; 0 = the objective's reference value"})
    lr_drop_fraction: float = field(default=0.12, metadata={"help": "last fraction of steps run at lr x 0.1"})
    headroom: float = field(default=1.1, metadata={"help": "GradBalance target = headroom * density"})
    c_s: float = field(default=100.0, metadata={"help": "sparsity scaler constant"})
    ema: float = field(default=0.01, metadata={"help": "GradBalance EMA factor beta"})
    lagrange_lr: float = field(default=0.0, metadata={"help": "lambda lr of the lagrange variant; 0 = 0.01 * lr"})
    bn: str = field(default="batch", metadata={"help": "batch (batch statistics) or running (eval-mode BN)"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps; 0 = all epochs"})
    invert: bool = field(default=False, metadata={"help": "keep the lowest logits (score-inversion sanity check)"})
    checkpoint_every: int = field(default=100, metadata={"help": "save a resumable search state every N steps; 0 = never"})
    latency_allocation: str = field(default="rank", metadata={"help": "with --budget latency on sparse-cpu: rank (the keep probabilities' global ranking, largest prefix within the budget: the search's own per-layer densities) or greedy (per-layer densities re-spent against the engine table, as for score methods)"})

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise SettingError(f"{{objective}} must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}", "objective")
        if self.balance not in BALANCES:
            raise SettingError(f"{{balance}} must be one of {', '.join(BALANCES)}, got {self.balance!r}", "balance")
        check_bn_mode(self.bn, "{method} cts")
        if self.latency_allocation not in LATENCY_ALLOCATIONS:
            raise SettingError(f"{{method}} cts: option latency_allocation must be one of "
                               f"{', '.join(LATENCY_ALLOCATIONS)}, got {self.latency_allocation!r}", "method")
        for name in ("lr", "tau", "headroom", "c_s"):
            if not getattr(self, name) > 0:
                raise SettingError(f"{{method}} cts: option {name} must be > 0, got {getattr(self, name)}", "method")
        if self.batch_size <= 0:
            raise SettingError(f"{{method}} cts: option batch_size must be > 0, got {self.batch_size}", "method")
        if not 0.0 <= self.lr_drop_fraction < 1.0 or not 0.0 < self.ema <= 1.0:
            raise SettingError("{method} cts: lr_drop_fraction must be in [0, 1) and ema in (0, 1]", "method")
        if self.loss_scale < 0 or self.lagrange_lr < 0 or self.max_steps < 0 or self.checkpoint_every < 0:
            raise SettingError("{method} cts: loss_scale, lagrange_lr, max_steps and checkpoint_every must be >= 0",
                               "method")


@METHODS.register("cts", help="Concrete Ticket Search: learned Concrete mask, GradBalance, exact top-k")
class CTSMethod(SearchMethod):
    Options = Options
    learned_search = True
    granularities = ("weight", "channel")
    cost_budgets = True
    weight_latency_budgets = True

    def search(self, ctx: SearchContext) -> SearchResult:
        o: Options = self.options
        if not 0.0 < ctx.sparsity < 1.0:
            raise SettingError(f"{{method}} cts needs 0 < sparsity < 1, got {ctx.sparsity}", "method")
        with search_mode(ctx.model.to(ctx.device), bn=o.bn):
            search = _Search(ctx, o)
            logits, info = search.run()
        scores = -logits if o.invert else logits
        if search.space is not None:  # one logit per coupled channel unit: ranked directly
            mask, sel = select_unit_scores(scores.cpu(), search.space, ctx)
            return SearchResult(mask, {**info, **sel})
        offsets = _offsets(ctx)
        per_layer = {n: scores[s:e].reshape(ctx.model.get_parameter(n).shape).cpu() for n, (s, e) in offsets.items()}
        if uses_weight_latency(ctx):  # the score a latency allocation ranks / gives up: keep probabilities
            per_layer = {n: torch.sigmoid(s.double()) for n, s in per_layer.items()}
            mask, sel = select_weights_within_latency(per_layer, ctx, o.latency_allocation)
        else:
            mask, sel = select_with_info(per_layer, ctx)
        return SearchResult(mask, {**info, **sel})


def _offsets(ctx: SearchContext) -> dict[str, tuple[int, int]]:
    out, pos = {}, 0
    for n in ctx.names:
        k = ctx.model.get_parameter(n).numel()
        out[n] = (pos, pos + k)
        pos += k
    return out


class _Search:
    """The search loop (state lives here so ``CTSMethod.search`` stays readable)."""

    def __init__(self, ctx: SearchContext, o: Options) -> None:
        self.ctx, self.o = ctx, o
        self.objective = get_objective(o.objective)
        self.scale = o.loss_scale or self.objective.loss_scale
        self.device = torch.device(ctx.device)
        self.weights = {n: ctx.model.get_parameter(n).detach() for n in ctx.names}
        self.offsets = _offsets(ctx)
        self.numel = sum(w.numel() for w in self.weights.values())
        density = 1.0 - ctx.sparsity
        self.space: UnitSpace | None = None
        self.cost: CostModel | FlatLatency | None = None
        budget_size, init_density = self.numel, density
        if uses_weight_latency(ctx):
            # sparse-cpu latency: GradBalance holds the expected engine latency (per-layer table at the
            # layers' mean keep probabilities) instead of the expected density
            elat = weight_latency_cost(ctx)
            self.cost = FlatLatency(elat, self.offsets)
            density = ctx.budget.value / self.cost.dense
            init_density = elat.uniform_density(ctx.budget.value)
            budget_size = self.cost.dense
        if ctx.granularity == "channel":
            # channel level: one logit per coupled unit; the budget is a cost of the unit keeps
            # (channels, or params/MACs/latency), held by GradBalance on its expectation
            setup = channel_setup(ctx)
            self.space, self.cost = setup.space, setup.cost
            density, init_density = setup.density, setup.init_density
            self.numel, budget_size = setup.space.size, setup.budget_size
            self.params = {n: p.detach() for n, p in ctx.model.named_parameters()}
        self.density = density  # kept fraction of the weights, or of the dense cost (channel level, latency)
        self.logits = init_logits(self.numel, init_density, self.device)
        self.opt = torch.optim.Adam([self.logits], lr=o.lr)
        if o.balance == "gradbalance":
            self.balance: Any = GradBalance(density, budget_size, headroom=o.headroom, c_s=o.c_s, beta=o.ema)
        else:
            # reference: lambda lr = 0.01 x logit lr, and 10x smaller again for msefeature
            lam_lr = o.lagrange_lr or 0.01 * o.lr * (0.1 if o.objective == "msefeature" else 1.0)
            self.balance = LagrangeBalance(density, budget_size, lr=lam_lr, c_s=o.c_s)
        self.rank = getattr(ctx.dist, "rank", 0)
        self.world = getattr(ctx.dist, "world_size", 1)
        self.gen = torch.Generator(device=self.device).manual_seed(derived_seed(ctx.seed, NOISE_SALT + self.rank))

    def _reduce(self, x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64, device=self.device)
        return float(self.ctx.dist.all_reduce_mean(t)[0])

    def _masked_weights(self, m: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.space is not None:  # (U,) unit keeps -> rows of every coupled layer, biases, BN affine
            return {n: self.params[n] * mult for n, mult in self.space.multipliers(m).items()}
        # flat (d,) -> per-layer views of each weight's shape
        return {n: w * m[s:e].view_as(w) for (n, w), (s, e) in zip(self.weights.items(), self.offsets.values(), strict=True)}

    def run(self) -> tuple[torch.Tensor, dict[str, Any]]:
        ctx, o = self.ctx, self.o
        train_epochs = ctx.pretrain_epochs + ctx.finetune_epochs
        settle = None
        if o.balance == "gradbalance":
            settle = (settle_steps(o.ema), f"GradBalance's EMA, beta {o.ema}: 4 / beta")
        plan = plan_search(ctx, "cts", max(1, o.batch_size // self.world),
                           lambda per_epoch: default_search_epochs(train_epochs, per_epoch, o.ema),
                           max_steps=o.max_steps, settle=settle, data_seed=cts_shuffle_seed(ctx.seed))
        self.warning = plan.warning
        drop_at = plan.total - math.ceil(o.lr_drop_fraction * plan.total)
        capture = ReluCapture(ctx.model) if self.objective.needs_features else None
        log_path = paths.search_log(ctx.run_dir) if ctx.run_dir is not None else None
        try:
            result = run_search(ctx, plan, lambda step, x, y: self._step(x, y, capture), opt=self.opt,
                                lr_at=step_drop(o.lr, drop_at if drop_at > 0 else None),
                                log_path=log_path, record=self._record,
                                progress_fields=self._progress_fields, log_every=1,
                                record_always=False, resume_at=self._resume(log_path),
                                checkpoint=self._checkpoint, checkpoint_every=o.checkpoint_every)
        finally:
            if capture is not None:
                capture.close()
        step, epochs = result.steps, plan.epochs
        final = self._record(step, epochs - 1, result.last_loss)
        info = {
            "objective_name": o.objective,
            "balance": o.balance,
            "steps": step,
            "search_epochs": epochs,
            "expected_density": final["expected_density"],
            "true_density": final["true_density"],
            "lambda": final["lambda"],
            "objective": final["objective"],
            "search_seconds": result.seconds,
            "inverted": o.invert,
        }
        if self.warning:
            info["warnings"] = [self.warning]
        log.info("cts: %d steps, expected density %.4f, lambda %.4g", step, info["expected_density"], info["lambda"])
        return self.logits.detach().clone(), info

    # -- resumable state: logits, Adam moments, balance multiplier, noise generator, step --
    def _checkpoint(self, step: int) -> None:
        if self.ctx.run_dir is None or self.rank != 0:
            return
        tensors = {"logits": self.logits.detach().cpu(), "noise_rng": self.gen.get_state().cpu()}
        for key, value in self.opt.state_dict()["state"].get(0, {}).items():
            tensors[f"adam.{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
        save_tensors(paths.checkpoint(self.ctx.run_dir, "search"), tensors)
        balance = {k: v for k, v in vars(self.balance).items() if isinstance(v, (int, float, type(None)))}
        write_json(paths.checkpoint_meta(self.ctx.run_dir, "search"),
                   {"step": step, "lr": self.opt.param_groups[0]["lr"], "balance": balance})

    def _resume(self, log_path: Any) -> int:
        """Restore the last checkpoint of an interrupted search; returns the step to continue from."""
        if self.ctx.run_dir is None or not paths.checkpoint(self.ctx.run_dir, "search").is_file():
            return 0
        meta = read_json(paths.checkpoint_meta(self.ctx.run_dir, "search"))
        tensors = load_tensors(paths.checkpoint(self.ctx.run_dir, "search"))
        with torch.no_grad():
            self.logits.copy_(tensors["logits"].to(self.device))
        state = self.opt.state_dict()
        state["state"][0] = {k[5:]: v.to(self.device) if k != "adam.step" else v
                             for k, v in tensors.items() if k.startswith("adam.")}
        self.opt.load_state_dict(state)
        for group in self.opt.param_groups:
            group["lr"] = meta["lr"]
        for key, value in meta["balance"].items():
            setattr(self.balance, key, value)
        self.gen.set_state(tensors["noise_rng"].to(self.gen.get_state().device))
        if log_path is not None and log_path.is_file():  # drop diagnostics of steps that will be redone
            keep = [ln for ln in log_path.read_text().splitlines() if ln and int(json.loads(ln)["step"]) <= meta["step"]]
            log_path.write_text("".join(ln + "\n" for ln in keep))
        log.info("cts: resuming the search at step %d", meta["step"])
        return int(meta["step"])

    def _step(self, x: torch.Tensor, y: torch.Tensor, capture: ReluCapture | None) -> float:
        model, obj = self.ctx.model, self.objective
        teacher, t_feats = None, []
        if obj.needs_teacher:
            with torch.no_grad():
                teacher = model(x)
                if capture is not None:
                    t_feats = [f.detach() for f in capture.take()]
        a = self.logits.detach().requires_grad_(True)
        noise = logistic_noise(self.numel, self.gen, self.device)
        student = functional_call(model, self._masked_weights(relaxed_mask(a, noise, self.o.tau)), (x,))
        s_feats = capture.take() if capture is not None else []
        r = obj.fn(student, teacher, y, s_feats, t_feats)
        (g_obj,) = torch.autograd.grad(self.scale * r, a)
        pi = keep_probability(self.logits.detach())
        reduce = self._reduce if self.ctx.dist is not None else None
        if self.cost is not None:
            used, g_used = self._expected_cost()
            g = self.balance.step(g_obj, pi, reduce=reduce, used=used, g_used=g_used)
        else:
            g = self.balance.step(g_obj, pi, reduce=reduce)
        if self.ctx.dist is not None:
            g = self.ctx.dist.all_reduce_mean(g)
        self.logits.grad = g
        self.opt.step()
        return float(r.detach())

    def _expected_cost(self) -> tuple[float, torch.Tensor]:
        """Expected cost of the unit keep probabilities and its gradient in the logits."""
        a = self.logits.detach().double().cpu().requires_grad_(True)
        used = self.cost.expected(torch.sigmoid(a))
        (g,) = torch.autograd.grad(used, a)
        return float(used.detach()), g.to(self.logits)

    def _progress_fields(self, r: float) -> dict[str, Any]:
        """The budget as the search sees it (expected density, or expected cost of dense), objective, lambda."""
        a = self.logits.detach()
        if self.cost is not None:
            budget = {"expected cost": f"{self._expected_cost()[0] / self.cost.dense:.4f} of dense "
                                       f"(budget {self.density:.4f})"}
        else:
            budget = {"expected density": f"{float(keep_probability(a).mean()):.4%} (target {self.density:.4%})"}
        lam = self.balance.lam
        return {**budget, "objective": r, "lambda": 0.0 if lam is None else float(lam)}

    def _record(self, step: int, epoch: int, r: float) -> dict[str, Any]:
        a = self.logits.detach()
        lam = self.balance.lam
        extra = {}
        if self.cost is not None:  # the budget's view: expected and 0/1 cost as fractions of dense
            extra = {"expected_cost_fraction": self._expected_cost()[0] / self.cost.dense,
                     "cost_fraction_at_zero": self.cost.fraction(a.cpu() > 0)}
        return {**extra, 
            "step": step,
            "epoch": epoch + 1,
            "expected_density": float(keep_probability(a).mean()),
            "true_density": float((a > 0).float().mean()),
            "lambda": 0.0 if lam is None else float(lam),
            "objective": r,
            "lr": self.opt.param_groups[0]["lr"],
            "logit_std": float(a.std()),
        }
