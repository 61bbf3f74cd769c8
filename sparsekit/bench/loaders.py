"""Build the torch module a bench job describes (run dir + variant + format + runtime's sparse path)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from sparsekit import paths


def preload() -> None:
    """Import everything ``load_torch_model`` can need, so the memory baseline pays for it too."""
    import torch.utils.flop_counter  # noqa: F401  (MAC counts)
    import torch_pruning  # noqa: F401  (structured conversion)
    import torchvision  # noqa: F401  (tv: models)

    import sparsekit.formats.csr  # noqa: F401
    import sparsekit.formats.structured  # noqa: F401
    import sparsekit.models.registry  # noqa: F401
    import sparsekit.ticket  # noqa: F401


def warm_kernels(batches: list[int]) -> None:
    """Run the code paths a model load touches (dense and CSR products, conversion, MAC counting) on
    a tiny model, so the baseline process has those library pages resident too."""
    from sparsekit.bench.macs import torch_macs
    from sparsekit.formats.csr import CsrLinear

    lin = torch.nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight[:, ::2] = 0
    csr = torch.nn.Sequential(torch.nn.Flatten(), CsrLinear.from_linear(lin))
    dense = torch.nn.Sequential(torch.nn.Flatten(), lin)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    torch_macs(csr, (1, 8, 8))
    torch_macs(dense, (1, 8, 8))
    with torch.inference_mode():
        for b in sorted({*batches, 64}):
            x = torch.ones(b, 1, 8, 8)
            dense(x), csr(x), conv(x)


def load_torch_model(job: dict[str, Any], probe: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    """Returns (module in eval mode, {"file_bytes", "macs"}) for a torch bench job.

    ``probe`` (B, C, H, W) real test inputs: Torch-Pruning traces with it and the structured
    converter checks dead channels on it.
    """
    from sparsekit.bench.macs import torch_macs
    from sparsekit.ticket import Ticket

    ticket = Ticket.load(job["run_dir"])
    dense = job["variant"] == "dense"
    model = ticket.materialize("dense" if dense else "final")
    weights = paths.dense_weights(ticket.run_dir) if dense else paths.final_weights(ticket.run_dir)
    file_bytes = os.path.getsize(weights)
    if not dense and job["format"] == "structured":
        from sparsekit.formats import get_format

        model = get_format("structured").convert(model, ticket.mask(), probe).module
        file_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if not dense and job.get("sparse") == "csr":
        from sparsekit.formats import get_format
        from sparsekit.formats.csr import storage_bytes

        model = get_format("csr").convert(model, ticket.mask(), probe).module
        file_bytes = storage_bytes(model)
    return model.eval(), {"file_bytes": file_bytes, "macs": torch_macs(model, ticket.spec.in_shape)}
