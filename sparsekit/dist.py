"""Distributed execution on PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node N sparsekit prune ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; we then join the
process group (gloo on CPU, nccl on CUDA), shard every epoch's batches by rank (the global batch is
``--batch-size``, each rank takes ``batch_size / world_size`` of it, so the averaged gradient equals the
single-process one), wrap training in DDP, and let rank 0 alone write files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from sparsekit.errors import UsageError


@dataclass
class DistContext:
    """Rank information plus the collectives search methods need."""

    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, t: torch.Tensor | float) -> torch.Tensor | float:
        """Average a tensor (or a Python float) across ranks."""
        if isinstance(t, (int, float)):
            buf = torch.tensor([float(t)], dtype=torch.float64, device=self.device)
            torch_dist.all_reduce(buf)
            return float(buf.item()) / self.world_size
        out = t.detach().clone()
        torch_dist.all_reduce(out)
        return out / self.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.device.startswith("cuda"):
            return nn.parallel.DistributedDataParallel(model, device_ids=[self.local_rank])
        return nn.parallel.DistributedDataParallel(model)

    def barrier(self) -> None:
        torch_dist.barrier()


def from_environment(device: str = "cpu") -> DistContext | None:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        backend = "nccl"
    else:
        backend = "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank, device)


def shutdown(ctx: DistContext | None) -> None:
    if ctx is not None and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
