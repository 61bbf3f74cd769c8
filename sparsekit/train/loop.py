"""SGD training with an exactly-held mask, and evaluation.

The mask is enforced twice per step: gradients of pruned weights are zeroed before the optimizer step
(so momentum buffers never accumulate there) and the weights are re-multiplied by the mask after it
(so weight decay or any optimizer state can never resurrect a pruned weight).
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
from sparsekit.data.bundle import DataBundle
from sparsekit.errors import TrainingDivergedError, UsageError
from sparsekit.mask import Mask
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

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


EpochCallback = Callable[[dict], None]


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
    if mask is not None:
        mask.apply(model)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    rank = getattr(ddp, "rank", 0)
    world = getattr(ddp, "world_size", 1)
    if world > 1 and cfg.batch_size % world:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the {world} ranks")
    local_batch = cfg.batch_size // world  # the global batch is split across ranks
    runner = getattr(ddp, "wrap", lambda m: m)(model)
    start = first_epoch
    if checkpoint is not None and Path(checkpoint).is_file():
        start = _resume(checkpoint, model, opt, stage, first_epoch)
    for epoch in range(start, first_epoch + epochs):
        model.train()
        t0 = time.perf_counter()
        total, seen = 0.0, 0
        batches = data.batches(
            "train", local_batch, shuffle=True, seed=seed * 100_003 + epoch, rank=rank, world_size=world
        )
        total_batches = data.num_batches("train", local_batch, world_size=world)
        for x, y in track(batches, total_batches, f"{stage} epoch {epoch + 1}"):
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(runner(x), y)
            _check_finite(loss, f"{stage} epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if mask is not None:
                mask.mask_grads(model)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if mask is not None:
                mask.apply(model)
            total += loss.item() * len(y)
            seen += len(y)
        if checkpoint is not None and rank == 0:
            _save_checkpoint(checkpoint, model, opt, stage, epoch + 1)
        if on_epoch is not None:
            on_epoch(
                {
                    "stage": stage,
                    "epoch": epoch + 1,
                    "train_loss": total / max(seen, 1),
                    "seconds": time.perf_counter() - t0,
                }
            )
    return model


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
