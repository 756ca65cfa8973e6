"""Named starting points for a sweep: known-good recipes whose keys --set and --grid then override.

`cifar10` is the reference recipe of locuslab/convmixer-cifar10 (README: ConvMixer-256/8, kernel 5, patch 2,
`--lr-max=0.05 --ra-n=2 --ra-m=12 --wd=0.005 --scale=1.0 --jitter=0 --reprob=0`, 25 epochs, batch 512,
no gradient clipping; about 92.5% test accuracy); precision stays `auto` (bf16 on a GPU, where the reference
used fp16 autocast). `cifar10-jpeg` is the same recipe on the JPEG copy of CIFAR-10, whose path the user gives
(data_root, or $CONVMIXER_CIFAR10_JPEG: ablations.data.default_cifar10_jpeg). `smoke` is a tiny model on synthetic
data whose four-run kernel-size sweep finishes in about two minutes on two CPU cores, so every command can be tried
before a GPU is involved. `keys_help` lists every key with its value in a preset, for the --help of a command that
takes --preset; `sweep_data_root` and `check_data_read` settle the data_root of a preset's runs.
"""

from collections.abc import Iterable
from dataclasses import dataclass, fields

from ablations.config import ACCEPTED, NOT_IDENTITY, ConfigError, RunConfig
from ablations.data import CIFAR10_JPEG_ENV, default_cifar10_jpeg
from convmixer.registry import get_config

# The model is the registry's (convmixer_256_8_cifar10): the recipe adds how it trains, and spells no knob again.
CIFAR10_MODEL = get_config("convmixer_256_8_cifar10")
CIFAR10_RECIPE = {
    **{key: getattr(CIFAR10_MODEL, key) for key in ("dim", "depth", "kernel_size", "patch_size")},
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
    needs_cifar10_jpeg: bool = False  # its runs read the CIFAR-10 JPEG copy, whose path the user gives


PRESETS = {
    "smoke": Preset(
        "ConvMixer-64/1 (patch 4), 8 epochs on 5,000 synthetic images, flips only: 4 runs in 28 s on 2 idle cores",
        {
            "dataset": "synthetic",
            # One mixer layer on a 8x8 patch grid: the receptive field is k patches (4k px), and the synthetic class
            # needs two markers 9-14 px apart in one view. k=3 (12 px) cannot see both, k>=7 can, so the sweep's
            # kernel-size effect is structural and holds on every seed (k=7 and k=9 beat k=3 on seeds 0-4).
            "dim": 64,
            "depth": 1,
            "patch_size": 4,
            "train_subset": 5000,
            "test_subset": 1000,
            "epochs": 8,
            "batch_size": 64,
            "lr": 0.02,
            # The synthetic set needs no augmentation beyond flips to generalise, and on a CPU RandAugment would cost
            # more than the model.
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
        f"the cifar10 recipe on the JPEG q75 copy of CIFAR-10 at data_root (or ${CIFAR10_JPEG_ENV}; docs/data.md)",
        {"dataset": "imagefolder", **CIFAR10_RECIPE},
        needs_cifar10_jpeg=True,
    ),
}
DEFAULT_PRESET = "smoke"
READS_NO_FILES = ("synthetic",)  # datasets made in memory: a data_root means nothing to them


def keys_help(preset: str) -> str:
    """Every key with its value under `preset` (what a run gets unless --set/--grid/--vary change it) and what
    it accepts."""
    values = RunConfig(**PRESETS[preset].values)
    rows = []
    for f in fields(RunConfig):
        rule = ACCEPTED.get(f.name)
        accepted = rule.describe().removeprefix("expected ") if rule else "true or false"
        if f.name in NOT_IDENTITY:
            accepted = "a folder or archive path (not part of the run id)"
        value = getattr(values, f.name)
        if f.name == "data_root" and PRESETS[preset].needs_cifar10_jpeg:
            value = "(required)"  # the user's copy: --data-root or $CONVMIXER_CIFAR10_JPEG, never a default path
        rows.append(f"  {f.name:<16} {value!s:<12} {accepted}")
    presets = "\n".join(f"  {name:<16} {p.description}" for name, p in PRESETS.items())
    header = (
        f"keys, with their values in preset {preset} (`--preset NAME --help` shows another's), and what they accept:"
    )
    return f"{header}\n" + "\n".join(rows) + f"\n\npresets:\n{presets}"


def sweep_data_root(preset: str, keys: Iterable[str], given: str | None) -> str | None:
    """The data_root every run of a sweep gets instead of its own (None: its own): `given` (--data-root); else, for
    a preset whose data no key names, the default location of the CIFAR-10 JPEG copy. A ConfigError in one line
    when that has none, before anything runs."""
    if given is not None or not PRESETS[preset].needs_cifar10_jpeg or "data_root" in keys:
        return given
    found = default_cifar10_jpeg()
    if found is None:
        raise ConfigError(
            f"preset {preset} needs the CIFAR-10 JPEG copy: give its path with --data-root PATH, --set data_root=PATH "
            f"or ${CIFAR10_JPEG_ENV} (where to get it: docs/data.md)"
        )
    return found


def check_data_read(datasets: Iterable[str], given: str | None) -> None:
    """Refuse a data_root the runs would not read: `given` is how the user named one ("--data-root '/x'",
    "data_root='/x'"), None when they did not. Synthetic runs read no files, so a path given to them is a forgotten
    --preset, and a synthetic result would be recorded under the real data's path."""
    if given is not None and set(datasets) <= set(READS_NO_FILES):
        raise ConfigError(
            f"{given} is not accepted: the runs train on synthetic data, which reads no files; to train on the data "
            "there add --preset cifar10-jpeg (the JPEG copy of CIFAR-10), --preset cifar10 or --set dataset=..."
        )
