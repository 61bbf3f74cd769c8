"""N:M format: at most N non-zeros in every M consecutive weights along the input dimension.

No CPU kernel executes N:M (torch's semi-structured sparsity is CUDA-only, ORT CPU has no op); on CPU
an N:M model runs masked-dense.

Projection (see ``_project``), per layer: N:M caps the density at N/M, so the new mask keeps
``min(kept, N/M * numel)`` slots (the ticket's density, or N/M if the ticket is denser). In every
group of M it keeps at most N: the ticket's surviving weights first, largest magnitude first; when
that leaves the layer below its target (groups with fewer than N survivors), masked slots of groups
with room are added (a seeded random choice), holding 0 until ``convert --finetune-epochs`` trains
them. A 2:4 projection of a 50 % ticket is thus exactly 50 % dense (not 40 %), and one of a 90 %
ticket stays 10 % dense. The report gives the mask and non-zero densities before and after. A
layer whose input width is not a multiple of M is skipped (reported with the reason), never claimed
valid.
"""

from __future__ import annotations

import torch

from sparsekit.binary_mask import Mask
from sparsekit.errors import UsageError
from sparsekit.formats._project import PatternState, project, ranked_keep
from sparsekit.formats.base import FORMATS, Converted, SparseFormat


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
        alive = (rows_k & (rows_w != 0)).reshape(-1, self.m)  # (groups, M)
        # survivors rank by magnitude (>= 0); masked slots below them in a seeded random order (< 0)
        filler = -torch.rand(alive.shape, generator=torch.Generator().manual_seed(0)) - 1e-3
        score = torch.where(alive, rows_w.reshape(-1, self.m).abs().float(), filler)
        new = ranked_keep(score, self.n, dim=1)  # N per group: survivors first, then filler slots
        target = min(int(keep.sum()), new.numel() * self.n // self.m)
        extra = int(new.sum()) - target  # filler slots beyond the layer's target density
        if extra > 0:
            revived = (new & ~alive).reshape(-1)
            cand = torch.nonzero(revived).squeeze(1)
            drop = cand[torch.sort(score.reshape(-1)[cand], stable=True).indices[:extra]]  # lowest first
            flat = new.reshape(-1).clone()
            flat[drop] = False
            new = flat.reshape(new.shape)
        return _unrows(new.reshape(rows_k.shape), keep)

    def _valid(self, name: str, w: torch.Tensor, keep: torch.Tensor) -> bool:
        per_group = _rows(keep).reshape(-1, self.m).sum(1)
        return bool((per_group <= self.n).all() and not bool((w[~keep] != 0).any()))

    def convert(self, model, mask: Mask, example) -> Converted:
        c = project(model, mask, example, self._project, self._valid, f"{self.n}:{self.m}")
        c.report.update(n=self.n, m=self.m, note="no CPU kernel runs N:M; it runs masked-dense on CPU")
        c.plan = {"n": self.n, "m": self.m}
        return c
