"""Block format: weights kept or dropped in whole (bh x bw) blocks of the 2-D weight view.

Projection (see ``_project``), per layer: blocks are ranked by the L1 norm of the ticket's surviving
weights inside them, and the highest-ranked blocks are kept whole until the number of kept weight
slots is as close as possible to the ticket's kept count for that layer (so the mask density is
preserved up to one block). Survivors outside the kept blocks are dropped; masked slots inside them
are part of the new mask and hold 0 until ``convert --finetune-epochs`` trains them. The report gives
the mask and non-zero densities before and after and the share of survivors (and of their
magnitude) kept. Block-sparse kernels (torch BSR) pay only at >= 80-90 % BLOCK sparsity
(SPARSE_RUNTIME §1); a random unstructured mask leaves almost no empty 8x8 block, so projecting it
drops most of its survivors: fine-tune after converting, or search with a block-friendly method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsekit.binary_mask import Mask
from sparsekit.formats._project import PatternState, project
from sparsekit.formats.base import FORMATS, Converted, SparseFormat


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

    def _expand(self, chosen: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(nbh, nbw) block choice -> element mask of ``like``'s shape (padding cropped)."""
        grid = chosen.repeat_interleave(self.bh, 0).repeat_interleave(self.bw, 1)
        o, rest = like.shape[0], like[0].numel()
        return grid[:o, :rest].reshape(like.shape)

    def _project(self, w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        alive = keep & (w != 0)
        norms = self._grid(w.abs() * alive).sum(-1).reshape(-1)  # (nblocks,) L1 of surviving weights
        slots = self._grid(torch.ones_like(keep)).sum(-1).reshape(-1)  # real (unpadded) slots per block
        target = int(keep.sum())
        # rank blocks by surviving magnitude (ties by position), then take the prefix whose slot count
        # is closest to the ticket's kept count
        order = torch.sort(norms, descending=True, stable=True).indices
        cum = torch.cumsum(slots[order], 0)
        n_blocks = int(torch.argmin((torch.cat([torch.zeros(1), cum]) - target).abs()))
        chosen = torch.zeros(norms.numel(), dtype=torch.bool)
        chosen[order[:n_blocks]] = True
        nbh, nbw = self._grid(keep).shape[:2]
        return self._expand(chosen.reshape(nbh, nbw), keep)

    def _valid(self, name: str, w: torch.Tensor, keep: torch.Tensor) -> bool:
        """Every block is wholly kept or wholly dropped, and no weight is non-zero outside the mask."""
        full = self._grid(keep).sum(-1) == self._grid(torch.ones_like(keep)).sum(-1)
        empty = ~self._grid(keep).bool().any(-1)
        return bool((full | empty).all()) and not bool((w[~keep] != 0).any())

    def convert(self, model, mask: Mask, example) -> Converted:
        c = project(model, mask, example, self._project, self._valid, f"block {self.bh}x{self.bw}")
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
