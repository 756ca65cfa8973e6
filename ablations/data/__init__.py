"""Data: where the images come from (sources.py, synthetic.py) and how they reach the device (loaders.py, augment.py).

This front stays free of torch so that the report and the benchmarks can name a run's data without loading it.
"""

import os
from pathlib import Path

# The JPEG re-encoding of CIFAR-10 (cifar10-jpeg.tar.gz, or a tree unpacked from it; docs/data.md) is not
# CIFAR-10: its README asks that every result on it carry this label, so exactly one rule may decide it.
CIFAR10_JPEG = "cifar10-jpeg"
# Where a command finds the JPEG copy when it is not told: the one place that default lives (docs/data.md).
CIFAR10_JPEG_ENV = "CONVMIXER_CIFAR10_JPEG"
CIFAR10_JPEG_LABEL = "CIFAR-10 (JPEG q75 copy)"
# The folder torchvision.datasets.Imagenette makes for its 160 px copy under data_root (the imagenette dataset).
IMAGENETTE_FOLDER = "imagenette2-160"
# Where a command finds ImageNet (train/ and val/ class folders) when it is not told (docs/data.md).
IMAGENET_ENV = "CONVMIXER_IMAGENET"
LABELS = {"synthetic": "synthetic", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenette": "Imagenette (160 px)"}


class DataError(ValueError):
    """The data cannot be found or read; the message is one line saying what to change. Defined here, torch-free,
    so that every command imports it from one place (`from ablations.data import DataError`)."""


def dataset_label(dataset: str, data_root: str) -> str:
    """How results name the data of a run: "CIFAR-10", "ImageFolder pets", or "CIFAR-10 (JPEG q75 copy)"."""
    root = Path(data_root).name
    if dataset == "imagefolder":
        return CIFAR10_JPEG_LABEL if root.startswith(CIFAR10_JPEG) else f"ImageFolder {root}"
    return LABELS.get(dataset, root)


def cache_dir() -> Path:
    """The toolkit's cache folder: $CONVMIXER_CACHE, default ~/.cache/convmixer (decoded splits, shard indexes)."""
    return Path(os.environ.get("CONVMIXER_CACHE", "~/.cache/convmixer")).expanduser()


def default_data(env: str) -> str | None:
    """The path of a dataset only the user can place, when a command is not given one: $env, else None."""
    return os.environ.get(env) or None


def default_cifar10_jpeg() -> str | None:
    """The path of the CIFAR-10 JPEG copy when a command is not given one: $CONVMIXER_CIFAR10_JPEG, else None."""
    return default_data(CIFAR10_JPEG_ENV)
