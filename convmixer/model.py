"""A readable ConvMixer with every ablation knob, computing the same function as the tweet.

ConvMixer splits the image into p x p patches with one strided conv, then repeats a "mixer layer":
a depthwise conv with a large kernel mixes space (inside a residual), a 1x1 conv mixes channels.
Every conv is followed by an activation and a norm, in that order, as in the paper.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from convmixer.arguments import check_choice, check_integer
from convmixer.config import ACTIVATION_NAMES, NORM_NAMES, RESIDUAL_NAMES, ConvMixerConfig
from convmixer.depthwise import DepthwiseConv2d

Built = TypeVar("Built")  # what a knob's name maps to: a layer constructor or Skips
NormLayer = Callable[[int], nn.Module]  # channels -> norm module
ActLayer = Callable[[], nn.Module]


def choose(knob: str, name: str, choices: Mapping[str, Built]) -> Built:
    """choices[name], or a one-line ValueError naming the knob, the bad name and the accepted names."""
    check_choice(knob, name, tuple(choices))  # a tuple, so an unhashable value is refused rather than a TypeError
    return choices[name]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels at each spatial position of an NCHW map (the "layer" ablation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.LayerNorm normalises the last dimension: move the channels there and back.
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Skips:
    """Where a mixer layer adds an input back: around the depthwise conv, the pointwise conv, or the whole layer."""

    depthwise: bool = False
    pointwise: bool = False
    block: bool = False


# What each knob's name (convmixer/config.py, torch-free) builds, as in timm's _NORM_MAP: one lookup (`choose`)
# both validates a name and gives its layer.
NORMS: dict[str, NormLayer] = dict(zip(NORM_NAMES, (nn.BatchNorm2d, ChannelLayerNorm), strict=True))
ACTIVATIONS: dict[str, ActLayer] = dict(zip(ACTIVATION_NAMES, (nn.GELU, nn.ReLU), strict=True))
SKIPS = (
    Skips(depthwise=True),
    Skips(pointwise=True),
    Skips(depthwise=True, pointwise=True),
    Skips(block=True),
    Skips(),
)
RESIDUALS: dict[str, Skips] = dict(zip(RESIDUAL_NAMES, SKIPS, strict=True))


class ConvActNorm(nn.Module):
    """conv -> activation -> norm: the unit ConvMixer is built from (the tweet's `A(C(...))`)."""

    def __init__(self, conv: nn.Conv2d, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__()
        self.conv = conv
        self.act = act_layer()
        self.norm = norm_layer(conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)))


class PatchEmbed(ConvActNorm):
    """Cuts the image into non-overlapping patch_size x patch_size patches and embeds each into dim channels."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__(nn.Conv2d(in_chans, dim, patch_size, stride=patch_size), norm_layer, act_layer)


class MixerLayer(nn.Module):
    """Depthwise conv (spatial mixing) then 1x1 conv (channel mixing), with the chosen residual placement.

    The depthwise conv is nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), which
    convmixer.depthwise.DepthwiseConv2d can also run on Triton. `padding="same"` keeps the spatial size for every
    kernel size; for odd kernels it is exactly the tweet's `padding=k//2`, for even ones PyTorch pads one more pixel
    on the right/bottom than the left/top.
    """

    def __init__(self, dim: int, kernel_size: int, skips: Skips, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__()
        self.skips = skips
        self.depthwise = ConvActNorm(DepthwiseConv2d(dim, kernel_size), norm_layer, act_layer)
        self.pointwise = ConvActNorm(nn.Conv2d(dim, dim, 1), norm_layer, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.depthwise(x)
        if self.skips.depthwise:
            mixed = mixed + x
        out = self.pointwise(mixed)
        if self.skips.pointwise:
            out = out + mixed
        if self.skips.block:
            out = out + x
        return out


class ClassifierHead(nn.Module):
    """Global average pooling over space, then a linear classifier."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class ConvMixer(nn.Module):
    """ConvMixer-`dim`/`depth`: patch embedding, `depth` mixer layers, classifier head.

    The defaults are ConvMixerConfig's: the paper's model (`residual="depthwise"`, `norm="batch"`,
    `activation="gelu"`) with its ImageNet kernel, patch and classes; the keyword-only arguments are the ablation knobs.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        kernel_size: int = ConvMixerConfig.kernel_size,
        patch_size: int = ConvMixerConfig.patch_size,
        num_classes: int = ConvMixerConfig.num_classes,
        *,
        in_chans: int = ConvMixerConfig.in_chans,
        residual: str = ConvMixerConfig.residual,
        norm: str = ConvMixerConfig.norm,
        activation: str = ConvMixerConfig.activation,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("dim", dim, 1),
            ("depth", depth, 0),
            ("kernel_size", kernel_size, 1),
            ("patch_size", patch_size, 1),
            ("num_classes", num_classes, 1),
            ("in_chans", in_chans, 1),
        ):
            check_integer(name, value, minimum)
        skips = choose("residual", residual, RESIDUALS)
        norm_layer, act_layer = choose("norm", norm, NORMS), choose("activation", activation, ACTIVATIONS)
        self.config = ConvMixerConfig(
            dim=dim,
            depth=depth,
            kernel_size=kernel_size,
            patch_size=patch_size,
            num_classes=num_classes,
            in_chans=in_chans,
            residual=residual,
            norm=norm,
            activation=activation,
        )
        self.stem = PatchEmbed(in_chans, dim, patch_size, norm_layer, act_layer)
        self.blocks = nn.Sequential(*[MixerLayer(dim, kernel_size, skips, norm_layer, act_layer) for _ in range(depth)])
        self.head = ClassifierHead(dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def count_parameters(model: nn.Module) -> int:
    """Trainable and frozen parameters of any module, the figure papers quote as its size."""
    return sum(p.numel() for p in model.parameters())
