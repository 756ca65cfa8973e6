"""Named starting points for a sweep: known-good recipes whose keys --set and --grid then override.

`cifar10` is the reference recipe of locuslab/convmixer-cifar10 (README: ConvMixer-256/8, kernel 5, patch 2,
`--lr-max=0.05 --ra-n=2 --ra-m=12 --wd=0.005 --scale=1.0 --jitter=0 --reprob=0`, 25 epochs, batch 512,
no gradient clipping; about 92.5% test accuracy); precision stays `auto` (bf16 on a GPU, where the reference
used fp16 autocast). `smoke` is a tiny model on synthetic data that finishes a
four-run sweep in about a minute on a laptop CPU, so every command can be tried before a GPU is involved.
"""

from dataclasses import dataclass

CIFAR10_RECIPE = {
    "dim": 256,
    "depth": 8,
    "kernel_size": 5,
    "patch_size": 2,
    "epochs": 25,
    "batch_size": 512,
    "lr": 0.05,
    "weight_decay": 0.005,
    "schedule": "onecycle",
    "randaug_n": 2,
    "randaug_m": 12,
    "scale": 1.0,
    "jitter": 0.0,
    "reprob": 0.0,
    "hflip": True,
    "clip_norm": 0.0,
}


@dataclass(frozen=True)
class Preset:
    description: str
    values: dict


PRESETS = {
    "smoke": Preset(
        "ConvMixer-32/3 (patch 4), 5 epochs on 5,000 synthetic images, flips only: 10-30 s per run on a CPU",
        {
            "dataset": "synthetic",
            "dim": 32,
            "depth": 3,
            "patch_size": 4,
            "train_subset": 5000,
            "test_subset": 1000,
            "epochs": 5,
            "batch_size": 64,
            "lr": 0.02,
            # The synthetic set needs no augmentation beyond flips to generalise, and on a CPU RandAugment would cost
            # more than the model: without it the smoke sweep shows a clear kernel-size effect in about a minute.
            "randaug_n": 0,
            "jitter": 0.0,
            "reprob": 0.0,
            "scale": 1.0,
        },
    ),
    "cifar10": Preset(
        "reference ConvMixer-256/8 CIFAR-10 recipe (locuslab/convmixer-cifar10, ~92.5% in 25 epochs)",
        {"dataset": "cifar10", **CIFAR10_RECIPE},
    ),
    "cifar10-jpeg": Preset(
        "the cifar10 recipe on the JPEG q75 copy of CIFAR-10 in ../shared/data (label results accordingly)",
        {"dataset": "imagefolder", "data_root": "../shared/data/cifar10-jpeg.tar.gz", **CIFAR10_RECIPE},
    ),
}
DEFAULT_PRESET = "smoke"
