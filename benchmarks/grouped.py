"""N ConvMixers of one config, differing only in their weights, run as one grouped model (HFTA's horizontal fusion,
Wang et al., MLSys'21): a prototype for training the seeds of a run together (issue 31, item 5).

Model i owns channels [i * dim, (i + 1) * dim) of every feature map. Its images enter as channels
[i * in_chans, (i + 1) * in_chans) of one (B, N * in_chans, H, W) batch; the patch embedding and the 1x1 convs
are convs with groups=N, the depthwise conv runs over the N * dim channels as it is, BatchNorm over N * dim
channels is each model's own (its statistics are per channel), LayerNorm normalises each model's dim channels
apart, and the head is N linear layers in one batched matmul, giving (B, N, classes) logits. Every parameter and
buffer holds model i's values at rows [i * rows, (i + 1) * rows) of its first dimension, so a solo model's weights
go in (`stacked_state`) and come out (`model_state`) unchanged, and model i's share of any gradient is a slice.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from convmixer.config import ConvMixerConfig
from convmixer.model import ACTIVATIONS, NORMS, RESIDUALS, ActLayer, ConvActNorm, MixerLayer, NormLayer, Skips, choose


class GroupedChannelLayerNorm(nn.Module):
    """`groups` ChannelLayerNorms side by side: each position's channels normalised per model, not all together."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, W, groups, dim), as ChannelLayerNorm moves the channels last (a view in channels_last).
        per_model = x.permute(0, 2, 3, 1).unflatten(-1, (self.groups, -1))
        normed = F.layer_norm(per_model, per_model.shape[-1:], eps=self.eps)
        affine = normed * self.weight.view(self.groups, -1) + self.bias.view(self.groups, -1)
        return affine.flatten(-2).permute(0, 3, 1, 2)


class GroupedLinear(nn.Module):
    """`groups` Linear(in_features, out_features) layers, model i's on features [i * in, (i + 1) * in) of the input;
    the weight is the models' weights stacked by rows, (groups * out_features, in_features)."""

    def __init__(self, groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups * out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(groups * out_features))
        nn.init.kaiming_uniform_(self.weight)  # overwritten by stacked_state in every use: any init will do

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, groups * in_features) -> (B, groups, out_features)."""
        per_model = x.unflatten(1, (self.groups, -1)).transpose(0, 1)  # (groups, B, in)
        weight = self.weight.unflatten(0, (self.groups, -1))  # (groups, out, in)
        out = torch.baddbmm(self.bias.unflatten(0, (self.groups, 1, -1)), per_model, weight.transpose(1, 2))
        return out.transpose(0, 1)


class GroupedHead(nn.Module):
    """Global average pooling, then each model's classifier: ClassifierHead's parameters, stacked."""

    def __init__(self, groups: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = GroupedLinear(groups, dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class GroupedMixerLayer(MixerLayer):
    """MixerLayer over groups * dim channels (its forward: the residual placements) with the 1x1 conv grouped, so
    that no model mixes another's channels; its depthwise conv is already per channel."""

    def __init__(
        self, groups: int, dim: int, kernel_size: int, skips: Skips, norm_layer: NormLayer, act_layer: ActLayer
    ) -> None:
        super().__init__(groups * dim, kernel_size, skips, norm_layer, act_layer)
        pointwise = nn.Conv2d(groups * dim, groups * dim, 1, groups=groups)
        self.pointwise = ConvActNorm(pointwise, norm_layer, act_layer)


class GroupedConvMixer(nn.Module):
    """`groups` ConvMixers of `config` as one module, with ConvMixer's state_dict keys (stem, blocks, head): input
    (B, groups * in_chans, H, W), logits (B, groups, num_classes)."""

    def __init__(self, config: ConvMixerConfig, groups: int) -> None:
        super().__init__()
        self.config, self.groups = config, groups
        norm = choose("norm", config.norm, NORMS)
        norm_layer = functools.partial(GroupedChannelLayerNorm, groups) if norm is NORMS["layer"] else norm
        act_layer = choose("activation", config.activation, ACTIVATIONS)
        skips = choose("residual", config.residual, RESIDUALS)
        channels, patch = groups * config.dim, config.patch_size
        stem = nn.Conv2d(groups * config.in_chans, channels, patch, stride=patch, groups=groups)
        self.stem = ConvActNorm(stem, norm_layer, act_layer)
        self.blocks = nn.Sequential(
            *[
                GroupedMixerLayer(groups, config.dim, config.kernel_size, skips, norm_layer, act_layer)
                for _ in range(config.depth)
            ]
        )
        self.head = GroupedHead(groups, config.dim, config.num_classes)

    @classmethod
    def from_models(cls, models: list[nn.Module]) -> "GroupedConvMixer":
        """The grouped model of ConvMixers of one config, each model's weights and buffers as they are."""
        configs = {model.config for model in models}
        if len(configs) != 1:
            raise ValueError(f"models of {len(configs)} configs cannot be grouped: expected one config")
        grouped = cls(models[0].config, len(models))
        grouped.load_state_dict(stacked_state([model.state_dict() for model in models]))
        return grouped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def model_state(self, index: int) -> dict[str, torch.Tensor]:
        """Model `index`'s state_dict, as its solo ConvMixer's (copies)."""
        return {
            key: value.chunk(self.groups)[index].clone() if value.ndim else value.clone()
            for key, value in self.state_dict().items()
        }


def stacked_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The grouped model's state_dict from its models' (same keys): each tensor concatenated along its first
    dimension; a 0-d tensor (BatchNorm's batch count, which every model of a group shares) taken once."""
    stacked = {}
    for key, first in states[0].items():
        values = [state[key] for state in states]
        if first.ndim == 0 and any(not torch.equal(value, first) for value in values):
            raise ValueError(f"{key} differs between the models ({[v.item() for v in values]}): they cannot be grouped")
        stacked[key] = torch.cat(values) if first.ndim else first
    return stacked
