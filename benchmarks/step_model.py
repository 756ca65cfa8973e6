"""The bytes and FLOPs of one ConvMixer training step, op by op: the floor each op of the step is held against.

One step is the engine's `train_step`: forward, loss, backward, (gradient clipping and) AdamW. For every op of the
model (`OPS`) and each direction it runs in (forward, backward; the optimizer's update) this gives, summed over the
op's instances in the step, the fewest bytes it must move through device memory if it runs as its own kernel (each
tensor it needs read once, each tensor it makes written once) and its FLOPs, and which unit does them (the
matrix unit for the convs that are matrix products and the head, the vector unit for the rest). `floor_seconds`
turns them into time with a device's rates: max(bytes / copy rate, FLOPs / that unit's rate).

Conventions (the forward FLOPs are 2x convmixer.counting's closed-form MACs, op for op, so the two agree):
- activations are in the step's dtype (2 bytes in bf16/fp16, 4 in fp32): the ideal, not what autocast does (it
  runs LayerNorm in fp32, for one); parameters, their gradients and AdamW's state are fp32 (4 bytes); the images
  are read as the engine hands them to the model (fp32) and the logits are fp32 (the engine casts them for the
  loss);
- a backward reads the output's gradient and whatever the forward saved (the input, or the output), and writes the
  input's gradient and any parameter's gradient; a conv's backward is two products (input and weight gradients),
  twice the forward's FLOPs; an elementwise op's backward is counted at twice its forward's FLOPs;
- the residual add's backward is the sum of the two gradients that reach the branch point (autograd's
  accumulation): read two maps, write one;
- pooling's backward writes the map (1 FLOP per element); the loss is log-softmax plus the picked logit (5 FLOPs
  per logit forward, 4 backward); AdamW reads parameter, gradient and both moments and writes three (28 bytes,
  15 FLOPs per parameter); clipping by the global norm reads the gradients twice and writes them once.
Everything here is arithmetic: no torch, so the model is checked against hand counts without building a net.
"""

from dataclasses import dataclass

from convmixer.arguments import check_choice, check_integer, check_patch_fits
from convmixer.config import ACTIVATION_NAMES, ConvMixerConfig
from convmixer.counting import NORM_MACS_PER_ELEMENT, RESIDUAL_ADDS_PER_LAYER, closed_form

OPS = ("patch_embed", "depthwise", "activation", "norm", "residual", "pointwise", "pool", "head", "loss", "optimizer")
DIRECTIONS = ("forward", "backward", "update")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
FP32 = 4  # parameters, gradients, optimizer state, the images and the logits
ADAMW_BYTES_PER_PARAM, ADAMW_FLOPS_PER_PARAM = 7 * FP32, 15
CLIP_BYTES_PER_PARAM, CLIP_FLOPS_PER_PARAM = 3 * FP32, 3  # the norm reads each gradient, the scaling reads + writes


@dataclass(frozen=True)
class StepShape:
    """What decides a training step's bytes and FLOPs: the model, its input and batch, the dtype and layout."""

    dim: int
    depth: int
    kernel_size: int
    patch_size: int
    image_size: int
    batch: int
    num_classes: int = 10
    in_chans: int = 3
    dtype: str = "bf16"  # of the activations: fp32, bf16 or fp16
    channels_last: bool = True  # recorded with the floor; the floor itself is the same in both layouts
    norm: str = "batch"
    residual: str = "depthwise"
    activation: str = "gelu"
    clip_norm: bool = False  # gradient clipping by the global norm before the optimizer step

    def model(self) -> ConvMixerConfig:
        return ConvMixerConfig(
            self.dim,
            self.depth,
            self.kernel_size,
            self.patch_size,
            self.num_classes,
            self.in_chans,
            self.residual,
            self.norm,
            self.activation,
        )

    def check(self) -> None:
        """ValueError naming a value the model cannot price."""
        for name in ("dim", "depth", "kernel_size", "patch_size", "image_size", "batch", "num_classes", "in_chans"):
            check_integer(name, getattr(self, name), 0 if name == "depth" else 1)
        check_choice("dtype", self.dtype, tuple(DTYPE_BYTES))
        check_choice("norm", self.norm, tuple(NORM_MACS_PER_ELEMENT))
        check_choice("residual", self.residual, tuple(RESIDUAL_ADDS_PER_LAYER))
        check_choice("activation", self.activation, ACTIVATION_NAMES)
        check_patch_fits(self.patch_size, self.image_size)


@dataclass(frozen=True)
class Cost:
    """One op in one direction, summed over its instances in the step."""

    op: str
    direction: str
    instances: int
    bytes: int
    flops: int
    unit: str  # "matrix" (tensor cores) or "vector" (CUDA cores, or the CPU's)


def step_costs(shape: StepShape) -> list[Cost]:
    """Every op of one training step of `shape` in each direction it runs, in the order of OPS."""
    shape.check()
    n, c, k, p, classes = shape.batch, shape.dim, shape.kernel_size, shape.patch_size, shape.num_classes
    maps = n * c * (shape.image_size // p) ** 2  # elements of one feature map of the batch
    m = maps * DTYPE_BYTES[shape.dtype]  # its bytes
    x = n * shape.in_chans * (shape.image_size // p * p) ** 2 * FP32  # the image pixels the patches cover
    pooled, logits = n * c * DTYPE_BYTES[shape.dtype], n * classes * FP32
    wp, wd, wq, wh = (FP32 * size for size in (c * shape.in_chans * p * p, c * k * k, c * c, c * classes))
    patch_flops, head_flops = 2 * maps * shape.in_chans * p * p, 2 * n * c * classes
    norm_flops = 2 * NORM_MACS_PER_ELEMENT[shape.norm] * maps
    layers, norms, adds = shape.depth, 1 + 2 * shape.depth, shape.depth * RESIDUAL_ADDS_PER_LAYER[shape.residual]
    rows = [  # op, instances, (forward bytes, FLOPs), (backward bytes, FLOPs), unit
        ("patch_embed", 1, (x + wp + m, patch_flops), (m + x + wp, patch_flops), "matrix"),
        ("depthwise", layers, (2 * m + wd, 2 * maps * k * k), (3 * m + 2 * wd, 4 * maps * k * k), "vector"),
        ("activation", norms, (2 * m, 2 * maps), (3 * m, 4 * maps), "vector"),
        ("norm", norms, (2 * m + 2 * c * FP32, norm_flops), (3 * m + 4 * c * FP32, 2 * norm_flops), "vector"),
        ("residual", adds, (3 * m, 2 * maps), (3 * m, 2 * maps), "vector"),
        ("pointwise", layers, (2 * m + wq, 2 * maps * c), (3 * m + 2 * wq, 4 * maps * c), "matrix"),
        ("pool", 1, (m + pooled, 2 * maps), (pooled + m, maps), "vector"),
        ("head", 1, (pooled + wh + logits, head_flops), (logits + 2 * pooled + 2 * wh, 2 * head_flops), "matrix"),
        ("loss", 1, (logits + n * 8, 5 * n * classes), (2 * logits + n * 8, 4 * n * classes), "vector"),
    ]
    costs = []
    for op, instances, (fwd_bytes, fwd_flops), (bwd_bytes, bwd_flops), unit in rows:
        if instances:
            costs.append(Cost(op, "forward", instances, instances * fwd_bytes, instances * fwd_flops, unit))
            costs.append(Cost(op, "backward", instances, instances * bwd_bytes, instances * bwd_flops, unit))
    params = closed_form(shape.model(), shape.image_size).params
    per_param = (ADAMW_BYTES_PER_PARAM, ADAMW_FLOPS_PER_PARAM)
    if shape.clip_norm:
        per_param = (per_param[0] + CLIP_BYTES_PER_PARAM, per_param[1] + CLIP_FLOPS_PER_PARAM)
    costs.append(Cost("optimizer", "update", 1, params * per_param[0], params * per_param[1], "vector"))
    return costs


@dataclass(frozen=True)
class Rates:
    """A device's ceilings, measured: bytes read + written per second by a copy, and FLOP/s of each unit."""

    copy: float
    vector: float
    matrix: float


def floor_seconds(cost: Cost, rates: Rates) -> float:
    """The least time `cost` can take on a device with `rates`: its bytes at the copy rate or its FLOPs at its
    unit's rate, whichever is longer."""
    return max(cost.bytes / rates.copy, cost.flops / getattr(rates, cost.unit))


def bound(cost: Cost, rates: Rates) -> str:
    """Which of the two terms makes the floor: "bytes" or "flops"."""
    return "bytes" if cost.bytes / rates.copy >= cost.flops / getattr(rates, cost.unit) else "flops"
