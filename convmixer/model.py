"""A readable ConvMixer with every ablation knob, computing the same function as the tweet.

ConvMixer splits the image into p x p patches with one strided conv, then repeats a "mixer layer":
a depthwise conv with a large kernel mixes space (inside a residual), a 1x1 conv mixes channels.
Every conv is followed by an activation and a norm, in that order, as in the paper.
"""

from dataclasses import dataclass

import torch
from torch import nn

from convmixer.arguments import check_choice, check_integer

RESIDUALS = ("depthwise", "pointwise", "both", "block", "none")
NORMS = ("batch", "layer")
ACTIVATIONS = ("gelu", "relu")


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels at each spatial position of an NCHW map (the "layer" ablation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.LayerNorm normalises the last dimension: move the channels there and back.
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm(norm: str, dim: int) -> nn.Module:
    check_choice("norm", norm, NORMS)
    return nn.BatchNorm2d(dim) if norm == "batch" else ChannelLayerNorm(dim)


def make_activation(activation: str) -> nn.Module:
    check_choice("activation", activation, ACTIVATIONS)
    return nn.GELU() if activation == "gelu" else nn.ReLU()


class ConvActNorm(nn.Module):
    """conv -> activation -> norm: the unit ConvMixer is built from (the tweet's `A(C(...))`)."""

    def __init__(self, conv: nn.Conv2d, norm: str, activation: str) -> None:
        super().__init__()
        self.conv = conv
        self.act = make_activation(activation)
        self.norm = make_norm(norm, conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)))


class PatchEmbed(ConvActNorm):
    """Cuts the image into non-overlapping patch_size x patch_size patches and embeds each into dim channels."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, norm: str, activation: str) -> None:
        super().__init__(nn.Conv2d(in_chans, dim, patch_size, stride=patch_size), norm, activation)


class MixerLayer(nn.Module):
    """Depthwise conv (spatial mixing) then 1x1 conv (channel mixing), with the chosen residual placement.

    `padding="same"` keeps the spatial size for every kernel size; for odd kernels it is exactly the
    tweet's `padding=k//2`, for even ones PyTorch pads one more pixel on the right/bottom than the left/top.
    """

    def __init__(self, dim: int, kernel_size: int, residual: str, norm: str, activation: str) -> None:
        super().__init__()
        check_choice("residual", residual, RESIDUALS)
        self.residual = residual
        self.depthwise = ConvActNorm(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), norm, activation)
        self.pointwise = ConvActNorm(nn.Conv2d(dim, dim, 1), norm, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.depthwise(x)
        if self.residual in ("depthwise", "both"):
            mixed = mixed + x
        out = self.pointwise(mixed)
        if self.residual in ("pointwise", "both"):
            out = out + mixed
        if self.residual == "block":
            out = out + x
        return out


class ClassifierHead(nn.Module):
    """Global average pooling over space, then a linear classifier."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class ConvMixer(nn.Module):
    """ConvMixer-`dim`/`depth`: patch embedding, `depth` mixer layers, classifier head.

    The defaults (`residual="depthwise"`, `norm="batch"`, `activation="gelu"`) are the paper's model;
    the keyword-only arguments are the ablation knobs.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        kernel_size: int = 9,
        patch_size: int = 7,
        n_classes: int = 1000,
        *,
        in_chans: int = 3,
        residual: str = "depthwise",
        norm: str = "batch",
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("dim", dim, 1),
            ("depth", depth, 0),
            ("kernel_size", kernel_size, 1),
            ("patch_size", patch_size, 1),
            ("n_classes", n_classes, 1),
            ("in_chans", in_chans, 1),
        ):
            check_integer(name, value, minimum)
        check_choice("residual", residual, RESIDUALS)
        check_choice("norm", norm, NORMS)
        check_choice("activation", activation, ACTIVATIONS)
        self.config = ConvMixerConfig(
            dim, depth, kernel_size, patch_size, n_classes, in_chans, residual, norm, activation
        )
        self.stem = PatchEmbed(in_chans, dim, patch_size, norm, activation)
        self.blocks = nn.Sequential(*[MixerLayer(dim, kernel_size, residual, norm, activation) for _ in range(depth)])
        self.head = ClassifierHead(dim, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@dataclass(frozen=True)
class ConvMixerConfig:
    """Every constructor argument of `ConvMixer`, so a model can be rebuilt or counted from its config."""

    dim: int
    depth: int
    kernel_size: int = 9
    patch_size: int = 7
    n_classes: int = 1000
    in_chans: int = 3
    residual: str = "depthwise"
    norm: str = "batch"
    activation: str = "gelu"

    def build(self) -> ConvMixer:
        return ConvMixer(
            self.dim,
            self.depth,
            self.kernel_size,
            self.patch_size,
            self.n_classes,
            in_chans=self.in_chans,
            residual=self.residual,
            norm=self.norm,
            activation=self.activation,
        )


def count_parameters(model: nn.Module) -> int:
    """Trainable and frozen parameters of any module, the figure papers quote as its size."""
    return sum(p.numel() for p in model.parameters())
