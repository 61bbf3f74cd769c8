"""sparsekit: find sparse lottery tickets near initialization and ship them as verified models.

Example:
    >>> from sparsekit import PruneConfig, prune                     # doctest: +SKIP
    >>> result = prune(PruneConfig(model="lenet300", data="synthetic", method="magnitude",
    ...                            sparsity=0.9, out="runs/demo"))  # doctest: +SKIP
"""

__version__ = "0.1.0"

from sparsekit.mask import Mask  # noqa: E402
from sparsekit.pipeline import PruneConfig, finetune, prune  # noqa: E402
from sparsekit.ticket import Ticket  # noqa: E402

__all__ = ["Mask", "PruneConfig", "Ticket", "__version__", "finetune", "prune"]
