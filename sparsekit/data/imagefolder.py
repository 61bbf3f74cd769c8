"""imagefolder:PATH — PATH/train and PATH/test (or PATH/val), one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

from sparsekit.data.bundle import DATASETS, DataBundle
from sparsekit.errors import DataNotFoundError, UsageError


@DATASETS.register("imagefolder", help="imagefolder:PATH with PATH/train and PATH/test|val")
def imagefolder(arg: str | None, data_dir: Path | None, download: bool) -> DataBundle:
    import torchvision
    from PIL import Image
    from torchvision import transforms

    if not arg:
        raise UsageError("imagefolder needs a path: --data imagefolder:PATH")
    root = Path(arg)
    train_dir = root / "train"
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataNotFoundError(f"imagefolder:{root} needs {root}/train and {root}/test (or {root}/val)")
    try:
        probe = torchvision.datasets.ImageFolder(str(train_dir))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataNotFoundError(f"imagefolder {train_dir}: {exc}") from None
    with Image.open(probe.samples[0][0]) as im:
        w, h = im.size
        gray = im.mode in ("L", "1", "I;16")
    channels = 1 if gray else 3
    tf = transforms.Compose(
        [
            transforms.Grayscale(1) if gray else transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.Resize((h, w)),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * channels, [0.5] * channels),
        ]
    )
    train = torchvision.datasets.ImageFolder(str(train_dir), transform=tf)
    test = torchvision.datasets.ImageFolder(str(test_dir), transform=tf)
    if test.classes != train.classes:
        raise DataNotFoundError(f"imagefolder {root}: train and test class folders differ")
    return DataBundle(f"imagefolder:{root}", train, test, (channels, h, w), len(train.classes))
