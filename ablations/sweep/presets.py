"""Named starting points for a sweep: known-good recipes whose keys --set and --grid then override.

`cifar10` is the reference recipe of locuslab/convmixer-cifar10 (README: ConvMixer-256/8, kernel 5, patch 2,
`--lr-max=0.05 --ra-n=2 --ra-m=12 --wd=0.005 --scale=1.0 --jitter=0 --reprob=0`, 25 epochs, batch 512,
no gradient clipping; about 92.5% test accuracy); precision stays `auto` (bf16 on a GPU, where the reference
used fp16 autocast). `cifar10-jpeg` is the same recipe on the JPEG copy of CIFAR-10, whose path the user gives
(data_root, or $CONVMIXER_CIFAR10_JPEG: ablations.data.default_cifar10_jpeg). `smoke` is a tiny model on synthetic
data whose four-run kernel-size sweep finishes in about two minutes on two CPU cores, so every command can be tried
before a GPU is involved. `paper-cifar10`, `imagenet`, `imagenet-budget` and `imagenette` are the paper's settings
and short ImageNet-class schedules; each cites its source beside its values, and says in its description what it
cannot do as the source did (docs/sweeps.md lists the differences). `keys_help` lists every key with its value in a
preset, for the --help of a command that takes --preset; `sweep_data_root` and `check_data_read` settle the
data_root of a preset's runs.
"""

from collections.abc import Iterable
from dataclasses import dataclass, fields

from ablations.config import ACCEPTED, MODEL_KEYS, NOT_IDENTITY, ConfigError, RunConfig
from ablations.data import CIFAR10_JPEG_ENV, IMAGENET_ENV, default_data
from convmixer.registry import get_config


def model_values(name: str) -> dict:
    """The RunConfig keys of registered model `name`: a recipe names its model, and spells no knob again."""
    model = get_config(name)
    return {key: getattr(model, key) for key in MODEL_KEYS}


CIFAR10_RECIPE = {
    **model_values("convmixer_256_8_cifar10"),
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

# The authors' ImageNet command (locuslab/convmixer README, "exactly the settings we used"): timm train.py on 10
# GPUs, `-b 64 --opt adamw --epochs 150 --sched onecycle --amp --input-size 3 224 224 --lr 0.01
# --aa rand-m9-mstd0.5-inc1 --cutmix 0.5 --mixup 0.5 --reprob 0.25 --remode pixel --warmup-epochs 0 --opt-eps=1e-3
# --clip-grad 1.0`. The flags it leaves out take the defaults of their fork's train.py
# (locuslab/convmixer pytorch-image-models/train.py): --weight-decay 2e-5, --smoothing 0.1, --scale 0.08 1.0,
# --hflip 0.5, --mixup-prob 1.0, --mixup-switch-prob 0.5; --color-jitter 0.4 is not applied when --aa is given
# (timm's transforms_imagenet_train). Their OneCycle (timm/scheduler/onecycle_lr.py) is this toolkit's onecycle:
# np.interp over [0, 2E//5, 4E//5, E] -> [0, lr, lr/20, 0].
IMAGENET_RECIPE = {
    "dataset": "imagefolder",
    "image_size": 224,
    "epochs": 150,
    "batch_size": 640,  # 10 GPUs x 64: the global batch their lr 0.01 was tuned for
    "lr": 0.01,
    "weight_decay": 2e-5,
    "adam_eps": 1e-3,
    "schedule": "onecycle",
    "warmup_epochs": 0,
    "scale": 0.08,
    "hflip": True,
    # timm's rand-m9: 2 ops at magnitude 9 of its 0..10 scale (auto_augment.py: _LEVEL_DENOM = 10); this
    # toolkit's RandAugment counts magnitude 0..30 (torchvision's bins), so 9/10 of its range is 27.
    "randaug_n": 2,
    "randaug_m": 27,
    "jitter": 0.0,
    "reprob": 0.25,
    "mixup": 0.5,
    "cutmix": 0.5,
    "label_smoothing": 0.1,
    "clip_norm": 1.0,
}
# timm's RandAugment as `--aa rand-m9-mstd0.5-inc1` builds it (timm/data/auto_augment.py rand_augment_transform):
# the 15 increasing ops, each applied with probability 0.5 (AugmentOp's default prob), geometric ones filling with
# the mean colour (hparams img_mean), the magnitude's noise std 0.5 of 0..10, i.e. 1.5 of this toolkit's 0..30;
# crops and geometric ops resample bilinearly or bicubically at random (timm's train_interpolation "random", the
# default of the train.py the authors ran). Only in the presets that claim the authors' recipe: the others keep
# torchvision's RandAugment, bilinear resampling and their run ids.
TIMM_AUGMENT = {"randaug_ops": "timm", "randaug_mstd": 1.5, "train_interpolation": "random"}
# What the toolkit cannot do as their timm did; said in the description, never silently (docs/sweeps.md).
IMAGENET_DIFFERENCES = (
    "random erasing to zero (theirs: noise), mixup per sample (theirs per batch), weight decay on every parameter, "
    "bf16 (theirs fp16), BatchNorm over the whole batch (theirs 64 per GPU), and a subset small enough to sit on the "
    "device gets square crops of pre-resized images, normalised by and filled with its own mean colour (streamed, "
    "as the whole set is, crops come from the full-size file and RandAugment fills with ImageNet's mean, as theirs)"
)


@dataclass(frozen=True)
class NeededData:
    """Data a preset's runs read from a path only the user knows: it has no default location and no download."""

    what: str  # named in the error, e.g. "the CIFAR-10 JPEG copy"
    env: str  # the variable that gives its path when neither --data-root nor a data_root key does


CIFAR10_JPEG_DATA = NeededData("the CIFAR-10 JPEG copy", CIFAR10_JPEG_ENV)
IMAGENET_DATA = NeededData("ImageNet-1k (train/ and val/ with one folder per class)", IMAGENET_ENV)


@dataclass(frozen=True)
class Preset:
    description: str
    values: dict
    needs: NeededData | None = None  # its runs read data whose path the user gives


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
        needs=CIFAR10_JPEG_DATA,
    ),
    "paper-cifar10": Preset(
        "ConvMixer-256/8 k9 p1, 200 epochs, the paper's CIFAR-10 setting (Table 4: 96.03%) as locuslab/convmixer#15 "
        "spelt it in timm flags (95.89% there); unlike theirs, as imagenet: square crops, erasing to zero, mixup per "
        "sample; normalised by, and RandAugment filling with, CIFAR-10's mean as their --mean (its training split's, "
        "computed)",
        {
            "dataset": "cifar10",
            **model_values("convmixer_256_8_ks9_p1_cifar10"),
            # The paper gives no runnable command for its CIFAR-10 table; the one published flag set is the
            # authors' ImageNet command adapted by a user in locuslab/convmixer#15: `-b 64 --epochs 200 --lr 0.01
            # --scale 0.75 1.0 --weight-decay 0.01 --input-size 3 32 32 --mean 0.4914 0.4822 0.4465 --std 0.2471
            # 0.2435 0.2616`, the rest as IMAGENET_RECIPE. (The toolkit normalises CIFAR-10 by its own statistics.)
            **{
                key: IMAGENET_RECIPE[key]
                for key in ("adam_eps", "schedule", "warmup_epochs", "hflip", "randaug_n", "randaug_m", "jitter")
                + ("reprob", "mixup", "cutmix", "label_smoothing", "clip_norm")
            },
            **TIMM_AUGMENT,
            "epochs": 200,
            "batch_size": 64,
            "lr": 0.01,
            "weight_decay": 0.01,
            "scale": 0.75,
        },
    ),
    "imagenet": Preset(
        f"ConvMixer-1536/20 on ImageNet, the authors' timm recipe (locuslab/convmixer README; 81.37% top-1), "
        f"150 epochs at 224 px; unlike theirs: {IMAGENET_DIFFERENCES}",
        {**model_values("convmixer_1536_20"), **IMAGENET_RECIPE, **TIMM_AUGMENT},
        needs=IMAGENET_DATA,
    ),
    "imagenet-budget": Preset(
        "ConvMixer-1024/20 p14 on ImageNet, 16 epochs at 168 px, for ablations compared at one budget (FFCV-style "
        "short schedule); the imagenet recipe's optimiser (and its differences), augmentation as FFCV's (crop, flip, "
        "label smoothing)",
        {
            **model_values("convmixer_1024_20_ks9_p14"),
            **IMAGENET_RECIPE,
            # libffcv/ffcv-imagenet rn50_configs/rn50_16_epochs.yaml: 16 epochs, training resolution 160 -> 192
            # (no fixed size here: 168 = 12 patches of 14 px), label_smoothing 0.1, random-resized crop and flip
            # only (no RandAugment, mixup, cutmix or erasing), evaluation at a higher resolution (256). The authors
            # suggest patch 14 to train faster (locuslab/convmixer#12); their ConvMixer-1024/20 p14 made 76.94%.
            "image_size": 168,
            "epochs": 16,
            "randaug_n": 0,
            "reprob": 0.0,
            "mixup": 0.0,
            "cutmix": 0.0,
        },
        needs=IMAGENET_DATA,
    ),
    "imagenette": Preset(
        "ConvMixer-512/12 k9 p8 on Imagenette (torchvision's 160 px copy, 10 ImageNet classes, downloaded into "
        "data_root) at 128 px, 40 epochs, the imagenet recipe (and its differences): a small real set for "
        "quick ablations",
        {
            # fastai/imagenette README: 10 easily classified ImageNet classes, a leaderboard at 128 px from its
            # 160 px copy; torchvision.datasets.Imagenette(size="160px") downloads it. No ConvMixer recipe for it is
            # published: the model (a 16x16 patch grid at 128 px) and the 40 epochs are this toolkit's choice, the
            # optimiser and augmentation the authors' ImageNet ones at the batch of one GPU.
            **IMAGENET_RECIPE,
            "dataset": "imagenette",
            "dim": 512,
            "depth": 12,
            "kernel_size": 9,
            "patch_size": 8,
            "activation": "gelu",
            "image_size": 128,
            "epochs": 40,
            "batch_size": 128,
        },
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
        if f.name == "data_root" and PRESETS[preset].needs is not None:
            value = "(required)"  # the user's copy: --data-root or the preset's variable, never a default path
        rows.append(f"  {f.name:<16} {value!s:<12} {accepted}")
    presets = "\n".join(f"  {name:<16} {p.description}" for name, p in PRESETS.items())
    header = (
        f"keys, with their values in preset {preset} (`--preset NAME --help` shows another's), and what they accept:"
    )
    return f"{header}\n" + "\n".join(rows) + f"\n\npresets:\n{presets}"


def sweep_data_root(preset: str, keys: Iterable[str], given: str | None) -> str | None:
    """The data_root every run of a sweep gets instead of its own (None: its own): `given` (--data-root); else, for
    a preset whose data no key names, the path in its variable. A ConfigError in one line when that is not set,
    before anything runs."""
    needs = PRESETS[preset].needs
    if given is not None or needs is None or "data_root" in keys:
        return given
    found = default_data(needs.env)
    if found is None:
        raise ConfigError(
            f"preset {preset} needs {needs.what}: give its path with --data-root PATH, --set data_root=PATH "
            f"or ${needs.env} (where to get it: docs/data.md)"
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
