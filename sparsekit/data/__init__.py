"""Datasets -> batches. No network unless asked (``download=True``).

Adding a dataset = one new file with ``@DATASETS.register("name")`` + one import line below.
A loader has the signature ``loader(arg: str | None, data_dir: Path | None, download: bool) -> DataBundle``
where ``arg`` is what follows the first ":" in the spec (e.g. "imagefolder:PATH").
"""

from sparsekit.data import cifar as _cifar  # noqa: F401,E402
from sparsekit.data import idx as _idx  # noqa: F401,E402
from sparsekit.data import imagefolder as _imagefolder  # noqa: F401,E402
from sparsekit.data import synthetic as _synthetic  # noqa: F401,E402
from sparsekit.data.bundle import DATASETS, DataBundle, load_dataset

__all__ = ["DATASETS", "DataBundle", "load_dataset"]
