"""SGD training with an exactly-held mask, and evaluation.

The mask is enforced twice per step: gradients of pruned weights are zeroed before the optimizer step
(so momentum buffers never accumulate there) and the weights are re-multiplied by the mask after it
(so weight decay or any optimizer state can never resurrect a pruned weight).

The recipe (``TrainConfig``): SGD with momentum and weight decay, a learning-rate schedule over an
absolute epoch horizon (``cosine``, ``step`` = x0.1 at 50 % and 75 % of the horizon, or ``constant``)
with an optional linear warm-up, cross-entropy with optional label smoothing, optional global
gradient-norm clipping, and optional crop+flip augmentation (4-px reflect pad, random 32x32-style
crop, h-flip: the CIFAR recipe of docs/algorithms.md §6.2). The schedule position is absolute:
training "from epoch K for E epochs" with horizon K + E continues the schedule the dense pretraining
started (the rewinding recipe, §6.1: fine-tune, dense reference and every LTR round all run epochs
K..K+E of the same schedule). The LR is set per step, so resuming from an epoch checkpoint is exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit._io import load_tensors, read_json, save_tensors, write_json
from sparsekit.binary_mask import Mask
from sparsekit.data.bundle import DataBundle
from sparsekit.errors import TrainingDivergedError, UsageError
from sparsekit.progress import track


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer recipe shared by the dense pretraining, the dense reference and ticket fine-tuning."""

    lr: float = field(default=0.1, metadata={"help": "SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 weight decay"})
    batch_size: int = field(default=128, metadata={"help": "training batch size"})
    grad_clip: float = field(default=0.0, metadata={"help": "max global grad norm; 0 = no clipping"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    schedule: str = field(default="constant", metadata={"help": "LR schedule: cosine, step (x0.1 at 50 % and 75 %) or constant"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear LR warm-up from 0 over this many (absolute) epochs"})
    horizon_epochs: int = field(default=0, metadata={"help": "epochs the schedule spans (0 = the end of each train_epochs call)"})
    augment: str = field(default="none", metadata={"help": "none or crop-flip (4-px reflect pad + random crop + horizontal flip)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing in [0, 1)"})

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.augment not in AUGMENTS:
            raise UsageError(f"--augment must be one of {', '.join(AUGMENTS)} here, got {self.augment!r}")
        if not (self.warmup_epochs >= 0 and math.isfinite(self.warmup_epochs)) or self.horizon_epochs < 0:
            raise UsageError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise UsageError(f"--grad-clip must be >= 0 (0 = off), got {self.grad_clip}")

    def lr_at(self, epoch: float, horizon: float) -> float:
        """Learning rate at fractional absolute epoch ``epoch`` of a schedule spanning ``horizon`` epochs.

        Example:
            >>> cfg = TrainConfig(lr=0.1, schedule="cosine", warmup_epochs=1)
            >>> [round(cfg.lr_at(t, 5), 4) for t in (0.5, 1, 3, 5)]
            [0.05, 0.1, 0.05, 0.0]
        """
        horizon = self.horizon_epochs or horizon
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            return self.lr * epoch / self.warmup_epochs
        if self.schedule == "constant" or horizon <= self.warmup_epochs:
            return self.lr
        frac = min(max((epoch - self.warmup_epochs) / (horizon - self.warmup_epochs), 0.0), 1.0)
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        return self.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))  # step

    def to_dict(self) -> dict:
        return asdict(self)


EpochCallback = Callable[[dict], None]
SCHEDULES = ("cosine", "step", "constant")
AUGMENTS = ("none", "crop-flip")
#: augment="auto" picks crop-flip for colour images at least this large (CIFAR-like), none otherwise
AUTO_AUGMENT_MIN_SIDE = 32
CROP_PAD = 4


def resolve_augment(augment: str, in_shape: tuple[int, ...]) -> str:
    """``auto`` -> ``crop-flip`` for 3-channel images of 32x32 and larger, else ``none`` (MNIST-like
    digits and clothes are not flip-invariant, and the LTH LeNet recipes use no augmentation).

    Example:
        >>> resolve_augment("auto", (3, 32, 32)), resolve_augment("auto", (1, 28, 28))
        ('crop-flip', 'none')
    """
    if augment == "auto":
        c, h, w = (tuple(in_shape) + (1, 1, 1))[:3]
        return "crop-flip" if c == 3 and min(h, w) >= AUTO_AUGMENT_MIN_SIDE else "none"
    if augment not in AUGMENTS:
        raise UsageError(f"--augment must be auto, none or crop-flip, got {augment!r}")
    return augment


def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after a CROP_PAD-pixel reflect pad, and a random horizontal flip, per sample.

    x: (B, C, H, W) -> (B, C, H, W). Random numbers come from ``generator`` (CPU) so the data order
    and the augmentation are reproducible from the seed.
    """
    b, _, h, w = x.shape
    p = CROP_PAD
    padded = F.pad(x, (p, p, p, p), mode="reflect")  # (B, C, H + 2p, W + 2p)
    oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _check_finite(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"loss became {loss.item()} during {where}; lower --lr or check the data"
        )


def train_epochs(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    epochs: int,
    mask: Mask | None = None,
    seed: int = 0,
    first_epoch: int = 0,
    on_epoch: EpochCallback | None = None,
    stage: str = "train",
    ddp: object | None = None,
    checkpoint: Path | None = None,
) -> nn.Module:
    """Train ``model`` for ``epochs`` epochs of SGD; data order seeded by ``seed`` and epoch index.

    ``ddp`` is an optional sparsekit.dist.DistContext; when given, each rank takes its share of every
    global batch. ``checkpoint`` (a .safetensors path) is written after every epoch (model, momentum
    buffers, RNG) and, if present when called, training resumes after the epoch it recorded.
    """
    device = torch.device(cfg.device)
    model.to(device)
    held = _held_masks(model, mask, device)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    rank = getattr(ddp, "rank", 0)
    world = getattr(ddp, "world_size", 1)
    if world > 1 and cfg.batch_size % world:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the {world} ranks")
    runner = getattr(ddp, "wrap", lambda m: m)(model)
    start = first_epoch
    if checkpoint is not None and Path(checkpoint).is_file():
        start = _resume(checkpoint, model, opt, stage, first_epoch)
    horizon = first_epoch + epochs
    epoch_run = _Epoch(model, runner, opt, held, data, cfg, seed, rank, world, stage, horizon)
    for epoch in range(start, first_epoch + epochs):
        t0 = time.perf_counter()
        train_loss = epoch_run(epoch)
        if checkpoint is not None and rank == 0:
            _save_checkpoint(checkpoint, model, opt, stage, epoch + 1)
        if on_epoch is not None:
            on_epoch(
                {
                    "stage": stage,
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "seconds": time.perf_counter() - t0,
                }
            )
    return model


def _held_masks(model: nn.Module, mask: Mask | None,
                device: torch.device) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Apply ``mask`` to ``model``; (parameter, float 0/1 multiplier) pairs that keep it held.

    The float multipliers are made once (Mask.apply / mask_grads convert the bool tensors every call).
    """
    if mask is None:
        return []
    mask.apply(model)
    params = dict(model.named_parameters())
    return [(params[n], t.to(device=params[n].device, dtype=params[n].dtype)) for n, t in mask.items()]


class _Epoch:
    """One epoch of ``train_epochs``: seeded data order and augmentation, per-batch LR, masked SGD."""

    def __init__(self, model: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor],
                 opt: torch.optim.Optimizer, held: list[tuple[nn.Parameter, torch.Tensor]],
                 data: DataBundle, cfg: TrainConfig, seed: int, rank: int, world: int, stage: str,
                 horizon: int) -> None:
        self.model, self.runner, self.opt, self.held = model, runner, opt, held
        self.data, self.cfg = data, cfg
        self.seed, self.rank, self.world, self.stage, self.horizon = seed, rank, world, stage, horizon
        self.local_batch = cfg.batch_size // world  # the global batch is split across ranks
        self.device = torch.device(cfg.device)

    def __call__(self, epoch: int) -> float:
        """Train one epoch; the mean training loss over its samples."""
        cfg, seed, rank, world = self.cfg, self.seed, self.rank, self.world
        self.model.train()
        total, seen = 0.0, 0
        batches = self.data.batches("train", self.local_batch, shuffle=True, seed=seed * 100_003 + epoch,
                                    rank=rank, world_size=world)
        total_batches = self.data.num_batches("train", self.local_batch, world_size=world)
        aug_gen = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_777_777 * (rank + 1))
        for i, (x, y) in enumerate(track(batches, total_batches, f"{self.stage} epoch {epoch + 1}")):
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr_at(epoch + i / total_batches, self.horizon)
            x, y = x.to(self.device), y.to(self.device)
            if cfg.augment == "crop-flip":
                x = crop_flip(x, aug_gen)
            loss = self._step(x, y, epoch)
            total += loss.item() * len(y)
            seen += len(y)
        return total / max(seen, 1)

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """One SGD step with the mask held (no gradient, no update where it is 0)."""
        loss = F.cross_entropy(self.runner(x), y, label_smoothing=self.cfg.label_smoothing)
        _check_finite(loss, f"{self.stage} epoch {epoch + 1}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m in self.held:  # pruned weights get no gradient, so momentum never grows there
            if p.grad is not None:
                p.grad.mul_(m)
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        with torch.no_grad():
            for p, m in self.held:  # and weight decay / momentum can never resurrect one
                p.mul_(m)
        return loss


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, stage: str, epochs_done: int) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for idx, st in opt.state_dict()["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    save_tensors(path, tensors)
    write_json(Path(path).with_suffix(".json"), {"stage": stage, "epochs_done": epochs_done})


def _resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer, stage: str, first_epoch: int) -> int:
    info = read_json(Path(path).with_suffix(".json"))
    if info.get("stage") != stage:
        return first_epoch
    tensors = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = opt.state_dict()
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state["state"].setdefault(int(idx), {})[name] = value
    opt.load_state_dict(state)
    torch.set_rng_state(tensors["rng.torch"])
    return int(info["epochs_done"])


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DataBundle, batch_size: int = 512, device: str = "cpu", limit: int | None = None
) -> dict[str, float]:
    """Top-1 accuracy (in [0, 1]) and mean loss on the test split."""
    model.to(device)
    was_training = model.training
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    for x, y in data.batches("test", batch_size, limit=limit):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    model.train(was_training)
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1)}
