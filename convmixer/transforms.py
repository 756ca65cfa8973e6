"""A model's evaluation transform, as timm builds it (timm.data.transforms_imagenet_eval): resize the shorter side
to floor(image_size / crop_pct), centre-crop image_size, normalise. The settings are each registered model's
(convmixer.registry, timm's pretrained cfg); evaluation (convmixer.evaluate) and a streamed test split
(ablations.data.stream) both take them from there. Free of torch until a transform is built.
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchvision import transforms


@dataclass(frozen=True)
class EvalSettings:
    """How a model's images are prepared for evaluation: the fields of timm's pretrained cfg that say it."""

    crop_pct: float
    interpolation: str  # torchvision's InterpolationMode by value
    mean: tuple[float, float, float]  # per channel, in [0, 1] pixel units
    std: tuple[float, float, float]


@dataclass(frozen=True)
class EvalTransform:
    """The evaluation transform of images image_size x image_size under `settings`."""

    image_size: int
    settings: EvalSettings

    @property
    def resize_size(self) -> int:
        return math.floor(self.image_size / self.settings.crop_pct)

    def geometry(self) -> "transforms.Compose":
        """The resize and the crop alone (a PIL image in, a PIL image out): what a streamed test split applies
        (ablations.data.stream), normalising later on the device."""
        from torchvision import transforms

        # On PIL images, as timm does: Pillow's resize (bicubic: always antialiased), then the crop.
        interpolation = transforms.InterpolationMode(self.settings.interpolation)
        return transforms.Compose(
            [transforms.Resize(self.resize_size, interpolation=interpolation), transforms.CenterCrop(self.image_size)]
        )

    def build(self) -> "transforms.Compose":
        from torchvision import transforms

        normalise = transforms.Normalize(self.settings.mean, self.settings.std)
        return transforms.Compose([self.geometry(), transforms.ToTensor(), normalise])
