"""Named configs of the models in the paper, in the spirit of timm's model registry.

The ImageNet names match timm's (`convmixer_1536_20`, ...), whose checkpoints `convmixer.interop`
converts. The CIFAR-10 entries are the reference recipe's ConvMixer-256/8 and the paper's k9 p1 variant.
Each entry also records the image side it is meant for, like the input_size of timm's default_cfg: 224 for
the ImageNet models, 32 for the CIFAR-10 ones (the counter uses it unless told another size), and how its images
are prepared for evaluation (crop_pct, interpolation, mean, std: the rest of timm's pretrained cfg).
"""

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from convmixer.config import ConvMixerConfig
from convmixer.transforms import EvalSettings, EvalTransform

if TYPE_CHECKING:
    from convmixer.model import ConvMixer


# timm's IMAGENET_DEFAULT_MEAN and IMAGENET_DEFAULT_STD: the toolkit's one copy of ImageNet's channel statistics.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The pretrained cfg of every ConvMixer in timm (timm/models/convmixer.py _cfg, as the authors' fork's): also what
# a ConvMixer trained here on streamed ImageNet-style data is tested with (ablations.data.stream).
CONVMIXER_EVAL = EvalSettings(crop_pct=0.96, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass(frozen=True)
class RegisteredModel:
    config: ConvMixerConfig
    image_size: int  # input side in pixels the model was trained at
    eval_settings: EvalSettings = CONVMIXER_EVAL

    def eval_transform(self) -> EvalTransform:
        """timm's evaluation transform of this model at its own image size."""
        return EvalTransform(self.image_size, self.eval_settings)


MODELS: dict[str, RegisteredModel] = {
    "convmixer_1536_20": RegisteredModel(
        ConvMixerConfig(dim=1536, depth=20, kernel_size=9, patch_size=7, num_classes=1000), 224
    ),
    "convmixer_768_32": RegisteredModel(
        ConvMixerConfig(dim=768, depth=32, kernel_size=7, patch_size=7, num_classes=1000, activation="relu"), 224
    ),
    "convmixer_1024_20_ks9_p14": RegisteredModel(
        ConvMixerConfig(dim=1024, depth=20, kernel_size=9, patch_size=14, num_classes=1000), 224
    ),
    "convmixer_256_8_cifar10": RegisteredModel(
        ConvMixerConfig(dim=256, depth=8, kernel_size=5, patch_size=2, num_classes=10), 32
    ),
    "convmixer_256_8_ks9_p1_cifar10": RegisteredModel(
        ConvMixerConfig(dim=256, depth=8, kernel_size=9, patch_size=1, num_classes=10), 32
    ),
}
MODEL_CONFIGS: dict[str, ConvMixerConfig] = {name: model.config for name, model in MODELS.items()}


def list_models() -> list[str]:
    return sorted(MODELS)


def registered(name: str) -> RegisteredModel:
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not registered; choose one of {', '.join(list_models())}")
    return MODELS[name]


def get_config(name: str) -> ConvMixerConfig:
    return registered(name).config


def default_image_size(name: str) -> int:
    """The image side the registered model is meant for (its training resolution)."""
    return registered(name).image_size


def create_model(name: str, **overrides: object) -> "ConvMixer":
    """Build a registered model; keyword overrides replace config fields (e.g. `num_classes=100`)."""
    config = get_config(name)
    accepted = sorted(field.name for field in dataclasses.fields(config))
    unknown = set(overrides) - set(accepted)
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)}; accepted: {accepted}")
    return dataclasses.replace(config, **overrides).build()
