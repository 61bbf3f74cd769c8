"""Draw a fixed scoring sample from the training split (SNIP / GraSP use a few images per class)."""

from __future__ import annotations

import torch

from sparsekit.data.bundle import DataBundle


def draw_samples(
    data: DataBundle, per_class: int, seed: int, stratified: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (x, y) with ``per_class * num_classes`` shuffled training examples.

    ``stratified`` takes exactly ``per_class`` examples of each class (GraSP's sampler); otherwise the
    first ``per_class * num_classes`` of a seeded shuffle (Synaptic-Flow's SNIP sampler). Classes with
    fewer examples contribute what they have.
    """
    want = per_class * data.num_classes
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    counts = torch.zeros(data.num_classes, dtype=torch.long)
    have = 0
    for x, y in data.batches("train", 1024, shuffle=True, seed=seed):
        if stratified:
            keep = torch.zeros(len(y), dtype=torch.bool)
            for i, c in enumerate(y.tolist()):
                if counts[c] < per_class:
                    counts[c] += 1
                    keep[i] = True
            x, y = x[keep], y[keep]
        else:
            x, y = x[: want - have], y[: want - have]
        xs.append(x)
        ys.append(y)
        have += len(y)
        if have >= want:
            break
    return torch.cat(xs), torch.cat(ys)
