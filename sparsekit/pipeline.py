"""The prune pipeline: pretrain K epochs -> search the mask at theta_K -> fine-tune E epochs -> evaluate.

Every stage records its completion in run.json after its files are written, so an interrupted run
never looks complete, and rerunning the same configuration skips the stages already done.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsekit import paths
from sparsekit._io import append_jsonl, load_tensors, save_tensors
from sparsekit.binary_mask import Mask, sparsity_of
from sparsekit.cost.budget import (
    Budget,
    check_granularity,
    for_search,
    is_weight_latency,
    parse_budget,
)
from sparsekit.data.bundle import DataBundle, load_dataset
from sparsekit.errors import ArtifactError, SettingError, UsageError
from sparsekit.masking.bn_stats import recalibrate_on_data
from sparsekit.masking.coupling.channel_groups import training_mask
from sparsekit.masking.prunable import PrunePolicy, prunable_tensors, unprunable_weights
from sparsekit.masking.select.collapse import check_layer_collapse
from sparsekit.methods import METHODS, SearchContext, get_method
from sparsekit.models.init import apply_weight_init
from sparsekit.models.registry import ModelSpec, build_model, default_policy
from sparsekit.ticket import (  # the run record: legacy defaults, stored configs, the run.json writer
    LEGACY_CONFIG,
    SCHEMA_VERSION,
    RunRecord,
    Ticket,
    library_versions,
    load_state,
    save_state,
    stored_config,  # noqa: F401  (re-exported: it lived here before the record)
    stored_train_config,  # noqa: F401  (re-exported: it lived here before the record)
    write_meta,
)
from sparsekit.train.loop import TrainConfig, evaluate, resolve_augment, train_epochs

log = logging.getLogger("sparsekit")

DEFAULT_PRETRAIN_EPOCHS = 1
DEFAULT_FINETUNE_EPOCHS = 3

@dataclass(frozen=True)
class PruneConfig:
    """Configuration of one ``prune`` run (every CLI option of ``sparsekit prune``)."""

    model: str = field(metadata={"help": "registered model, tv:NAME, pkg.mod:factory or file.py:factory"})
    data: str = field(metadata={"help": "fashion-mnist, mnist, cifar10, imagefolder:PATH, synthetic"})
    method: str = field(metadata={"help": "search method", "cli_help": "search method (sparsekit list methods)"})
    sparsity: float = field(metadata={"help": "fraction of prunable weights (channels at channel granularity) removed, 0 <= s < 1",
                                         "cli_help": "fraction of prunable weights (channels with --granularity channel) removed, 0 <= s < 1; or give --budget",
                                         "cli_type": "str | None", "cli_default": None})
    out: str = field(metadata={"help": "run directory to write"})
    seed: int = field(default=0, metadata={"help": "seed for init, data order and search"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    pretrain_epochs: int = field(default=DEFAULT_PRETRAIN_EPOCHS, metadata={"help": "dense epochs before the search (rewind point K)"})
    finetune_epochs: int | None = field(default=None, metadata={"help": "ticket training epochs (None: method default)",
                                                 "cli_help": "ticket training epochs [default: 3; 0 for gates/edge-popup]"})
    search_epochs: int | None = field(default=None, metadata={"help": "epochs of a learned-mask search (None: method default)",
                                               "cli_help": "epochs of a learned-mask search (cts, gates, edge-popup) [default: cts: the training budget (pretrain + fine-tune epochs, the reference's rule) but at least 2,000 steps (the reference's shortest search) and at least GradBalance's 4/ema = 400 steps, in whole epochs; gates: 10 epochs, at least 400 steps; edge-popup: 10 epochs]"})
    search_steps: int | None = field(default=None, metadata={"help": "steps of a learned-mask search, instead of epochs (None: use epochs)",
                                              "cli_help": "steps of a learned-mask search, instead of --search-epochs"})
    batch_size: int = field(default=128, metadata={"help": "training batch size"})
    lr: float = field(default=0.1, metadata={"help": "SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay"})
    data_dir: str | None = field(default=None, metadata={"help": "directory holding the dataset files"})
    download: bool = field(default=False, metadata={"help": "allow torchvision downloads", "flag": "--download/--no-download"})
    layerwise: bool = field(default=False, metadata={"help": "per-layer budgets instead of one global ranking", "flag": "--layerwise/--global"})
    granularity: str | None = field(default=None, metadata={"help": "weight or channel (None: the method's first, weight for most)",
                                                  "cli_help": "weight or channel (whole output channels) [default: weight; channel for *-channel and tp-* methods]"})
    channel_multiple: int = field(default=1, metadata={"help": "round kept channels per coupling family to a multiple of N (channel granularity)",
                                             "cli_help": "channel granularity with --layerwise or a --budget: round kept channels per coupling family to a multiple of N (8 suits CPU kernels)"})
    budget: str | None = field(default=None, metadata={"help": "params=F, macs=F or latency=MS (None: the sparsity alone)",
                                          "cli_help": "params=F (fraction of weights kept), macs=F (fraction of the dense MACs kept) or latency=MS; macs and dense-runtime latency need --granularity channel, sparse-cpu latency --granularity weight"})
    budget_runtime: str = field(default="ort-cpu", metadata={"help": "runtime of a latency budget's table",
                                                 "cli_help": "runtime whose measured per-layer latency a latency budget uses: ort-cpu, torch-cpu, openvino-cpu (channel tickets) or sparse-cpu (weight tickets)"})
    budget_batch: int = field(default=1, metadata={"help": "batch size of a latency budget"})
    budget_threads: int = field(default=1, metadata={"help": "threads of a latency budget"})
    include: tuple[str, ...] = field(default=("*",), metadata={"help": "FQN patterns of prunable weights", "cli_help": "FQN pattern of prunable weights (repeatable)"})
    exclude: tuple[str, ...] | None = field(default=None, metadata={"help": "FQN patterns left dense (None: model default)", "cli_help": "FQN pattern left dense (repeatable)"})
    weight_init: str = field(default="default", metadata={"help": "default, kaiming-normal, signed-kaiming-constant, kaiming-uniform (U(+-sqrt(6/fan_in))), uniform (U(-1, 1), unscaled; before 2026-12-03 an alias of kaiming-uniform)"})
    method_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "method-specific options (sparsekit list methods -v)", "flag": "--opt",
                                                  "cli_help": "method option KEY=VALUE (repeatable; sparsekit list methods -v lists them). gates: objective=project (default: expected density held at the target) | gradbalance (one-sided, the CTS rule) | l0; two_sided=true makes gradbalance push up below the target too, but it oscillates (density 2.3 % -> 93.7 % -> 3.4 % in a 95 % search); bn_affine=true keeps BN scale/shift (default: non-affine BN for strong tickets)"})
    dense_reference: bool = field(default=True, metadata={"help": "also train the dense reference with the same budget", "flag": "--dense/--no-dense"})
    force: bool = field(default=False, metadata={"help": "redo completed stages of an existing run", "flag": "--force"})
    schedule: str = field(default="cosine", metadata={"help": "LR schedule over pretrain + fine-tune epochs: cosine, step (x0.1 at 50%/75%), constant"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear LR warm-up epochs"})
    augment: str = field(default="auto", metadata={"help": "auto (crop+flip for 3-channel images >= 32x32, else none), none, crop-flip"})
    grad_clip: float = field(default=0.0, metadata={"help": "max global gradient norm (0 = off)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing in [0, 1)"})
    allow_layer_collapse: bool = field(default=False, metadata={"help": "keep a mask that leaves a prunable layer with 0 weights (else exit 1)",
                                                       "flag": "--allow-layer-collapse"})
    eval_limit: int | None = field(default=None, metadata={"help": "evaluate on the first N test samples only (None: all)",
                                                  "cli_help": "evaluate on the first N test samples only (quick looks)"})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes decoding image-folder samples (0 = main process)"})
    bn_recalibrate: bool = field(default=True, metadata={
        "help": "recompute BN running statistics after fine-tuning, for the ticket and the dense reference "
                "(exact average over 20 seeded training batches of 256; no-op without BN)",
        "flag": "--bn-recalibrate/--no-bn-recalibrate"})
    diagnose: bool = field(default=True, metadata={
        "help": "evaluate the mask at theta_K before fine-tuning (accuracy_before_finetune; BN statistics of the "
                "masked network recomputed first: on resnet20 ~6 s of a ~25 s magnitude ticket). sparsekit sweep "
                "turns it off: a frontier needs only the trained tickets",
        "flag": "--diagnose/--no-diagnose"})

    def __post_init__(self) -> None:
        if not isinstance(self.sparsity, (int, float)) or not math.isfinite(self.sparsity) or not 0 <= self.sparsity < 1:
            raise SettingError(f"{{sparsity}} must be a number in [0, 1), got {self.sparsity!r}", "sparsity")
        for name in ("pretrain_epochs", "finetune_epochs", "search_epochs", "search_steps"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise SettingError(f"{{{name}}} must be >= 0, got {v}", name)
        if self.channel_multiple < 1:
            raise SettingError(f"{{channel_multiple}} must be >= 1, got {self.channel_multiple}", "channel_multiple")
        method = METHODS.get(self.method)  # unknown method -> UsageError with "did you mean"
        if self.granularity is None:
            object.__setattr__(self, "granularity", method.granularities[0])
        if self.granularity not in ("weight", "channel"):
            raise SettingError(f"{{granularity}} must be weight or channel, got {self.granularity!r}", "granularity")
        # the one parse of --budget and its runtime/batch/threads (``parsed_budget``, ``search_budget``)
        object.__setattr__(self, "_budget", None if self.budget is None else
                           parse_budget(self.budget, self.budget_runtime, self.budget_batch, self.budget_threads))
        budget = self.parsed_budget()
        cost_budget = self.search_budget() is not None
        check_granularity(budget, self.granularity)  # macs/dense-runtime latency: channel; sparse-cpu: weight
        if budget is not None and budget.kind == "params" and self.granularity == "weight" \
                and abs(self.sparsity - (1.0 - budget.value)) > 1e-12:
            raise UsageError(f"--budget params={budget.value:g} is --sparsity {1 - budget.value:g}; give one of them")
        if cost_budget and self.layerwise:
            raise UsageError("--layerwise splits a count budget per layer; a params/macs/latency budget is one "
                             "global cost: drop --layerwise")
        if cost_budget and self.granularity == "channel" and not getattr(method, "cost_budgets", False):
            raise UsageError(f"--method {self.method} does not take a --budget {budget.kind}= at channel granularity "
                             "(methods that do: sparsekit list methods)")
        if is_weight_latency(budget, self.granularity) and not getattr(method, "weight_latency_budgets", False):
            raise UsageError(f"--method {self.method} does not take a --budget latency= at weight granularity "
                             "(methods that do: " + ", ".join(n for n in METHODS.names() if "weight" in
                                                               METHODS.get(n).granularities and
                                                               getattr(METHODS.get(n), "weight_latency_budgets", False))
                             + ")")
        if self.channel_multiple != 1 and not (self.granularity == "channel" and (self.layerwise or cost_budget)):
            # it rounds per-family channel budgets; a global channel count has none to round
            raise SettingError("{channel_multiple} rounds kept channels per coupling family: it needs {granularity} "
                               "channel and {layerwise} or a {budget}", "channel_multiple", "granularity", "layerwise",
                               "budget")
        if self.workers < 0:
            raise UsageError(f"--workers must be >= 0, got {self.workers}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise SettingError(f"{{eval_limit}} must be >= 1, got {self.eval_limit}", "eval_limit")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SettingError(f"{{device}} must be cpu or cuda, got {self.device!r}", "device")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SettingError("{device} cuda requested but CUDA is not available on this machine", "device")
        if self.search_epochs is not None and self.search_steps is not None:
            raise SettingError("give {search_epochs} or {search_steps}, not both", "search_epochs", "search_steps")
        if getattr(method, "learned_search", False) and 0 in (self.search_epochs, self.search_steps):
            what = "{search_steps} 0" if self.search_steps == 0 else "{search_epochs} 0"
            raise SettingError(f"{{method}} {self.method}: {what} is a search of 0 steps, which returns the "
                               "untrained initial mask (a disconnected network); give at least one step",
                               "method", "search_steps", "search_epochs")

    def parsed_budget(self) -> Budget | None:
        """The ``--budget`` as a Budget (None without one), parsed once when the config is made."""
        return self._budget  # type: ignore[attr-defined]

    def search_budget(self) -> Budget | None:
        """The Budget the search selects against (None: a count, ``--sparsity`` or params= at weight level)."""
        return for_search(self.parsed_budget(), self.granularity)

    def train_config(self, in_shape: tuple[int, ...] = ()) -> TrainConfig:
        """The one recipe of dense pretraining, ticket fine-tuning, the dense reference and every LTR
        round; the schedule spans pretrain + fine-tune epochs (``augment="auto"`` is resolved for
        ``in_shape``, the data's (C, H, W))."""
        return TrainConfig(self.lr, self.momentum, self.weight_decay, self.batch_size, self.grad_clip, self.device,
                           schedule=self.schedule, warmup_epochs=self.warmup_epochs,
                           horizon_epochs=self.pretrain_epochs + self.resolved_finetune_epochs(),
                           augment=resolve_augment(self.augment, in_shape), label_smoothing=self.label_smoothing)

    def policy(self) -> PrunePolicy:
        exclude = self.exclude if self.exclude is not None else default_policy(self.model).exclude
        return PrunePolicy(tuple(self.include), tuple(exclude))

    def resolved_finetune_epochs(self) -> int:
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        default = METHODS.get(self.method).default_finetune_epochs
        return DEFAULT_FINETUNE_EPOCHS if default is None else default

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (a rerun with the same identity may resume)."""
        d = asdict(self)
        for k in ("out", "force", "data_dir", "download", "device", "allow_layer_collapse", "workers", "diagnose"):
            d.pop(k)
        d["include"], d["exclude"] = list(self.policy().include), list(self.policy().exclude)
        if d.get("eval_limit") is None:
            d.pop("eval_limit", None)  # the full test set: runs written before the option still resume
        for k, legacy in LEGACY_CONFIG.items():
            if k in d and d[k] == legacy:
                d.pop(k)  # the behaviour of runs written before the option existed: they still resume
        return d


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


class _Stages:
    """Per-stage completion bookkeeping inside run.json."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.record = out, RunRecord(meta)

    def done(self, name: str) -> bool:
        return self.record.stage_done(name)

    def finish(self, name: str, **info: Any) -> None:
        self.record.stages[name] = {"complete": True, **info}
        self.record.save(self.out)
        # the stage's files are safe now; its mid-stage checkpoint is no longer needed
        paths.checkpoint(self.out, name).unlink(missing_ok=True)
        paths.checkpoint_meta(self.out, name).unlink(missing_ok=True)


def _start_meta(cfg: PruneConfig, out: Path, spec: ModelSpec) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "model": spec.to_dict(),
        "data": {"name": cfg.data},
        "method": {"name": cfg.method, "options": dict(cfg.method_options)},
        "config": cfg.identity(),
        "seed": cfg.seed,
        "target_sparsity": cfg.sparsity,
        "stages": {},
        "timings": {},
        "metrics": {},
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _existing_meta(cfg: PruneConfig, out: Path) -> dict[str, Any] | None:
    """Meta of a previous run of the same configuration in ``out`` (None: start fresh)."""
    if not RunRecord.exists(out):
        if out.exists() and any(p.name != ".write-probe" for p in out.iterdir()):
            raise UsageError(f"--out {out} exists and is not a sparsekit run; choose an empty directory")
        return None
    if cfg.force:
        return None
    try:
        meta = RunRecord.load(out, require_complete=False).raw
    except ArtifactError:
        return None
    if meta.get("config") != cfg.identity():
        raise UsageError(f"--out {out} holds a run with a different configuration; pass --force to overwrite it")
    return meta


def prune(cfg: PruneConfig, data: DataBundle | None = None, dist: Any = None) -> dict[str, Any]:
    """Run the whole pipeline and return the result summary (also stored in run.json).

    Nothing half-written: if it fails (missing data, NaN loss, bad model, ...) a run directory that
    did not exist before is removed, and one holding a complete run replaced with ``force`` is put
    back as it was; an interruption keeps the new directory so the same command resumes it.

    Example:
        >>> prune(PruneConfig("lenet300", "synthetic", "magnitude", 0.9, "runs/x"))  # doctest: +SKIP
    """
    from sparsekit._io import guarded_dir

    out = Path(cfg.out)
    replacing = cfg.force and dist is None and _holds_complete_run(out)
    with guarded_dir(out, enabled=getattr(dist, "rank", 0) == 0, backup=replacing):
        return _prune(cfg, data, dist)


def _holds_complete_run(out: Path) -> bool:
    try:
        return RunRecord.load(out, require_complete=False).complete
    except ArtifactError:
        return False


def _check_budget(cfg: PruneConfig, model: torch.nn.Module, names: list[str]) -> None:
    """Refuse a sparsity that keeps no weight (globally, or in some layer with --layerwise)."""
    if cfg.granularity != "weight":
        return
    params = dict(model.named_parameters())
    sizes = {n: params[n].numel() for n in names if n in params}
    total = sum(sizes.values())
    if total and total - round(cfg.sparsity * total) < 1:
        raise SettingError(f"{{sparsity}} {cfg.sparsity} keeps 0 of the {total:,} prunable weights; "
                           f"the largest that keeps one is {(total - 1) / total:.9g}", "sparsity")
    if cfg.layerwise:
        for n, size in sizes.items():
            if size - round(cfg.sparsity * size) < 1:
                raise SettingError(f"{{sparsity}} {cfg.sparsity} with {{layerwise}} keeps 0 of the {size:,} weights "
                                   f"of {n}; use at most {(size - 1) / size:.6g} or {{exclude}} it",
                                   "sparsity", "layerwise", "exclude")


@dataclasses.dataclass
class _Run:
    """What every stage of one prune run shares (built by ``_setup``, read by the stage functions)."""

    cfg: PruneConfig
    data: DataBundle
    dist: Any
    out: Path
    is_main: bool
    spec: ModelSpec
    tcfg: Any
    method: Any
    model: torch.nn.Module
    names: list[str]
    meta: dict[str, Any]
    stages: _Stages
    latency: Any = None  # the LatencySource of a latency budget (sparsekit.cost.latency), prepared by _setup

    @property
    def record(self) -> RunRecord:
        """The run record being written (wraps ``meta``, the same JSON object)."""
        return self.stages.record

    def log_epoch(self, rec: dict) -> None:
        log.info("%s epoch %d: loss %.4f (%.1fs)", rec["stage"], rec["epoch"], rec["train_loss"], rec["seconds"])
        if self.is_main:
            append_jsonl(paths.metrics_log(self.out), rec)

    def evaluate(self, model: torch.nn.Module) -> float:
        from sparsekit.progress import step

        with step("evaluating on the test split"):
            return evaluate(model, self.data, device=self.cfg.device, limit=self.cfg.eval_limit)["accuracy"]


def _prune(cfg: PruneConfig, data: DataBundle | None, dist: Any) -> dict[str, Any]:
    run = _setup(cfg, data, dist)
    if isinstance(run, dict):  # already complete: its stored result
        return run
    theta_k = _stage_pretrain(run)
    mask, state_updates = _stage_search(run, theta_k)
    held = _ticket_at_theta_k(run, theta_k, mask, state_updates)
    _stage_finetune(run, held, state_updates)
    run.record.metrics["accuracy"] = run.evaluate(run.model)
    measured = sparsity_of(run.model, run.names)
    _stage_dense(run, theta_k)
    return _finish(run, mask, measured)


def _setup(cfg: PruneConfig, data: DataBundle | None, dist: Any) -> _Run | dict[str, Any]:
    """Validate every input before anything is written; start or resume run.json."""
    out = Path(cfg.out)
    is_main = getattr(dist, "rank", 0) == 0
    if data is None:
        data = load_dataset(cfg.data, cfg.data_dir, cfg.download)
        data.workers = cfg.workers
    spec = ModelSpec(cfg.model, data.in_shape, data.num_classes)
    tcfg = cfg.train_config(data.in_shape)
    method = get_method(cfg.method, cfg.method_options)
    if cfg.granularity not in method.granularities:
        raise SettingError(f"{{method}} {cfg.method} supports {{granularity}} {'/'.join(method.granularities)}, "
                           f"not {cfg.granularity!r}", "method", "granularity")
    model = build_model(spec, seed=cfg.seed)
    names = list(prunable_tensors(model, cfg.policy()))
    _check_budget(cfg, model, names)
    latency = _latency_source(cfg, model, names, data.in_shape, out if is_main else None)
    apply_weight_init(model, names, cfg.weight_init, cfg.seed)
    dense_attention = unprunable_weights(model)
    if dense_attention:  # say so: a ViT ticket's sparsity covers the MLPs and heads, not attention
        log.warning("note: %d attention projection weight(s) (%s parameters, e.g. %s) are not Conv/Linear "
                    "weights and stay dense; --sparsity counts only the %d prunable Conv/Linear weights",
                    len(dense_attention), f"{sum(dense_attention.values()):,}", next(iter(dense_attention)),
                    len(names))
    if is_main:
        _check_writable(out)
    meta = _existing_meta(cfg, out)
    if dist is not None:
        dist.barrier()  # every rank has read the same run.json before rank 0 writes it
    if meta is not None and meta.get("complete"):
        log.info("run %s is already complete; nothing to do (use --force to redo it)", out)
        return meta["result"]
    if meta is None:
        meta = _start_meta(cfg, out, spec)
        if is_main:
            stale = [paths.final_weights(out), paths.dense_weights(out), paths.metrics_log(out), paths.search_log(out),
                     paths.search_state(out)]
            for stage in ("pretrain", "search", "finetune", "dense"):
                stale += [paths.checkpoint(out, stage), paths.checkpoint_meta(out, stage)]
            for f in stale:
                f.unlink(missing_ok=True)
            write_meta(out, meta)
    meta["recipe"] = tcfg.to_dict()  # the resolved training recipe (augment "auto" -> what ran)
    meta["left_dense"] = dense_attention  # weights no method prunes (attention projections), with sizes
    return _Run(cfg, data, dist, out, is_main, spec, tcfg, method, model, names, meta, _Stages(out, meta),
                latency)


def _latency_source(cfg: PruneConfig, model: torch.nn.Module, names: list[str], in_shape: tuple[int, ...],
                    out: Path | None) -> Any:
    """The LatencySource a latency budget's search spends (tables measured in sparsekit.bench); a
    sparse-cpu budget the engine cannot reach is refused here, before any training."""
    budget = cfg.parsed_budget()
    if budget is None or budget.kind != "latency":
        return None
    from sparsekit.cost.latency import prepare

    source = prepare(budget, out)
    if is_weight_latency(budget, cfg.granularity):
        source.for_weights(model, names, tuple(in_shape)).check(budget.value)
    return source


def _stage_pretrain(run: _Run) -> dict[str, torch.Tensor]:
    """1. The dense model at the rewind point theta_K; returns a copy of theta_K's state."""
    cfg, model, out = run.cfg, run.model, run.out
    if run.stages.done("pretrain"):
        load_state(model, Ticket(out, run.record).state("theta_k"), str(out))
    else:
        t0 = time.perf_counter()
        train_epochs(model, run.data, run.tcfg, cfg.pretrain_epochs, seed=cfg.seed, on_epoch=run.log_epoch,
                     stage="pretrain", ddp=run.dist, checkpoint=paths.checkpoint(out, "pretrain"))
        secs = time.perf_counter() - t0
        if run.is_main:
            save_state(paths.theta_k(out), model)
        run.record.timings["pretrain_s"] = secs
        run.record.metrics["accuracy_at_theta_k"] = run.evaluate(model)
        if run.is_main:
            run.stages.finish("pretrain", epochs=cfg.pretrain_epochs)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _stage_search(run: _Run, theta_k: dict[str, torch.Tensor]) -> tuple[Mask, dict[str, torch.Tensor]]:
    """2. Search the mask at theta_K on a private copy; returns (mask, buffers the search set)."""
    cfg, out = run.cfg, run.out
    if run.stages.done("search"):
        mask = Mask.load(paths.mask(out))
        state_updates = load_tensors(paths.search_state(out)) if paths.search_state(out).is_file() else {}
        return mask, state_updates
    ctx = SearchContext(
        model=copy.deepcopy(run.model),
        data=run.data,
        names=run.names,
        sparsity=cfg.sparsity,
        layerwise=cfg.layerwise,
        granularity=cfg.granularity,
        seed=cfg.seed,
        train_cfg=run.tcfg,
        pretrain_epochs=cfg.pretrain_epochs,
        finetune_epochs=cfg.resolved_finetune_epochs(),
        run_dir=out if run.is_main else None,
        device=cfg.device,
        dist=run.dist,
        theta_k=theta_k,
        search_epochs=cfg.search_epochs,
        search_steps=cfg.search_steps,
        channel_multiple=cfg.channel_multiple,
        budget=cfg.search_budget(),
        latency=run.latency,
    )
    t0 = time.perf_counter()
    result = run.method.search(ctx)
    secs = time.perf_counter() - t0
    mask, state_updates = result.mask, result.state_updates
    mask.validate(run.model)
    collapsed = check_layer_collapse(mask, cfg.allow_layer_collapse, cfg.method)
    if collapsed:
        result.info["collapsed_layers"] = collapsed
        log.warning("warning: %d prunable layer(s) keep 0 weights (--allow-layer-collapse): %s",
                    len(collapsed), ", ".join(collapsed))
    run.record.timings["search_s"] = secs
    run.meta["method"]["info"] = result.info
    if run.is_main:
        mask.save(paths.mask(out))
        if state_updates:
            save_tensors(paths.search_state(out), state_updates)
        run.stages.finish("search")
    return mask, state_updates


def _ticket_at_theta_k(run: _Run, theta_k: dict[str, torch.Tensor], mask: Mask,
                       state_updates: dict[str, torch.Tensor]) -> Mask:
    """Restore theta_K (+ what the search set) and return the mask held while training."""
    load_state(run.model, theta_k, "theta_k")
    run.model.load_state_dict(state_updates, strict=False)  # e.g. BN statistics of the masked network
    # the mask held while training: channel tickets also zero the BN affine/bias of dead channels
    # (else they emit a constant and cannot be removed); mask.safetensors keeps the prunable weights
    held = _held_mask(run.cfg.granularity, run.model, mask, run.data.in_shape)
    if run.cfg.diagnose and "accuracy_before_finetune" not in run.record.metrics:
        run.record.metrics["accuracy_before_finetune"] = _untrained_mask_accuracy(run.model, held, run.data,
                                                                                  run.cfg)
    return held


def _stage_finetune(run: _Run, held: Mask, state_updates: dict[str, torch.Tensor]) -> None:
    """3. Fine-tune the ticket from theta_K with the mask held exactly."""
    cfg, model, out = run.cfg, run.model, run.out
    epochs = cfg.resolved_finetune_epochs()
    if run.stages.done("finetune"):
        load_state(model, Ticket(out, run.record).state("final"), str(out))
        return
    t0 = time.perf_counter()
    train_epochs(model, run.data, run.tcfg, epochs, mask=held, seed=cfg.seed, first_epoch=cfg.pretrain_epochs,
                 on_epoch=run.log_epoch, stage="finetune", ddp=run.dist, checkpoint=paths.checkpoint(out, "finetune"))
    held.apply(model)
    if cfg.bn_recalibrate and (epochs > 0 or not state_updates):
        # BN running statistics of the final masked network. Without fine-tuning nothing refreshed the
        # theta_K (dense) ones; after a short fine-tune the EMA (momentum 0.1) still carries the dense
        # network's: on resnet20 at 99.26 % its variances are orders of magnitude larger, and a 39-step
        # fine-tune evaluated at 9.9 % with them vs 67.1 % with recomputed ones (bench-tickets, 2026-12-03)
        model.load_state_dict(_masked_bn_stats(model, run.data, cfg), strict=False)
    run.record.timings["finetune_s"] = time.perf_counter() - t0
    if run.is_main:
        save_state(paths.final_weights(out), model)
        run.stages.finish("finetune", epochs=epochs)


def _stage_dense(run: _Run, theta_k: dict[str, torch.Tensor]) -> None:
    """4. The dense reference: same starting weights, same budget, no mask."""
    cfg, out = run.cfg, run.out
    if not cfg.dense_reference or run.stages.done("dense"):
        return
    epochs = cfg.resolved_finetune_epochs()
    dense = build_model(run.spec, seed=cfg.seed)
    load_state(dense, theta_k, "theta_k")
    t0 = time.perf_counter()
    train_epochs(dense, run.data, run.tcfg, epochs, seed=cfg.seed, first_epoch=cfg.pretrain_epochs,
                 on_epoch=run.log_epoch, stage="dense", ddp=run.dist, checkpoint=paths.checkpoint(out, "dense"))
    if cfg.bn_recalibrate:  # the same recomputation as the ticket's, so the comparison stays fair
        dense.load_state_dict(_masked_bn_stats(dense, run.data, cfg), strict=False)
    run.record.timings["dense_s"] = time.perf_counter() - t0
    run.record.metrics["dense_accuracy"] = run.evaluate(dense)
    if run.is_main:
        save_state(paths.dense_weights(out), dense)
        run.stages.finish("dense", epochs=epochs)


def _finish(run: _Run, mask: Mask, measured: float) -> dict[str, Any]:
    """Write the result summary and mark the run complete (last)."""
    cfg, meta, out = run.cfg, run.meta, run.out
    t = meta["timings"]
    t["ticket_total_s"] = t.get("pretrain_s", 0.0) + t.get("search_s", 0.0) + t.get("finetune_s", 0.0)
    meta["sparsity"] = measured
    meta["mask_sha256"] = mask.sha256()
    meta["layers"] = mask.layer_stats()
    meta["result"] = {
        "out": str(out),
        "model": cfg.model,
        "data": cfg.data,
        "method": cfg.method,
        "target_sparsity": cfg.sparsity,
        "sparsity": measured,
        "accuracy": meta["metrics"]["accuracy"],
        "accuracy_before_finetune": meta["metrics"].get("accuracy_before_finetune"),  # None: --no-diagnose
        "dense_accuracy": meta["metrics"].get("dense_accuracy"),
        "mask_sha256": meta["mask_sha256"],
        "timings": dict(t),
        "search_info": meta["method"].get("info", {}),
        "eval_limit": cfg.eval_limit,  # None: accuracies are on the whole test split
        "bn_recalibrate": cfg.bn_recalibrate,  # BN statistics recomputed after fine-tuning (ticket and dense)
    }
    budget = cfg.parsed_budget()
    if budget is not None:
        info = meta["method"].get("info", {})
        meta["result"]["budget"] = {
            **budget.to_dict(), "granularity": cfg.granularity,
            # cost budgets: what the selection measured (MACs per sample, weights, or table ms)
            **{k[len("budget_"):]: v for k, v in info.items() if k.startswith("budget_") and k != "budget_kind"},
        }
    meta["complete"] = True
    if run.is_main:
        write_meta(out, meta)
        ckpt_dir = paths.checkpoint(out, "x").parent
        if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
            ckpt_dir.rmdir()
    return meta["result"]


def _untrained_mask_accuracy(model: torch.nn.Module, mask: Mask, data: DataBundle, cfg: PruneConfig) -> float:
    """Accuracy of the mask at theta_K before any training: a diagnostic of the mask itself.

    BN running statistics at theta_K describe the dense network, so they are recomputed for the
    masked one first (otherwise every BN ticket would read as chance level).
    """
    probe = copy.deepcopy(model)
    mask.apply(probe)
    probe.load_state_dict(_masked_bn_stats(probe, data, cfg), strict=False)
    from sparsekit.progress import step

    with step("evaluating the mask before fine-tuning"):
        return evaluate(probe, data, device=cfg.device, limit=cfg.eval_limit)["accuracy"]


def _masked_bn_stats(masked: torch.nn.Module, data: DataBundle, cfg: PruneConfig) -> dict[str, torch.Tensor]:
    """BN running statistics of an already masked network over 20 training batches (empty without BN)."""
    return recalibrate_on_data(masked, data, cfg.seed, cfg.device)


def finetune(run_dir: Path | str, epochs: int | None = None, data_dir: str | None = None,
             dense_reference: bool = True, dist: Any = None, workers: int = 0) -> dict[str, Any]:
    """Re-train an existing ticket from theta_K for ``epochs`` (default: the run's budget).

    The dense reference is retrained with the same budget so the comparison stays fair. If it
    fails or is interrupted (NaN loss, missing data, Ctrl-C), run.json and the weights it rewrites
    are restored as they were: the run stays complete and usable.
    """
    from sparsekit._io import preserved_files

    out = Path(run_dir)
    files = [paths.run_json(out), paths.final_weights(out), paths.dense_weights(out)]
    with preserved_files(files, enabled=out.is_dir() and getattr(dist, "rank", 0) == 0):
        return _finetune(run_dir, epochs, data_dir, dense_reference, dist, workers)


def _finetune(run_dir: Path | str, epochs: int | None, data_dir: str | None, dense_reference: bool,
              dist: Any, workers: int = 0) -> dict[str, Any]:
    ticket = Ticket.load(run_dir)
    record = ticket.record
    if epochs is None:
        epochs = record.finetune_epochs
    if epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {epochs}")
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    data = load_dataset(record.data_name, data_dir)
    data.workers = workers
    tcfg = record.train_config(epochs)
    out = Path(run_dir)
    mask = ticket.mask()
    seed, first = record.seed, record.pretrain_epochs
    is_main = getattr(dist, "rank", 0) == 0
    if dist is not None:
        dist.barrier()  # every rank has read run.json before rank 0 marks it incomplete
    record.raw["complete"] = False
    if is_main:
        record.save(out)

    model = ticket.materialize("theta_k")
    held = _held_mask(record.granularity, model, mask, data.in_shape)
    t0 = time.perf_counter()
    train_epochs(model, data, tcfg, epochs, mask=held, seed=seed, first_epoch=first, stage="finetune", ddp=dist)
    held.apply(model)
    recal = bool(record.config.get("bn_recalibrate", False))  # the run's setting (False: runs before it)
    if recal:
        model.load_state_dict(recalibrate_on_data(model, data, seed, _device_of(model)), strict=False)
    t = record.timings
    t["finetune_s"] = time.perf_counter() - t0
    if is_main:
        save_state(paths.final_weights(out), model)
    record.stages["finetune"] = {"complete": True, "epochs": epochs}
    record.metrics["accuracy"] = evaluate(model, data)["accuracy"]
    if dense_reference and record.stage_epochs("dense") != epochs:
        dense = _theta_k_dense(ticket)
        t0 = time.perf_counter()
        train_epochs(dense, data, tcfg, epochs, seed=seed, first_epoch=first, stage="dense", ddp=dist)
        if recal:
            dense.load_state_dict(recalibrate_on_data(dense, data, seed, _device_of(dense)), strict=False)
        t["dense_s"] = time.perf_counter() - t0
        if is_main:
            save_state(paths.dense_weights(out), dense)
        record.stages["dense"] = {"complete": True, "epochs": epochs}
        record.metrics["dense_accuracy"] = evaluate(dense, data)["accuracy"]
    t["ticket_total_s"] = t.get("pretrain_s", 0.0) + t.get("search_s", 0.0) + t.get("finetune_s", 0.0)
    record.raw["sparsity"] = sparsity_of(model, mask.names)
    record.result.update(
        accuracy=record.metrics["accuracy"],
        dense_accuracy=record.metrics.get("dense_accuracy"),
        sparsity=record.sparsity,
        timings=dict(t),
    )
    record.raw["complete"] = True
    if is_main:
        record.save(out)
    return record.result


def _held_mask(granularity: str, model: torch.nn.Module, mask: Mask, in_shape: tuple[int, ...]) -> Mask:
    """The mask train_epochs holds: channel tickets add the BN/bias entries of their dead channels."""
    return training_mask(model, mask, tuple(in_shape)) if granularity == "channel" else mask


def _device_of(model: torch.nn.Module) -> str:
    p = next(model.parameters(), None)
    return str(p.device) if p is not None else "cpu"


def _theta_k_dense(ticket: Ticket) -> torch.nn.Module:
    model = build_model(ticket.spec, seed=0)
    load_state(model, ticket.state("theta_k"), str(ticket.run_dir))
    return model


def config_fields() -> list[dataclasses.Field]:
    """PruneConfig's fields: each one's metadata declares its CLI option too (``help``, ``cli_help``,
    ``flag``, ``cli_type``/``cli_default``; sparsekit/cli/options.py builds ``sparsekit prune`` from them)."""
    return list(dataclasses.fields(PruneConfig))

