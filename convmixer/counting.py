"""Parameters, MACs and FLOPs of any ConvMixer config in closed form, written from the architecture alone.

Arithmetic on a `ConvMixerConfig`, free of torch, so that the training engine and the benchmarks take a run's counts
from here without loading a tracer; `python -m convmixer.count` (count.py) checks this formula against an fvcore
trace of the real module, to the integer. `CONVENTION` says what one MAC is per category.
"""

from dataclasses import dataclass

from convmixer.arguments import check_choice, check_integer, check_patch_fits
from convmixer.config import ConvMixerConfig

CATEGORIES = ("conv", "linear", "norm", "activation", "residual", "pool")
NORM_MACS_PER_ELEMENT = {"batch": 2, "layer": 5}  # fvcore's: eval BatchNorm scale+shift; LayerNorm "rough estimate"
RESIDUAL_ADDS_PER_LAYER = {"depthwise": 1, "pointwise": 1, "block": 1, "both": 2, "none": 0}
CONVENTION = (
    "per image (traced at batch 1, eval mode); 1 MAC = 2 FLOPs",
    "conv: Cout*Hout*Wout*(Cin/groups)*kh*kw; linear: in*out; biases are not counted",
    "norm (fvcore's rule): BatchNorm 2 per element (eval: scale + shift), LayerNorm 5 per element",
    "activation (GELU, ReLU) and residual add: 1 per output element; global avg pool: 1 per input element",
    "flatten and permute are free; conv+linear MACs (matmul work alone) is the figure papers usually quote",
)


@dataclass(frozen=True)
class Counts:
    """Per-image counts: trainable parameters and MACs by category (see CONVENTION)."""

    params: int
    by_category: dict[str, int]

    @property
    def macs(self) -> int:
        return sum(self.by_category.values())

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def conv_linear_macs(self) -> int:
        return self.by_category["conv"] + self.by_category["linear"]

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "conv_linear_macs": self.conv_linear_macs,
            "by_category": dict(self.by_category),
        }


def closed_form(config: ConvMixerConfig, image_size: int) -> Counts:
    """The counts of `config` on image_size x image_size inputs, from the architecture alone."""
    check_choice("residual", config.residual, RESIDUAL_ADDS_PER_LAYER)
    check_choice("norm", config.norm, NORM_MACS_PER_ELEMENT)
    check_integer("patch_size", config.patch_size, 1)  # it divides the image size below
    check_patch_fits(config.patch_size, image_size)
    dim, depth, k, p, c = config.dim, config.depth, config.kernel_size, config.patch_size, config.in_chans
    positions = (image_size // p) ** 2  # a stride-p conv without padding drops the remainder pixels
    maps = dim * positions  # elements of one feature map; "same" padding keeps it for every kernel
    convs_with_act_norm = 1 + 2 * depth
    by_category = {
        "conv": maps * c * p * p + depth * (maps * k * k + maps * dim),
        "linear": dim * config.num_classes,
        "norm": convs_with_act_norm * NORM_MACS_PER_ELEMENT[config.norm] * maps,
        "activation": convs_with_act_norm * maps,
        "residual": depth * RESIDUAL_ADDS_PER_LAYER[config.residual] * maps,
        "pool": maps,
    }
    norm_params = 2 * dim  # weight and bias, for BatchNorm and LayerNorm alike
    stem = dim * c * p * p + dim + norm_params
    layer = dim * k * k + dim + norm_params + dim * dim + dim + norm_params  # depthwise, then pointwise
    head = dim * config.num_classes + config.num_classes
    return Counts(stem + depth * layer + head, by_category)
