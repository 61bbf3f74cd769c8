"""The CTS objective family R(sparse, dense, y) (docs/algorithms.md §2.3), each with its loss scale.

Every objective is evaluated on one training mini-batch; the dense reference is the same frozen
network with the mask switched off, computed without gradient on the same batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsekit.errors import SettingError, UsageError

#: per-sample standardization epsilon of the feature-matching objective (reference value)
FEATURE_EPS = 1e-9


def reverse_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(p_sparse || p_dense) averaged over the batch (CTS-KL, the reference default).

    ``F.kl_div(input, target)`` computes KL(target || input), so the dense log-probs are the input.

    Example:
        >>> s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])
        >>> float(reverse_kl(s, t))
        0.0
    """
    return F.kl_div(F.log_softmax(teacher, 1), F.log_softmax(student, 1), log_target=True, reduction="batchmean")


def forward_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(p_dense || p_sparse) averaged over the batch."""
    return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean")


def standardize_per_sample(h: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, F): zero mean, unit std per sample over the flattened features."""
    flat = h.reshape(h.shape[0], -1)
    return (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + FEATURE_EPS)


def feature_mse(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over captured layers of MSE between per-sample standardized features."""
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise UsageError("objective msefeature captured no matching features")
    losses = [F.mse_loss(standardize_per_sample(s), standardize_per_sample(t)) for s, t in zip(student_feats, teacher_feats, strict=True)]
    return torch.stack(losses).mean()


@dataclass(frozen=True)
class Objective:
    """One member of the family: ``fn(student_logits, teacher_logits, y, s_feats, t_feats) -> R``."""

    name: str
    loss_scale: float
    needs_teacher: bool
    needs_features: bool
    fn: Callable[..., torch.Tensor]


def _kl(s, t, y, sf, tf):
    return reverse_kl(s, t)


def _fkl(s, t, y, sf, tf):
    return forward_kl(s, t)


def _ce(s, t, y, sf, tf):
    return F.cross_entropy(s, y)


def _mse(s, t, y, sf, tf):
    # the reference also matches the softmax of the classifier output
    return feature_mse([*sf, F.softmax(s, 1)], [*tf, F.softmax(t, 1)])


OBJECTIVES: dict[str, Objective] = {
    "kl": Objective("kl", 100.0, True, False, _kl),
    "fkl": Objective("fkl", 100.0, True, False, _fkl),
    "ce": Objective("ce", 100.0, False, False, _ce),
    "msefeature": Objective("msefeature", 100.0, True, True, _mse),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise SettingError(f"{{objective}} must be one of {', '.join(OBJECTIVES)}, got {name!r}", "objective")
    return OBJECTIVES[name]


class ReluCapture:
    """Collects the output of every ``nn.ReLU`` call (a module called twice contributes twice).

    Models that use ``F.relu`` instead of modules contribute only the softmax term of msefeature.
    """

    def __init__(self, model: nn.Module) -> None:
        self.feats: list[torch.Tensor] = []
        self._handles = [
            m.register_forward_hook(lambda _m, _i, out: self.feats.append(out))
            for m in model.modules()
            if isinstance(m, nn.ReLU)
        ]

    def take(self) -> list[torch.Tensor]:
        out, self.feats = self.feats, []
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
