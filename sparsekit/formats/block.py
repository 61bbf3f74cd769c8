"""Block format: weights kept or dropped in whole (bh x bw) blocks of the 2-D weight view.

Projection keeps, per layer, the blocks with the largest L1 norm of surviving weights, as many as
the layer's kept weights fill (density preserved), and reports how many non-zero weights that
dropped. Block-sparse kernels (torch BSR) pay only at >= 80-90 % BLOCK sparsity (SPARSE_RUNTIME §1);
a random unstructured mask leaves almost no empty 8x8 block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sparsekit.formats._project import PatternState, project
from sparsekit.formats.base import FORMATS, Converted, SparseFormat
from sparsekit.mask import Mask


@FORMATS.register("block", help="bh x bw blocks of the (out, in*k*k) weight view (e.g. 4x4)")
class Block(PatternState, SparseFormat):
    atol = 1e-6

    def __init__(self, block: tuple[int, int] = (4, 4), **options) -> None:
        super().__init__(block=list(block), **options)
        self.bh, self.bw = block

    def _grid(self, t: torch.Tensor) -> torch.Tensor:
        """(O, ...) -> (O, I') padded to whole blocks -> (nbh, nbw, bh*bw)."""
        w2 = t.reshape(t.shape[0], -1).float()  # (O, I*kh*kw)
        ph, pw = -w2.shape[0] % self.bh, -w2.shape[1] % self.bw
        w2 = F.pad(w2, (0, pw, 0, ph))
        h, w = w2.shape
        return w2.reshape(h // self.bh, self.bh, w // self.bw, self.bw).permute(0, 2, 1, 3).reshape(
            h // self.bh, w // self.bw, -1
        )

    def _project(self, w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        norms = self._grid(w.abs() * keep).sum(-1)  # (nbh, nbw) L1 of surviving weights
        n_blocks = min(norms.numel(), math.ceil(int(keep.sum()) / (self.bh * self.bw)))
        chosen = torch.zeros(norms.numel(), dtype=torch.bool)
        if n_blocks:
            chosen[norms.reshape(-1).topk(n_blocks).indices] = True
        # expand the block choice back to elements: (nbh, nbw) -> (O', I') -> crop -> weight shape
        grid = chosen.reshape(norms.shape).repeat_interleave(self.bh, 0).repeat_interleave(self.bw, 1)
        o, rest = keep.shape[0], keep[0].numel()
        return grid[:o, :rest].reshape(keep.shape) & keep

    def _occupied(self, t: torch.Tensor) -> int:
        return int((self._grid(t != 0) > 0).any(-1).sum())  # blocks holding any non-zero

    def convert(self, model, mask: Mask, example) -> Converted:
        budget = {n: math.ceil(int(k.sum()) / (self.bh * self.bw)) for n, k in mask.items()}
        shapes = {n: k.shape for n, k in mask.items()}

        def valid(w: torch.Tensor) -> bool:
            # the pattern holds when the non-zeros fit in the block budget of their layer
            name = next(n for n, s in shapes.items() if s == w.shape)
            return self._occupied(w) <= max(budget[n] for n, s in shapes.items() if s == w.shape) or name is None

        c = project(model, mask, example, self._project, valid, f"block {self.bh}x{self.bw}")
        c.report.update(block=[self.bh, self.bw], blocks=self._block_stats(c.mask))
        c.plan = {"block": [self.bh, self.bw]}
        return c

    def _block_stats(self, mask: Mask) -> dict[str, float]:
        total = empty = 0
        for _, keep in mask.items():
            occupied = (self._grid(keep) > 0).any(-1)
            total += occupied.numel()
            empty += int((~occupied).sum())
        return {"blocks": total, "empty_blocks": empty, "block_sparsity": empty / max(1, total)}
