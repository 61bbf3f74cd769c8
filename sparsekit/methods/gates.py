"""Strong lottery tickets with continuously relaxed Bernoulli gates (docs/algorithms.md §3).

Only gate parameters are trained; every weight stays frozen at theta_K. Each gate (one per weight,
or one per output channel with ``--granularity channel``) is a relaxed Bernoulli variable:
hard concrete (default) or the Gaussian STG gate. The task loss (cross-entropy) is minimized through
sampled gates while GradBalance (§2.4) holds the expected L0 norm near the target, so no
per-target lambda needs tuning. The final mask is the exact top-k of the gate parameters
(``select``), which equals ranking by keep probability.

Deviations from the (unreadable) CRBG paper, which uses a plain lambda * L0 penalty (available as
``objective=l0`` with ``l0_lambda``: loss = CE + l0_lambda * mean keep probability):
  * by default the expected density is held exactly at the target by a uniform shift of the gate
    parameters after every step (``objective=project``, no annealing) plus a final exact top-k, instead
    of a tuned lambda, so ``--sparsity`` is met exactly. Measured on lenet300 / Fashion-MNIST (frozen
    kaiming-normal weights scaled, 938 steps; docs/gates-defaults.md, docs/benchmarks.md
    bench-slt): it beat one-sided GradBalance (the CTS rule, ``objective=gradbalance``: headroom 1.1,
    c_s 100, EMA 0.01; docs/algorithms.md §2.4) by 4.4 / 4.4 pt at 95 % and 3.9 / 0.8 pt at 90 % (seeds 0 / 1):
    below the target one-sided GradBalance is inactive, the CE objective closes gates by itself and
    the final top-k re-admits gates the search had closed (7-8 pt lost in the 0/1 conversion at 95 %).
    The previous default (projection with annealing, unscaled weights, lr 0.1) lost 24 pt at 95 %,
    mostly to the missing weight scale (the projection unscaled without annealing: 59.5 %), not to
    the projection. ``two_sided=true`` (GradBalance also pushes up below the target)
    oscillates: density 2.3 % -> 93.7 % -> 3.4 % during a 95 % search. ``l0`` is the paper's form;
  * the frozen weights are scaled per layer by 1 / sqrt(density) (``weight_scale=density``, the
    scaled init of edge-popup's code) and BN is non-affine (``bn_affine=false``); both are carried
    into the ticket (sparsekit.methods._strong);
  * optional: the relaxation annealed toward hard gates (``anneal``: hard-concrete beta 2/3 -> 0.1, or
    gaussian sigma -> 0.1, geometric in the step), the gate parameters clamped after every step
    (``clamp``: log_alpha in [log 1e-2, log 1e2] as in Louizos et al.'s code, mu in [-1.5, 1.5]) and
    a cosine Adam lr (``lr_schedule``);
  * gate parameters start at the target expected density (§3.4), not "open";
  * Adam lr 0.3 on the gate parameters (3x the CTS logit recipe; measured). ``lr_schedule=constant`` with
    ``lr_drop_at`` gives the old step drop (on Fashion-MNIST / LeNet-300-100 at 90 %, 3 epochs, a
    x0.1 drop at 88 % cost ~2 pp: seeds 0/1 80.2/78.0 % with it, 82.1/80.5 % without).

Diagnostics (info / run.json): ``gate_sparsity_before_topk`` (deterministic gates exactly 0 at the
end of the search), and ``accuracy_soft`` / ``accuracy_hard`` / ``conversion_loss``: test accuracy
on ``eval_batches`` test batches with the expected gates E[z] (32 samples at the final temperature)
vs the final 0/1 mask (BN in batch-statistics mode for both, so they differ only by the gates);
``accuracy_test_gate`` uses the deterministic test-time gate instead of E[z].

BatchNorm: during the search BN normalizes with batch statistics of the gated network (dropout
off), as CTS does. The BN running statistics of theta_K describe the dense network, so after the
search they are recomputed for the final binary mask and returned in ``state_updates``; the pipeline
loads them into the ticket.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit import paths
from sparsekit.errors import SettingError, TrainingDivergedError, UsageError
from sparsekit.masking.bn_stats import recalibrate_for_mask, set_bn_train
from sparsekit.masking.masked_forward import binary_multipliers, freeze, masked_call
from sparsekit.masking.relax.gaussian_gate import GaussianGate
from sparsekit.masking.relax.gradbalance import GradBalance
from sparsekit.masking.relax.hard_concrete import HardConcrete
from sparsekit.methods._search_loop import (
    EVAL_SALT,
    NOISE_SALT,
    LoopResult,
    SearchPlan,
    channel_setup,
    cosine,
    derived_seed,
    plan_search,
    run_search,
    step_drop,
)
from sparsekit.methods._strong import check_weight_scale, prepare_frozen, scale_factor
from sparsekit.methods.base import (
    METHODS,
    SearchContext,
    SearchMethod,
    SearchResult,
    select,
    select_unit_scores,
)
from sparsekit.methods.cts import settle_steps

log = logging.getLogger("sparsekit")

DEFAULT_SEARCH_EPOCHS = 10


def default_epochs(per_epoch: int, ema: float) -> int:
    """Default search length: DEFAULT_SEARCH_EPOCHS epochs, but at least GradBalance's settle length
    (4 / ema steps, 400 at the default ema) in whole epochs."""
    return max(DEFAULT_SEARCH_EPOCHS, math.ceil(settle_steps(ema) / max(per_epoch, 1)))

#: gate samples averaged for the expected-gate (soft) accuracy of the conversion diagnostic
EXPECTED_GATE_SAMPLES = 32
RELAXATIONS = ("hard-concrete", "gaussian")
#: sparsity control: GradBalance, an exact projection of the expected density after every step, or
#: the paper's plain lambda * L0 penalty
OBJECTIVES = ("gradbalance", "project", "l0")


@dataclass(frozen=True)
class Options:
    """Options of ``--method gates`` (defaults = the documented recipe)."""

    relaxation: str = field(default="hard-concrete", metadata={"help": "hard-concrete or gaussian"})
    lr: float = field(default=0.0, metadata={"help": "Adam lr of the gate parameters (0 = 0.3 for hard-concrete, 0.06 * sigma for gaussian)"})
    lr_drop_at: float = field(default=1.0, metadata={"help": "fraction of steps after which lr x0.1 (1 = never; CTS: 0.88)"})
    batch_size: int = field(default=0, metadata={"help": "search batch size (0 = the run's --batch-size)"})
    sigma: float = field(default=0.5, metadata={"help": "noise std of the gaussian gate"})
    # Louizos' 2/3: beta 0.3 once measured +0.6 to +1.8 pp (one seed, 3 epochs, unscaled weights) but
    # loses 0.5-1.2 pp on the holdout split at the current defaults (90 %, 3 seeds; docs/gates-defaults.md §4)
    temperature: float = field(default=2.0 / 3.0, metadata={"help": "hard-concrete temperature beta"})
    objective: str = field(default="project", metadata={"help": "project (the expected density held exactly at the target by a uniform shift after every step), gradbalance (the CTS rule: one-sided, headroom 1.1), or l0 (CE + l0_lambda * L0, the paper's form)"})
    l0_lambda: float = field(default=1.0, metadata={"help": "weight of the mean keep probability with objective=l0"})
    two_sided: bool = field(default=False, metadata={"help": "GradBalance also pushes the density up below the target (it oscillates: measured density swings 2.3 % -> 93.7 % -> 3.4 % at 95 %)"})
    anneal: bool = field(default=False, metadata={"help": "anneal temperature/sigma geometrically to temperature_final/sigma_final"})
    temperature_final: float = field(default=0.1, metadata={"help": "hard-concrete beta at the end of the search (anneal)"})
    sigma_final: float = field(default=0.1, metadata={"help": "gaussian sigma at the end of the search (anneal)"})
    clamp: bool = field(default=False, metadata={"help": "clamp gate parameters after each step so closed gates can reopen"})
    lr_schedule: str = field(default="constant", metadata={"help": "cosine (to 0 over the search) or constant (with lr_drop_at)"})
    eval_batches: int = field(default=4, metadata={"help": "test batches of 512 for the soft-vs-hard accuracy diagnostic (0 = skip)"})
    headroom: float = field(default=0.0, metadata={"help": "target = headroom * density (0 = 1.1 for one-sided gradbalance, the CTS rule; 1.0 for two-sided and project)"})
    c_s: float = field(default=100.0, metadata={"help": "GradBalance sparsity scaler"})
    ema: float = field(default=0.01, metadata={"help": "GradBalance EMA factor of lambda"})
    bn_batches: int = field(default=50, metadata={"help": "batches used to recompute BN statistics"})
    log_every: int = field(default=10, metadata={"help": "steps between search.jsonl records"})
    weight_scale: str = field(default="density", metadata={"help": "density (frozen weights x 1/sqrt(layer density)) or none"})
    bn_affine: bool = field(default=False, metadata={"help": "keep theta_K's BN scale/shift (false: non-affine BN, scale 1, shift 0)"})

    def __post_init__(self) -> None:
        check_weight_scale(self.weight_scale, "--method gates")
        if self.relaxation not in RELAXATIONS:
            raise SettingError(f"{{relaxation}} must be one of {', '.join(RELAXATIONS)}, got {self.relaxation!r}",
                               "relaxation")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise UsageError(f"gates option lr must be a positive number (0 = default), got {self.lr}")
        if not 0 <= self.lr_drop_at <= 1:
            raise UsageError(f"gates option lr_drop_at must be in [0, 1], got {self.lr_drop_at}")
        if self.batch_size < 0 or self.bn_batches < 0 or self.log_every <= 0:
            raise UsageError("gates options batch_size, bn_batches must be >= 0 and log_every > 0")
        if not self.temperature > 0:
            raise UsageError(f"gates option temperature must be positive, got {self.temperature}")
        if not self.sigma > 0:
            raise UsageError(f"gates option sigma must be positive, got {self.sigma}")
        if not self.headroom >= 0 or not self.c_s > 0 or not 0 < self.ema <= 1:
            raise UsageError("gates options need headroom >= 0 (0 = default), c_s > 0 and 0 < ema <= 1")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"gates option objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not (self.l0_lambda >= 0 and math.isfinite(self.l0_lambda)):
            raise UsageError(f"gates option l0_lambda must be >= 0, got {self.l0_lambda}")
        if not self.temperature_final > 0 or not self.sigma_final > 0:
            raise UsageError("gates options temperature_final and sigma_final must be positive")
        if self.lr_schedule not in ("cosine", "constant"):
            raise UsageError(f"gates option lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.eval_batches < 0:
            raise UsageError(f"gates option eval_batches must be >= 0, got {self.eval_batches}")

    def resolved_lr(self) -> float:
        """The learning rate; the default scales with the parameter's natural unit (log_alpha ~ 1,
        mu ~ sigma): measured on Fashion-MNIST/LeNet-300-100 at 90 %, 3 epochs, the gaussian gate
        reached 67.8 % with lr 0.1 and 80.8 % with lr 0.03 (sigma 0.5). Hard concrete: 0.3, measured on
        lenet300 / Fashion-MNIST (frozen weights scaled, objective=project, 938 steps, seed 0; bench-slt's
        grid): 0.3 vs 0.1 gave 82.9 / 83.3 vs 81.0 / 79.9 % at 95 % and 84.0 / 84.2 vs 80.3 / 81.6 % at 90 %
        (global / per-layer top-k)."""
        if self.lr > 0:
            return self.lr
        return 0.3 if self.relaxation == "hard-concrete" else 0.06 * self.sigma

    def resolved_headroom(self) -> float:
        """The target's headroom: 1.1 for one-sided GradBalance (the CTS rule: the penalty holds the soft
        mask near 1.1 x the budget, the final top-k meets it exactly), 1.0 where the control is two-sided."""
        if self.headroom > 0:
            return self.headroom
        return 1.1 if self.objective == "gradbalance" and not self.two_sided else 1.0

    def relaxation_obj(self) -> HardConcrete | GaussianGate:
        return HardConcrete(beta=self.temperature) if self.relaxation == "hard-concrete" else GaussianGate(self.sigma)

    def final_temperature(self) -> float:
        """Temperature (beta or sigma) at the end of the search; the initial one without annealing."""
        start = self.relaxation_obj().temperature
        if not self.anneal:
            return start
        return self.temperature_final if self.relaxation == "hard-concrete" else self.sigma_final


@dataclass
class _Layout:
    """Where each layer's gates live in the flat gate vector, and how they broadcast to the weight."""

    names: list[str]
    offsets: list[int]
    sizes: list[int]
    gate_shapes: list[tuple[int, ...]]  # weight shape, or (out, 1, ..., 1) for channel gates
    weight_shapes: list[tuple[int, ...]]
    channel: bool

    @classmethod
    def build(cls, params: dict[str, nn.Parameter], granularity: str) -> _Layout:
        names, offsets, sizes, gshapes, wshapes, off = [], [], [], [], [], 0
        for name, w in params.items():
            if granularity == "channel":
                gshape = (w.shape[0],) + (1,) * (w.dim() - 1)  # (out, 1, ..., 1)
            else:
                gshape = tuple(w.shape)
            n = math.prod(gshape)
            names.append(name)
            offsets.append(off)
            sizes.append(n)
            gshapes.append(gshape)
            wshapes.append(tuple(w.shape))
            off += n
        return cls(names, offsets, sizes, gshapes, wshapes, granularity == "channel")

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def slices(self) -> list[slice]:
        return [slice(o, o + n) for o, n in zip(self.offsets, self.sizes, strict=True)]

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: flat[s].view(g) for n, s, g in zip(self.names, self.slices(), self.gate_shapes, strict=True)}


def _density_shift(relax: Any, theta: torch.Tensor, target: float, iters: int = 30, tol: float = 1e-7) -> float:
    """Uniform shift c with mean keep_prob(theta + c) = target (Newton; keep_prob is monotone in c).

    Shifting every gate parameter by the same constant keeps their order (so the final top-k is
    unchanged by it) and makes the expected density exactly the target after every step: two-sided
    control with no multiplier dynamics to settle.
    """
    c = 0.0
    for _ in range(iters):
        t = theta + c
        err = float(relax.keep_prob(t).mean()) - target
        if abs(err) < tol:  # after the first step of a search one iteration is usually enough
            break
        slope = float(relax.keep_prob_grad(t).mean())
        if slope <= 1e-12:
            break
        c -= max(-4.0, min(4.0, err / slope))  # damped: big jumps only from a far start
    return c


def _cost_shift(relax: Any, theta: torch.Tensor, cost: Any, target: float) -> float:
    """Uniform shift c with expected cost(keep_prob(theta + c)) = target x dense (bisection; the cost
    only grows with c). The channel-level analogue of ``_density_shift``."""
    lo, hi = -30.0, 30.0
    base = theta.detach().double().cpu()
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        frac = float(cost.expected(relax.keep_prob(base + mid))) / cost.dense
        if frac < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _expected_cost(cost: Any, relax: Any, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Expected cost of the gates' keep probabilities and its gradient in the gate parameters."""
    t = theta.detach().double().cpu().requires_grad_(True)
    with torch.enable_grad():
        used = cost.expected(relax.keep_prob(t))
        (g,) = torch.autograd.grad(used, t)
    return float(used.detach()), g.to(theta)


def _reduce_grad(dist: Any, g: torch.Tensor) -> torch.Tensor:
    """Average a gradient across ranks (identity without a distributed context)."""
    if dist is None:
        return g
    out = dist.all_reduce_mean(g)
    return g if out is None else out


class _GatesSearch:
    """One gates search: the frozen network, the flat gate vector, its optimizer and sparsity control."""

    def __init__(self, ctx: SearchContext, o: Options) -> None:
        self.ctx, self.o = ctx, o
        self.relax0 = self.relax = o.relaxation_obj()
        self.device = torch.device(ctx.device)
        model = ctx.model.to(self.device)
        freeze(model)
        set_bn_train(model)
        self.layout = _Layout.build(ctx.params(), ctx.granularity)
        self.density = 1.0 - ctx.sparsity
        self.space, self.cost, self.init_density, budget_size = None, None, self.density, self.layout.total
        self.views = self.layout.views
        if ctx.granularity == "channel":
            # one gate per coupled channel unit; the budget is a cost of the unit keeps (channels, or
            # params/MACs/latency) and closed units also zero their biases and BN affine
            ch = channel_setup(ctx)
            self.space, self.cost, self.density = ch.space, ch.cost, ch.density
            self.init_density, budget_size = ch.init_density, ch.budget_size
            self.views = ch.space.multipliers
        n_gates = self.layout.total if self.space is None else self.space.size
        self.model, self.frozen = prepare_frozen(model, ctx.names, self.init_density, o.weight_scale,
                                                 o.bn_affine)
        self.headroom = o.resolved_headroom()
        # every gate starts at the target expected density (docs/algorithms.md §3.4)
        start = self.relax0.init_param(self.init_density)
        self.flat = nn.Parameter(torch.full((n_gates,), start, device=self.device))
        self.lr0 = o.resolved_lr()
        self.opt = torch.optim.Adam([self.flat], lr=self.lr0)
        self.segments, self.balancers = self._balancers(n_gates, budget_size)
        rank = getattr(ctx.dist, "rank", 0)
        self.gen = torch.Generator(device=self.device).manual_seed(derived_seed(ctx.seed, NOISE_SALT + rank))
        self.lo, self.hi = self.relax0.param_range()
        self.trajectory: list[float] = []
        self.total = 0

    def _balancers(self, n_gates: int, budget_size: float) -> tuple[list[slice], list[GradBalance]]:
        """GradBalance over all gates (global), or one per layer when the final top-k is per layer."""
        o = self.o
        segments = self.layout.slices() if self.ctx.layerwise and self.space is None else [slice(0, n_gates)]
        balancers = [
            GradBalance(self.density, s.stop - s.start if self.space is None else budget_size,
                        headroom=self.headroom, c_s=o.c_s, beta=o.ema, two_sided=o.two_sided)
            for s in segments
        ]
        return segments, balancers

    def plan(self) -> SearchPlan:
        """Batch size, length (default: ``default_epochs``) and, for GradBalance, the short-search warning."""
        o = self.o
        settle = None
        if o.objective == "gradbalance":
            settle = (settle_steps(o.ema), f"GradBalance's EMA, beta {o.ema}: 4 / beta")
        plan = plan_search(self.ctx, "gates", o.batch_size or self.ctx.train_cfg.batch_size,
                           lambda per_epoch: default_epochs(per_epoch, o.ema), settle=settle)
        self.total = plan.total
        return plan

    def schedule(self) -> Callable[[int], float]:
        """step -> Adam lr: cosine to 0, or constant with the x0.1 drop at ``lr_drop_at``."""
        if self.o.lr_schedule == "cosine":
            return cosine(self.lr0, self.total)
        return step_drop(self.lr0, int(self.o.lr_drop_at * self.total))

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> float:
        """One search step: sample the gates, CE through them, the sparsity control, Adam."""
        # geometric anneal of beta / sigma toward near-binary samples
        frac = step / self.total
        t_start, t_end = self.relax0.temperature, self.o.final_temperature()
        self.relax = self.relax0
        if t_end != t_start:
            self.relax = self.relax0.at_temperature(t_start * (t_end / t_start) ** frac)
        z = self.relax.sample(self.flat, self.gen)  # one gate sample per step, shared by the batch
        loss = F.cross_entropy(masked_call(self.model, self.views(z), x), y)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"gates search loss became {loss.item()} at step {step}")
        self.opt.zero_grad(set_to_none=True)
        if self.o.objective in ("l0", "project"):
            self._penalized_backward(loss)
        else:
            self._balanced_backward(loss)
        self.opt.step()
        self._hold_density()
        return loss.detach().item()

    def _penalized_backward(self, loss: torch.Tensor) -> None:
        """project: the CE gradient alone; l0: the paper's plain penalty, lambda * expected L0 (as a
        fraction of the gates, or of the dense cost)."""
        o, flat, cost = self.o, self.flat, self.cost
        pen = 0.0
        if o.objective == "l0":
            keep = self.relax.keep_prob(flat)
            pen = o.l0_lambda * (keep.mean() if cost is None
                                 else (cost.expected(keep.double().cpu()) / cost.dense).to(keep))
        (loss + pen).backward()
        flat.grad = _reduce_grad(self.ctx.dist, flat.grad)

    def _balanced_backward(self, loss: torch.Tensor) -> None:
        """GradBalance: the CE gradient rebalanced against the density (or expected cost) gradient."""
        loss.backward()
        g_obj = _reduce_grad(self.ctx.dist, self.flat.grad)
        relax, cost = self.relax, self.cost
        with torch.no_grad():
            theta = self.flat.detach()
            pi, dpi = relax.keep_prob(theta), relax.keep_prob_grad(theta)
            g = torch.empty_like(g_obj)
            if cost is not None:
                used, g_used = _expected_cost(cost, relax, theta)
                g = self.balancers[0].step(g_obj, pi, dpi=dpi, used=used, g_used=g_used)
            for s, gb in zip(self.segments if cost is None else [], self.balancers, strict=False):
                g[s] = gb.step(g_obj[s], pi[s], dpi=dpi[s])
        self.flat.grad = g

    @torch.no_grad()
    def _hold_density(self) -> None:
        """objective=project: shift the gates so the expected density (cost) is the target; clamp."""
        o, flat, target = self.o, self.flat, self.headroom * self.density
        if o.objective == "project" and self.cost is not None:
            flat += _cost_shift(self.relax, flat, self.cost, target)
        elif o.objective == "project":
            for s in self.segments:
                flat[s] += _density_shift(self.relax, flat[s], target)
        if o.clamp:
            flat.clamp_(self.lo, self.hi)

    @torch.no_grad()
    def record(self, step: int, epoch: int, loss: float) -> dict[str, Any]:
        """One search.jsonl record (its expected density also kept for the info's trajectory)."""
        theta = self.flat.detach()
        rec = {
            "step": step,
            "epoch": epoch + 1,
            "loss": loss,
            "expected_density": float(self.relax.keep_prob(theta).double().mean()),
            "gate_density": float((self.relax.test_gate(theta) > 0).double().mean()),
            "lambda": [gb.lam for gb in self.balancers],
            "lr": self.opt.param_groups[0]["lr"],
            "temperature": self.relax.temperature,
        }
        self.trajectory.append(rec["expected_density"])
        return rec

    @torch.no_grad()
    def progress_fields(self, loss: float) -> dict[str, Any]:
        """The budget as the search sees it (expected density, or expected cost of dense) and the loss."""
        keep = self.relax.keep_prob(self.flat.detach())
        if self.cost is not None:
            frac = float(self.cost.expected(keep.double().cpu())) / self.cost.dense
            return {"expected cost": f"{frac:.4f} of dense (budget {self.density:.4f})", "loss": loss}
        density = float(keep.double().mean())
        return {"expected density": f"{density:.4%} (target {self.density:.4%})", "loss": loss}

    @torch.no_grad()
    def final_gates(self) -> dict[str, torch.Tensor]:
        """The gates the diagnostics compare: the test-time gate and E[z] under the final relaxation
        (what the search trained), Monte Carlo over EXPECTED_GATE_SAMPLES samples."""
        theta = self.flat.detach()
        g_eval = torch.Generator(device=self.device).manual_seed(derived_seed(self.ctx.seed, EVAL_SALT))
        samples = [self.relax.sample(theta, g_eval) for _ in range(EXPECTED_GATE_SAMPLES)]
        expected = torch.stack(samples).mean(0)
        return {"soft": expected, "test_gate": self.relax.test_gate(theta)}

    def info(self, plan: SearchPlan, loop: LoopResult, mask: Any) -> dict[str, Any]:
        """The search's settings and end state for run.json (before the conversion diagnostic)."""
        o, theta = self.o, self.flat.detach()
        with torch.no_grad():
            soft = self.relax.test_gate(theta)
            expected_density = float(self.relax.keep_prob(theta).double().mean())
        return {
            "relaxation": o.relaxation,
            "objective": o.objective,
            "two_sided": o.two_sided,
            "headroom": self.headroom,
            "anneal": o.anneal,
            "weight_scale": o.weight_scale,
            "weight_scale_factor": scale_factor(self.init_density, o.weight_scale),
            "bn_affine": o.bn_affine,
            "lr": self.lr0,
            "granularity": self.ctx.granularity,
            "search_epochs": plan.epochs,
            "steps": loop.steps,
            "batch_size": plan.batch_size,
            "search_s": loop.seconds,
            "temperature_final": self.relax.temperature,
            "expected_density_final": expected_density,
            "gate_sparsity_before_topk": float((soft == 0).double().mean()),
            "gate_binary_fraction": float(((soft == 0) | (soft == 1)).double().mean()),
            "sparsity": mask.sparsity,
        }


@METHODS.register("gates", help="strong tickets: relaxed Bernoulli gates over frozen weights (hard-concrete/gaussian)")
class GatesMethod(SearchMethod):
    """Train only gates over frozen weights; exact top-k of the gate parameters at the end."""

    Options = Options
    learned_search = True
    granularities = ("weight", "channel")
    cost_budgets = True
    default_finetune_epochs = 0

    def search(self, ctx: SearchContext) -> SearchResult:
        o: Options = self.options
        s = _GatesSearch(ctx, o)
        plan = s.plan()
        loop = run_search(ctx, plan, s.step, opt=s.opt, lr_at=s.schedule(),
                          log_path=paths.search_log(ctx.run_dir) if ctx.run_dir is not None else None,
                          record=s.record, progress_fields=s.progress_fields, log_every=o.log_every,
                          record_always=True)
        with torch.no_grad():
            theta = s.flat.detach()
            if s.space is not None:
                mask, selection = select_unit_scores(theta.double().cpu(), s.space, ctx)
            else:
                mask, selection = select(self._scores(s.layout, theta), ctx), {}
        conversion = self._conversion(s.model, s.views, s.final_gates(), mask, ctx, o.eval_batches)
        recalibrated = recalibrate_for_mask(s.model, mask, ctx, plan.batch_size, o.bn_batches)
        state_updates = {**s.frozen, **recalibrated}
        info = {
            **s.info(plan, loop, mask),
            **conversion,
            "lambda_final": [gb.lam for gb in s.balancers],
            "expected_density_trajectory": s.trajectory[:: max(1, len(s.trajectory) // 50)],
            "bn_recalibrated": sorted({k.rsplit(".", 1)[0] for k in state_updates}),
            **selection,
        }
        if plan.warning:
            info["warnings"] = [plan.warning]
        return SearchResult(mask, info, state_updates=state_updates)

    @staticmethod
    @torch.no_grad()
    def _conversion(model: nn.Module, views: Any, gates: dict[str, torch.Tensor], mask: Any,
                    ctx: SearchContext, batches: int) -> dict[str, Any]:
        """Accuracy with soft gates vs the final 0/1 mask on a few test batches.

        ``soft``: the expected gates E[z] at the final temperature (the network the search trained);
        ``test_gate``: Louizos et al.'s deterministic test-time gate. BN normalizes with batch
        statistics in all (as during the search), so they differ only by the gates;
        ``conversion_loss`` = accuracy_soft - accuracy_hard (fraction of 1).
        """
        if batches <= 0:
            return {}
        device = torch.device(ctx.device)
        mults = {k: views(g) for k, g in gates.items()}
        mults["hard"] = binary_multipliers(mask, device)
        right = dict.fromkeys(mults, 0)
        n = 0
        for x, y in ctx.data.batches("test", 512, limit=512 * batches):
            x, y = x.to(device), y.to(device)
            for k, m in mults.items():
                right[k] += int((masked_call(model, m, x).argmax(1) == y).sum())
            n += len(y)
        if n == 0:
            return {}
        acc = {k: v / n for k, v in right.items()}
        return {"accuracy_soft": acc["soft"], "accuracy_test_gate": acc["test_gate"], "accuracy_hard": acc["hard"],
                "conversion_loss": acc["soft"] - acc["hard"], "conversion_eval_samples": n}

    @staticmethod
    def _scores(layout: _Layout, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-weight scores for ``select``: the gate parameters, monotone in the keep probability.

        Channel mode: ``select`` ranks channels by mean |score|, so the parameters are shifted to be
        positive (a monotone map, ranking unchanged) and broadcast to the weight shape.
        """
        theta = theta.double().cpu()
        if layout.channel:
            theta = theta - theta.min() + 1.0
        views = layout.views(theta)
        return {n: views[n].expand(w) for n, w in zip(layout.names, layout.weight_shapes, strict=True)}
