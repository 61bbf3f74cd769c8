"""Prunable-tensor discovery, exact top-k budgets and mask relaxations."""

from sparsekit.masking.prunable import PrunePolicy, prunable_tensors
from sparsekit.masking.select.topk import budget_keep, topk_mask

__all__ = ["PrunePolicy", "budget_keep", "prunable_tensors", "topk_mask"]
