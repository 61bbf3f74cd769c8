"""sparsekit: find sparse lottery tickets near initialization and ship them as verified models.

The top-level names are imported lazily (PEP 562), so ``import sparsekit.engine`` or the CLI's
``--help`` never pay for importing torch.

Example:
    >>> from sparsekit import PruneConfig, prune                     # doctest: +SKIP
    >>> result = prune(PruneConfig(model="lenet300", data="synthetic", method="magnitude",
    ...                            sparsity=0.9, out="runs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "Mask": "sparsekit.binary_mask",
    "PruneConfig": "sparsekit.pipeline",
    "finetune": "sparsekit.pipeline",
    "prune": "sparsekit.pipeline",
    "Ticket": "sparsekit.ticket",
}

__all__ = ["Mask", "PruneConfig", "Ticket", "__version__", "finetune", "prune"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sparsekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
