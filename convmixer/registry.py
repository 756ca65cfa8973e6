"""Named configs of the models in the paper, in the spirit of timm's model registry.

The ImageNet names match timm's (`convmixer_1536_20`, ...), whose checkpoints `convmixer.interop`
converts. The CIFAR-10 entries are the reference recipe's ConvMixer-256/8 and the paper's k9 p1 variant.
"""

import dataclasses

from convmixer.model import ConvMixer, ConvMixerConfig

MODEL_CONFIGS: dict[str, ConvMixerConfig] = {
    "convmixer_1536_20": ConvMixerConfig(dim=1536, depth=20, kernel_size=9, patch_size=7, n_classes=1000),
    "convmixer_768_32": ConvMixerConfig(
        dim=768, depth=32, kernel_size=7, patch_size=7, n_classes=1000, activation="relu"
    ),
    "convmixer_1024_20_ks9_p14": ConvMixerConfig(dim=1024, depth=20, kernel_size=9, patch_size=14, n_classes=1000),
    "convmixer_256_8_cifar10": ConvMixerConfig(dim=256, depth=8, kernel_size=5, patch_size=2, n_classes=10),
    "convmixer_256_8_ks9_p1_cifar10": ConvMixerConfig(dim=256, depth=8, kernel_size=9, patch_size=1, n_classes=10),
}


def list_models() -> list[str]:
    return sorted(MODEL_CONFIGS)


def get_config(name: str) -> ConvMixerConfig:
    if name not in MODEL_CONFIGS:
        raise ValueError(f"model {name!r} is not registered; choose one of {', '.join(list_models())}")
    return MODEL_CONFIGS[name]


def create_model(name: str, **overrides: object) -> ConvMixer:
    """Build a registered model; keyword overrides replace config fields (e.g. `n_classes=100`)."""
    config = get_config(name)
    accepted = sorted(field.name for field in dataclasses.fields(config))
    unknown = set(overrides) - set(accepted)
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)}; accepted: {accepted}")
    return dataclasses.replace(config, **overrides).build()
