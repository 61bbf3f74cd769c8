"""N:M format: at most N non-zeros in every M consecutive weights along the input dimension.

No CPU kernel executes N:M (torch's semi-structured sparsity is CUDA-only, ORT CPU has no op); on CPU
an N:M model runs masked-dense.

Projection (see ``_project``): in every group of M the new mask keeps exactly N slots: the ticket's
surviving weights first, largest magnitude first, then (when a group has fewer than N survivors)
masked slots, which hold 0 until ``convert --finetune-epochs`` trains them. So the mask density of a
patterned layer is exactly N/M by definition, while its non-zero density is at most that; the
report gives both, before and after. A layer whose input width is not a multiple of M is skipped
(reported with the reason), never claimed valid.
"""

from __future__ import annotations

import torch

from sparsekit.errors import UsageError
from sparsekit.formats._project import PatternState, project, ranked_keep, survivor_score
from sparsekit.formats.base import FORMATS, Converted, SparseFormat
from sparsekit.mask import Mask


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(O, I) or (O, I, kh, kw) -> (O*kh*kw, I): groups run along the input channels."""
    return t if t.dim() == 2 else t.movedim(1, -1).reshape(-1, t.shape[1])


def _unrows(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 2:
        return r
    o, i, *k = like.shape
    return r.reshape(o, *k, i).movedim(-1, 1)


@FORMATS.register("nm", help="N:M pattern along input channels (e.g. 2:4; GPU kernels only)")
class NM(PatternState, SparseFormat):
    atol = 1e-6

    def __init__(self, n: int = 2, m: int = 4, **options) -> None:
        if not (0 < n <= m):
            raise UsageError(f"N:M needs 0 < N <= M, got {n}:{m}")
        super().__init__(n=n, m=m, **options)
        self.n, self.m = n, m

    def _project(self, w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | str:
        rows_w, rows_k = _rows(w), _rows(keep)
        if rows_w.shape[1] % self.m:
            return f"input width {rows_w.shape[1]} is not a multiple of M={self.m}"
        score = survivor_score(rows_w, rows_k).reshape(-1, self.m)  # (groups, M)
        new = ranked_keep(score, self.n, dim=1)  # exactly N per group, survivors by magnitude first
        return _unrows(new.reshape(rows_k.shape), keep)

    def _valid(self, name: str, w: torch.Tensor, keep: torch.Tensor) -> bool:
        per_group = _rows(keep).reshape(-1, self.m).sum(1)
        return bool((per_group == self.n).all() and not bool((w[~keep] != 0).any()))

    def convert(self, model, mask: Mask, example) -> Converted:
        c = project(model, mask, example, self._project, self._valid, f"{self.n}:{self.m}")
        c.report.update(n=self.n, m=self.m, note="no CPU kernel runs N:M; it runs masked-dense on CPU")
        c.plan = {"n": self.n, "m": self.m}
        return c
