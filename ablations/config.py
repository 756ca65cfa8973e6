"""One training run, as a plain dataclass: the single source of truth for every sweepable key.

The grid runner overrides fields from the command line (`--grid kernel_size=3,7`), validates them
with `validate()` before anything runs, and derives each run's id from `to_dict()`. A key's value is read by
its field's type here, from text (`parse_value`: the command line, the report's --baseline) or from TOML
(`typed_value`: study files).
"""

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from convmixer.arguments import AUTOCAST_PRECISIONS, check_patch_fits
from convmixer.config import ACTIVATION_NAMES, IMPLS, NORM_NAMES, RESIDUAL_NAMES, ConvMixerConfig
from convmixer.registry import MODEL_CONFIGS

DATASETS = ("synthetic", "cifar10", "cifar100", "imagefolder", "imagenette")
DECODES = ("cpu", "gpu", "auto")
BAD_IMAGES = ("error", "skip")
RANDAUG_OP_SETS = ("torchvision", "timm")  # ablations.data.augment: rand_augment, timm_rand_augment
TRAIN_INTERPOLATIONS = ("bilinear", "random")  # random: bilinear or bicubic, drawn per image and per resample
SCHEDULES = ("onecycle", "cosine")
RUN_PRECISIONS = ("auto", *sorted(AUTOCAST_PRECISIONS))  # a run's precision: auto (the device decides) or one
DEPTHWISE_IMPLS = ("auto", *IMPLS)
# Switches that also accept "auto": the engine settles them by timing on the device.
AUTO_SWITCHES = ("channels_last",)
# Native image side of the datasets whose size is known before loading them.
NATIVE_IMAGE_SIZE = {"synthetic": 32, "cifar10": 32, "cifar100": 32}
# A run's seed, not torch's (convmixer.check.MAX_TORCH_SEED, 2**64-1): train.seed_epoch multiplies it by ~1e6
# before seeding torch, and 32-bit run seeds leave a wide margin below torch's limit.
MAX_RUN_SEED = 2**32 - 1
# Far above any image a ConvMixer is trained on; beyond it a resize of the dataset only ends in an allocator crash.
MAX_IMAGE_SIZE = 4096
# Far above any rate or decay that trains, and below what torch cannot run: lr=1e300 overflows float32 when AdamW
# makes a tensor of it (lr x weight_decay too), a failure at run time instead of a refusal here.
MAX_LR, MAX_WEIGHT_DECAY = 1e6, 1e6
# Keys added after results were first committed, with the value every earlier run had: a run holding that value
# leaves the key out of its id, so adding a key never renames the runs already in a store.
LATER_KEYS: dict[str, object] = {
    "tf32": True,
    "depthwise_impl": "torch",
    "adam_eps": 1e-8,
    "decode": "cpu",
    "bad_images": "error",
    "sync_bn": True,
    "accum_steps": 1,
    "checkpoint_activations": False,
    "randaug_ops": "torchvision",
    "randaug_mstd": 0.0,
    "cuda_graphs": False,
    "train_interpolation": "bilinear",
}
# Hex digits of a run id (64 bits); results written before ids had 16 were named by LEGACY_RUN_ID_LENGTH.
RUN_ID_LENGTH, LEGACY_RUN_ID_LENGTH = 16, 10
# Keys that say where a run's inputs live, not what the run is: left out of its id (the data itself is checked).
NOT_IDENTITY = ("data_root",)
# The model a run trains unless told otherwise: the CIFAR-10 reference ConvMixer-256/8 (k5, p2), not the model's
# own defaults (convmixer.model.ConvMixerConfig: the paper's ImageNet signature, k9 p7), since sweeps train on
# CIFAR-sized images.
REFERENCE_MODEL = MODEL_CONFIGS["convmixer_256_8_cifar10"]
# The ConvMixerConfig fields a run sets as its own keys (the data sets the others): a new model knob is a field
# there and a key in RunConfig, and model_config passes it on by name.
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ConvMixerConfig) if f.name not in ("num_classes", "in_chans"))


def repository(folder: Path) -> Path | None:
    """The git work tree that holds `folder` (a clone or a worktree: it has .git), or None (a pip install used
    outside any checkout)."""
    return next((path for path in (folder, *folder.parents) if (path / ".git").exists()), None)


def portable_path(path: str) -> str:
    """How results record a data path: relative to the repository (the git work tree of the current folder) when
    it lies inside it, else only its file or folder name. The data's identity (data.json) does the matching, so
    a result names where its data lives without committing a machine's path."""
    absolute = Path(os.path.abspath(os.path.expanduser(path)))
    repo = repository(Path.cwd())
    if repo is not None and absolute.is_relative_to(repo):
        return str(absolute.relative_to(repo))
    return absolute.name


class ConfigError(ValueError):
    """A config value that is not accepted; the message is one line naming key, value and what is accepted."""


@dataclass
class RunConfig:
    # model (defaults: REFERENCE_MODEL, the CIFAR-10 ConvMixer-256/8; classes and channels come from the data)
    dim: int = REFERENCE_MODEL.dim
    depth: int = REFERENCE_MODEL.depth
    kernel_size: int = REFERENCE_MODEL.kernel_size
    patch_size: int = REFERENCE_MODEL.patch_size
    residual: str = REFERENCE_MODEL.residual
    norm: str = REFERENCE_MODEL.norm
    activation: str = REFERENCE_MODEL.activation
    # data
    dataset: str = "synthetic"
    data_root: str = "data"
    image_size: int = 0  # 0: the dataset's native size
    train_subset: int = 0  # 0: all images; else this many, stratified by class
    test_subset: int = 0
    # A streamed dataset's decoder (ablations.data.stream): Pillow in the loader workers, nvJPEG on the device, or
    # auto (gpu where CUDA and torchvision's CUDA decode are there). Part of the id: the decoders' pixels differ.
    decode: str = "cpu"
    bad_images: str = "error"  # an unreadable, corrupt or refused image, an empty class folder: error, or skip
    # augmentation (the reference recipe's switches; 0 turns one off)
    scale: float = 0.75  # random-resized-crop minimum area fraction; 1.0 = no crop
    hflip: bool = True
    randaug_n: int = 1  # RandAugment ops per image
    randaug_m: int = 8  # RandAugment magnitude, 0..30
    # torchvision's RandAugment (14 ops, each image one) or timm's (its 15 "increasing" ops, each applied with
    # probability 0.5, geometric ones filling with the mean colour), as the authors' `--aa rand-m9-mstd0.5-inc1`
    randaug_ops: str = "torchvision"
    randaug_mstd: float = 0.0  # timm's RandAugment only: per-image Gaussian noise on the magnitude (0..30 units)
    # How training crops and RandAugment's geometric ops resample: bilinear, or "random", bilinear or bicubic drawn
    # for each image at each resample (timm's `--train-interpolation random`, its default and the authors')
    train_interpolation: str = "bilinear"
    jitter: float = 0.1  # colour jitter strength
    reprob: float = 0.25  # random erasing probability
    mixup: float = 0.0  # mixup Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # cutmix Beta(alpha, alpha); 0 = off
    # training
    epochs: int = 25
    batch_size: int = 512
    lr: float = 0.01
    weight_decay: float = 0.01
    adam_eps: float = 1e-8  # AdamW's eps (torch's default); the authors' ImageNet recipe used 1e-3
    schedule: str = "onecycle"
    warmup_epochs: int = 0  # cosine only
    label_smoothing: float = 0.0
    clip_norm: float = 1.0  # 0 = no gradient clipping
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    tf32: bool = True  # CUDA, precision fp32: convolutions may use TF32 tensor cores (torch's default); false: IEEE
    channels_last: bool | str = True  # or "auto": on CUDA, the faster layout, timed (convmixer.depthwise)
    depthwise_impl: str = "torch"  # cuDNN's depthwise conv, "triton" (CUDA only) or "auto": the faster, timed
    compile: bool = False
    # several processes per run (DDP, docs/engine.md): batch_size is the global batch, split over the processes
    sync_bn: bool = True  # BatchNorm statistics over the global batch; false: each process's own (as timm's runs)
    accum_steps: int = 1  # gradient accumulation: each process's batch in this many forward/backward passes
    checkpoint_activations: bool = False  # recompute each mixer block's activations in the backward pass
    cuda_graphs: bool = False  # with compile: replay the compiled forward and backward as CUDA graphs (CUDA only)
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}")
        return cls(**values)

    def run_id(self) -> str:
        """A stable id from every field but NOT_IDENTITY's and the LATER_KEYS that hold the value runs had before
        the key existed."""
        identity = {
            k: v
            for k, v in self.to_dict().items()
            if k not in NOT_IDENTITY and not (k in LATER_KEYS and LATER_KEYS[k] == v)
        }
        # 64 bits: 40 (LEGACY_RUN_ID_LENGTH hex digits, the ids before) collided within a million seeds.
        return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:RUN_ID_LENGTH]

    def with_absolute_data_root(self, data_root: str | None = None) -> "RunConfig":
        """This config with data_root (or the given one) made absolute against the current folder, as a path typed
        in a shell means. The sweep trains with it (a worker or SLURM job may start in another folder) and records
        `recorded()` instead."""
        path = self.data_root if data_root is None else data_root
        return dataclasses.replace(self, data_root=os.path.abspath(os.path.expanduser(path)))

    def recorded(self) -> "RunConfig":
        """This config as results record it: data_root portable (`portable_path`), never a machine's own path."""
        return dataclasses.replace(self, data_root=portable_path(self.data_root))

    def model_config(self, num_classes: int, in_chans: int = 3) -> ConvMixerConfig:
        """The model this run trains; classes and channels come from the data, every other field from MODEL_KEYS."""
        return ConvMixerConfig(
            num_classes=num_classes, in_chans=in_chans, **{key: getattr(self, key) for key in MODEL_KEYS}
        )

    @property
    def model_name(self) -> str:
        """ConvMixerConfig.name of the model this run trains (known before the data is)."""
        return ConvMixerConfig(dim=self.dim, depth=self.depth).name

    def validate(self) -> None:
        """Raise ConfigError on the first value that is out of type, range or choice (the rules: ACCEPTED)."""
        for key, rule in ACCEPTED.items():
            value = getattr(self, key)
            if isinstance(value, float) and not math.isfinite(value):  # nan slips through every range check
                raise ConfigError(f"{key}={value!r} is not accepted: expected a finite number")
            if not rule.accepts(value):
                raise ConfigError(f"{key}={value!r} is not accepted: {rule.describe()}")
        if self.cuda_graphs and not self.compile:
            raise ConfigError("cuda_graphs=True is not accepted with compile=False: CUDA graphs replay compiled code")
        size = self.image_size or NATIVE_IMAGE_SIZE.get(self.dataset)
        if size is not None:  # else (an ImageFolder tree at its native size) build_data checks it once loaded
            self.check_image_size(size, f" of {self.dataset}")

    def check_image_size(self, image_size: int, images: str) -> None:
        """ConfigError unless this run's patch fits in images of image_size (`images`: whose, for the message)."""
        try:
            check_patch_fits(self.patch_size, image_size, images)
        except ValueError as error:
            raise ConfigError(str(error)) from None


@dataclass(frozen=True)
class Range:
    """The numbers a key accepts: [low, high], or (low, high] with open_low."""

    kind: type
    low: float
    high: float = math.inf
    open_low: bool = False
    note: str = ""  # what a special value means, e.g. "0: the dataset's native size"

    def accepts(self, value: object) -> bool:
        kinds = (int,) if self.kind is int else (int, float)  # an integer is a number too; True is neither here
        if isinstance(value, bool) or not isinstance(value, kinds):  # a hand-edited config.json may hold "3"
            return False
        return (value > self.low if self.open_low else value >= self.low) and value <= self.high

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        low = f"{self.low:g}" if self.kind is float else str(int(self.low))
        if self.high == math.inf:
            bounds = f"{'>' if self.open_low else '>='} {low}"
        else:
            high = f"{self.high:g}" if self.kind is float else str(int(self.high))
            bounds = f"in {'(' if self.open_low else '['}{low}, {high}]"
        return f"expected {noun} {bounds}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]

    def accepts(self, value: str) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return f"choose one of {', '.join(self.choices)}"


@dataclass(frozen=True)
class AutoSwitch:
    """A switch (true or false) that also accepts "auto"."""

    def accepts(self, value: object) -> bool:
        return type(value) is bool or value == "auto"

    def describe(self) -> str:
        return "expected true, false or auto"


# What every checked key accepts: validate() enforces it and `python -m ablations.run --help` prints it.
ACCEPTED: dict[str, Range | Choice | AutoSwitch] = {
    "dim": Range(int, 1),
    "depth": Range(int, 0),
    "kernel_size": Range(int, 1),
    "patch_size": Range(int, 1),
    "residual": Choice(RESIDUAL_NAMES),
    "norm": Choice(NORM_NAMES),
    "activation": Choice(ACTIVATION_NAMES),
    "dataset": Choice(DATASETS),
    "image_size": Range(int, 0, MAX_IMAGE_SIZE, note="0: the dataset's native size"),
    "train_subset": Range(int, 0, note="0: all images"),
    "test_subset": Range(int, 0, note="0: all images"),
    "decode": Choice(DECODES),
    "bad_images": Choice(BAD_IMAGES),
    "scale": Range(float, 0.0, 1.0, open_low=True),
    "randaug_n": Range(int, 0),
    "randaug_m": Range(int, 0, 30),
    "randaug_ops": Choice(RANDAUG_OP_SETS),
    "randaug_mstd": Range(float, 0.0, 30.0),
    "train_interpolation": Choice(TRAIN_INTERPOLATIONS),
    "jitter": Range(float, 0.0, 1.0),
    "reprob": Range(float, 0.0, 1.0),
    "mixup": Range(float, 0.0, note="0: off"),
    "cutmix": Range(float, 0.0, note="0: off"),
    "epochs": Range(int, 1),
    "batch_size": Range(int, 1),
    "lr": Range(float, 0.0, MAX_LR, open_low=True),
    "weight_decay": Range(float, 0.0, MAX_WEIGHT_DECAY),
    "adam_eps": Range(float, 0.0, 1.0, open_low=True),
    "schedule": Choice(SCHEDULES),
    "warmup_epochs": Range(int, 0),
    "label_smoothing": Range(float, 0.0, 1.0),
    "clip_norm": Range(float, 0.0, note="0: no clipping"),
    "precision": Choice(RUN_PRECISIONS),
    "channels_last": AutoSwitch(),
    "depthwise_impl": Choice(DEPTHWISE_IMPLS),
    "accum_steps": Range(int, 1),
    "seed": Range(int, 0, MAX_RUN_SEED),
}


def field_types() -> dict[str, type]:
    """The Python type of each config key, for parsing command-line values."""
    return {f.name: type(f.default) for f in dataclasses.fields(RunConfig)}


# How a command line spells a switch (--set hflip=no); parse_value accepts these and nothing else for a bool key.
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
# What typed_value says a TOML value of each field type must be.
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def parse_value(key: str, text: str, option: str) -> object:
    """A command-line string as the Python value of config key `key`."""
    kind = field_types()[key]
    word = text.strip()
    if word == "":
        raise ConfigError(f"{option}: empty value for {key}")
    if kind is bool:
        autos = ("auto",) if key in AUTO_SWITCHES else ()
        if word.lower() in autos:
            return "auto"
        if word.lower() in TRUE_WORDS + FALSE_WORDS:
            return word.lower() in TRUE_WORDS
        raise ConfigError(
            f"{option}: {key}={word!r} is not accepted: expected one of {'/'.join(TRUE_WORDS + FALSE_WORDS + autos)}"
        )
    if kind is int:
        try:
            return int(word)
        except ValueError:
            raise ConfigError(f"{option}: {key}={word!r} is not accepted: expected an integer") from None
    if kind is float:
        try:
            number = float(word)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(f"{option}: {key}={word!r} is not accepted: expected a finite number")
        return number
    return word


def typed_value(key: str, value: object, where: str) -> object:
    """`value` as the RunConfig field `key` holds it; TOML already typed it, so only check (ints pass as floats)."""
    kind = field_types()[key]
    if kind is float and type(value) is int:
        return float(value)
    if key in AUTO_SWITCHES and value == "auto":
        return value
    if type(value) is not kind:
        raise ConfigError(f"{where} {key}={value!r} is not accepted: expected {TYPE_NAMES[kind]}")
    return value
