"""ConvMixerConfig and the names each knob accepts, without torch: what the run config, the counter's flags and
every --help need to know about a model before (or without) building one.

convmixer/model.py maps each name to its layer; `ConvMixerConfig.build()` imports it on first use.
"""

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convmixer.model import ConvMixer

# Each knob's accepted names, in the order the CLIs list them; model.py maps them to what they build.
RESIDUAL_NAMES = ("depthwise", "pointwise", "both", "block", "none")  # depthwise: the paper's
NORM_NAMES = ("batch", "layer")
ACTIVATION_NAMES = ("gelu", "relu")
# The knobs chosen by name; every other ConvMixerConfig field is an integer.
KNOB_NAMES = {"residual": RESIDUAL_NAMES, "norm": NORM_NAMES, "activation": ACTIVATION_NAMES}
# The depthwise conv's implementations (convmixer/depthwise.py): nn.Conv2d's forward, or the Triton kernels.
IMPLS = ("torch", "triton")


@dataclass(frozen=True)
class ConvMixerConfig:
    """Every constructor argument of `ConvMixer`, so a model can be rebuilt or counted from its config.

    These are the model's defaults, and ConvMixer's signature takes them from here. They follow the paper's
    ImageNet signature (kernel 9, patch 7, 1000 classes, as timm's ConvMixer); ablations.config.RunConfig
    defaults instead to the CIFAR-10 reference model (the registry's convmixer_256_8_cifar10), which a sweep trains.
    """

    dim: int
    depth: int
    kernel_size: int = 9
    patch_size: int = 7
    num_classes: int = 1000
    in_chans: int = 3
    residual: str = "depthwise"
    norm: str = "batch"
    activation: str = "gelu"

    @property
    def name(self) -> str:
        """The paper's name for the model, ConvMixer-dim/depth."""
        return f"ConvMixer-{self.dim}/{self.depth}"

    def build(self) -> "ConvMixer":
        from convmixer.model import ConvMixer  # torch: imported when a model is built, not when one is named

        return ConvMixer(**asdict(self))
