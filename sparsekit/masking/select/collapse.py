"""Layer collapse: a mask that keeps no weight of some prunable layer.

Every path from input to output crosses each prunable layer of a plain feed-forward net, so a layer
with zero kept weights makes the output constant (chance accuracy, whatever fine-tuning does); in a
residual network the block is reduced to its shortcut (measured: resnet20 tickets with 2-5 empty
layers still reach 41-48 % on the Fashion-MNIST subset of bench-tickets), which is still not the
network asked for. Global
rankings produce this at extreme sparsity (random, magnitude: docs/algorithms.md §1.4), and so
does an untrained learned mask. The pipeline refuses such a ticket unless told otherwise.
"""

from __future__ import annotations

from sparsekit.binary_mask import Mask
from sparsekit.errors import LayerCollapseError


def collapsed_layers(mask: Mask) -> list[str]:
    """FQNs of the prunable tensors with zero kept weights, in mask order.

    Example:
        >>> import torch
        >>> collapsed_layers(Mask({"a": torch.tensor([True, False]), "b": torch.zeros(3, dtype=torch.bool)}))
        ['b']
    """
    return [name for name, keep in mask.items() if not bool(keep.any())]


def check_layer_collapse(mask: Mask, allow: bool = False, method: str = "") -> list[str]:
    """Raise ``LayerCollapseError`` naming the empty layers unless ``allow``; returns them."""
    empty = collapsed_layers(mask)
    if empty and not allow:
        shown = ", ".join(empty[:5]) + (f" (+{len(empty) - 5} more)" if len(empty) > 5 else "")
        by = f" found by {method}" if method else ""
        raise LayerCollapseError(
            f"the mask{by} keeps 0 weights of {len(empty)} prunable layer(s): {shown}; such a layer passes "
            "on only its bias, which disconnects a plain feed-forward network (constant output; a residual "
            "block is reduced to its shortcut). Lower --sparsity, use --layerwise, --exclude the layer, or pass "
            "--allow-layer-collapse to keep it anyway"
        )
    return empty
