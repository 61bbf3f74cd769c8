"""CSR format: sparse Linear layers backed by torch CSR tensors with int32 indices (torch-csr runtime).

Measured on the target CPU (docs SPARSE_RUNTIME.md §1): torch CSR with int32 indices is the fastest
general sparse CPU path for fully connected layers and beats the best dense GEMM from ~90 % sparsity.
Convolutions stay masked-dense: the only sparse conv path (im2col + CSR) needs >= 98 % sparsity at
1 thread and never wins at 2 threads, and torch's unfold is slower than a dense conv at any sparsity.
CSR tensors cannot be exported to ONNX (torch.export has no aten._sparse_addmm).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.formats.base import FORMATS, Converted, SparseFormat, check_equal

#: Linear layers below this sparsity stay dense: torch CSR (int32) is slower than dense GEMM below
#: ~80-90 % sparsity on the measured CPU (SPARSE_RUNTIME.md §1), and needs 8 B per non-zero vs 4 B dense
CSR_MIN_SPARSITY = 0.9


class CsrLinear(nn.Module):
    """y = x W^T + b with W held as a torch CSR tensor (int32 crow/col indices).

    Example:
        >>> lin = nn.Linear(4, 2)
        >>> CsrLinear.from_linear(lin)(torch.ones(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, weight_csr: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_csr.shape
        self.weight_csr = weight_csr
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> CsrLinear:
        with warnings.catch_warnings():  # "sparse CSR support is in beta" on every conversion
            warnings.simplefilter("ignore", UserWarning)
            c = lin.weight.detach().to_sparse_csr()
            # int32 indices: ~1.5x faster at batch 1 than torch's default int64 (MKL converts per call)
            w = torch.sparse_csr_tensor(
                c.crow_indices().int(), c.col_indices().int(), c.values(), c.shape, check_invariants=False
            )
        return cls(w, lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # every eager op costs ~1-3 us, comparable to the sparse kernel itself at batch 1: keep the
        # 2-D path to one or two calls (fused addmv at batch 1)
        if x.dim() == 2:
            if x.shape[0] == 1:
                if self.bias is None:
                    return torch.mv(self.weight_csr, x[0]).unsqueeze(0)
                return torch.addmv(self.bias, self.weight_csr, x[0]).unsqueeze(0)
            y = torch.sparse.mm(self.weight_csr, x.t()).t()  # (out, in) @ (in, N) -> (N, out)
            return y if self.bias is None else y + self.bias
        lead = x.shape[:-1]
        return self.forward(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)

    @property
    def nnz(self) -> int:
        return int(self.weight_csr.values().numel())

    def macs_per_sample(self, out: torch.Tensor) -> int:
        rows = out[0].numel() // self.out_features  # 1 for (B, out); T for (B, T, out)
        return self.nnz * rows

    def storage_bytes(self) -> int:
        bias = 0 if self.bias is None else self.bias.numel() * 4
        return self.nnz * 8 + (self.out_features + 1) * 4 + bias  # fp32 value + int32 col; int32 crow

    def dense_weight(self) -> torch.Tensor:
        return self.weight_csr.to_dense()


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


@FORMATS.register("csr", help="sparse Linear layers as torch CSR (int32 indices); convs stay dense")
class Csr(SparseFormat):
    """torch CSR Linear layers for the torch-csr runtime."""

    atol = 1e-4  # sparse kernels sum in a different order

    def convert(self, model: nn.Module, mask: Mask, example: torch.Tensor) -> Converted:
        out = copy.deepcopy(model).eval()
        mask.apply(out)
        layers = []
        converted_names = []
        for name, mod in list(out.named_modules()):
            fqn = f"{name}.weight"
            if not isinstance(mod, nn.Linear) or fqn not in mask.names:
                continue
            sparsity = 1.0 - float(mask[fqn].float().mean())
            dense_bytes = mod.weight.numel() * 4 + (0 if mod.bias is None else mod.bias.numel() * 4)
            row = {"name": name, "sparsity": sparsity, "dense_bytes": dense_bytes}
            if sparsity >= CSR_MIN_SPARSITY:
                csr = CsrLinear.from_linear(mod)
                _set(out, name, csr)
                converted_names.append(name)
                row.update(format="csr", storage_bytes=csr.storage_bytes(), nnz=csr.nnz)
            else:
                row.update(format="dense", storage_bytes=dense_bytes,
                           reason=f"sparsity below CSR_MIN_SPARSITY {CSR_MIN_SPARSITY}")
            layers.append(row)
        linear_names = {f"{r['name']}.weight" for r in layers}
        not_linear = [n for n in mask.names if n not in linear_names]  # convs: kept masked-dense
        converted = Converted(out, None, mask, plan={"layers": converted_names})
        diff = check_equal(converted, model, example, self.atol, "csr conversion")
        converted.report = {
            "layers": layers,
            "dense_kept": not_linear,
            "note": ("convolutions stay masked-dense: unstructured sparse conv does not pay on CPU"
                     if not_linear else "all sparse Linear layers above CSR_MIN_SPARSITY use CSR"),
            "storage_bytes": storage_bytes(out),
            "dense_bytes": sum(p.numel() * 4 for p in model.parameters()),
            "max_abs_diff": diff,
            "atol": self.atol,
        }
        return converted

    def rebuild(self, model: nn.Module, plan: dict[str, Any], example: torch.Tensor) -> nn.Module:
        return model  # CSR layers are rebuilt from the saved masked-dense weights in load_state

    def save_state(self, converted: Converted) -> dict[str, torch.Tensor]:
        state = {}
        for k, v in converted.module.state_dict().items():
            state[k] = v.detach().clone()
        for name, mod in converted.module.named_modules():
            if isinstance(mod, CsrLinear):
                state[f"{name}.weight"] = mod.dense_weight()
        return state

    def load_state(self, module: nn.Module, state: dict[str, torch.Tensor], plan: dict[str, Any]) -> nn.Module:
        module.load_state_dict(state)
        for name in plan["layers"]:
            _set(module, name, CsrLinear.from_linear(module.get_submodule(name)))
        return module.eval()


def storage_bytes(model: nn.Module) -> int:
    """Bytes of all weights as stored: CSR layers by their arrays, the rest as dense fp32."""
    total = 0
    for mod in model.modules():
        if isinstance(mod, CsrLinear):
            total += mod.storage_bytes()
        else:
            total += sum(p.numel() * 4 for p in mod.parameters(recurse=False))
            total += sum(b.numel() * b.element_size() for b in mod.buffers(recurse=False))
    return total
