"""N:M format: at most N non-zeros in every M consecutive weights along the input dimension.

No CPU kernel executes N:M (torch's semi-structured sparsity is CUDA-only, ORT CPU has no op); on CPU
an N:M model runs masked-dense. The format projects the ticket's mask onto the pattern (keeping the
largest surviving weights of each group), reports how many weights that changed, and validates it.
"""

from __future__ import annotations

import torch

from sparsekit.errors import UsageError
from sparsekit.formats._project import PatternState, project
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

    def _project(self, w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
        rows_w, rows_k = _rows(w), _rows(keep)
        if rows_w.shape[1] % self.m:
            return None  # input width not a multiple of M
        g_w = rows_w.reshape(-1, self.m)  # (groups, M)
        score = torch.where(rows_k.reshape(-1, self.m), g_w.abs(), torch.full_like(g_w, -1.0))
        top = score.topk(self.n, dim=1).indices
        new = torch.zeros_like(g_w, dtype=torch.bool).scatter_(1, top, True)
        new &= rows_k.reshape(-1, self.m)  # never resurrect masked weights
        return _unrows(new.reshape(rows_k.shape), keep)

    def _valid(self, w: torch.Tensor) -> bool:
        return bool(((_rows(w).reshape(-1, self.m) != 0).sum(1) <= self.n).all())

    def convert(self, model, mask: Mask, example) -> Converted:
        c = project(model, mask, example, self._project, self._valid, f"{self.n}:{self.m}")
        c.report.update(n=self.n, m=self.m, note="no CPU kernel runs N:M; it runs masked-dense on CPU")
        c.plan = {"n": self.n, "m": self.m}
        return c
