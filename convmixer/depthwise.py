"""The depthwise conv of a mixer layer, on cuDNN or on the toolkit's Triton kernels.

`DepthwiseConv2d` is `nn.Conv2d(dim, dim, k, groups=dim, padding="same")` (the same parameters, so the same
state_dict keys) that can run on Triton kernels instead of cuDNN: its `impl` is "torch" (nn.Conv2d's forward)
or "triton". The Triton route (convmixer/depthwise_kernels.py, whose docstring gives the design and the bytes each
direction moves) covers the three directions with two kernels, each bringing an input tile and its halo from DRAM
once, into L1, and computing every tap from there: the conv, which also gives the input gradient (the conv of the
gradient with the kernel flipped and the "same" padding mirrored), and the weight gradient, a reduction over
images x pixels with all taps per program (and the bias gradient with it). Both read and write through strides, so
NCHW and channels_last run without a copy, and both accumulate in fp32 whatever the tensors' dtype (fp32, bf16,
fp16). Any kernel size (odd or even, with PyTorch's "same" placement), channel count and image size.

Tile shapes are autotuned on the GPU per shape (channels, height, width, kernel size, layout, dtype) at the first
call, and the choice is cached on disk by Triton beside its compiled kernels: in $TRITON_CACHE_DIR, default
~/.triton/cache, so a later process on the same GPU, Triton and kernel source loads it instead of timing again.
On a CPU the kernels run only under Triton's interpreter (TRITON_INTERPRET=1), with the one tile shape of
`INTERPRETED_TILES`, which is how the tests check them without a GPU.

The model only offers the implementations (`IMPLS`, `use_impl`); which one a run uses, and its memory layout, is
the engine's choice (ablations/engine/setup.py).
"""

import functools
import importlib.util
import os

import torch
from torch import nn

from convmixer.arguments import require
from convmixer.config import IMPLS

# The tile shapes the GPU autotuner tries, (TILE_H, TILE_W, BLOCK_C, num_warps): few, since each is compiled and
# timed once per shape; `fitting` drops those a shape cannot use. Each gives a thread 16-32 pixel-channels, so that
# a tap's weights, loaded once per thread, serve several pixels (`python -m benchmarks.kernels --sass`: 4.4
# instructions per tap and pixel-channel at 16, 3.8 at 32, bf16 channels_last k=5, against 5.8 at 8); wide channel
# blocks suit channels_last (a pixel's channels are contiguous), wide tiles NCHW (a row's pixels are).
CONV_TILES = ((8, 8, 32, 4), (8, 16, 32, 4), (16, 16, 16, 4), (16, 16, 32, 8))
GRAD_TILES = ((8, 8, 32, 4), (8, 16, 32, 4), (16, 16, 16, 4), (16, 16, 32, 8))
MAX_BLOCK_C = 64  # no tile's BLOCK_C exceeds it: the conv's weights are padded to a multiple of it
# The weight gradient's partial buffer, (slots, K*K + 1, C) fp32, holds at most max(1 MiB, a quarter of x's bytes).
PARTIAL_SHARE, PARTIAL_FLOOR = 4, 2**20
# Under the interpreter: small tiles, so that the tests' small images span several tiles and channel blocks.
INTERPRETED_TILES = {"TILE_H": 4, "TILE_W": 4, "BLOCK_C": 4}


def same_padding(kernel_size: int) -> int:
    """The top/left padding of padding="same": PyTorch puts the odd pixel of an even kernel on the bottom/right."""
    return (kernel_size - 1) // 2


# --- the Triton route (triton is optional: imported on first use) ---


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tiles(args: dict) -> int:
    """How many TILE_H x TILE_W tiles cover an image."""
    return -(-args["H"] // args["TILE_H"]) * -(-args["W"] // args["TILE_W"])


def fitting(configs: list, args: dict, **meta) -> list:
    """The configs worth timing for this shape: tiles no taller or wider than the image needs, or the smallest tile
    where none is."""
    rows, cols = 1 << (int(args["H"]) - 1).bit_length(), 1 << (int(args["W"]) - 1).bit_length()
    kept = [config for config in configs if config.kwargs["TILE_H"] <= rows and config.kwargs["TILE_W"] <= cols]
    return kept or [min(configs, key=lambda config: config.kwargs["TILE_H"] * config.kwargs["TILE_W"])]


def tuned(kernel, candidates: tuple, interpret: bool):
    """`kernel` with its tiles autotuned per shape on the GPU (the choice cached on disk by Triton), or fixed to
    INTERPRETED_TILES under the interpreter."""
    import triton

    if interpret:
        configs = [triton.Config(INTERPRETED_TILES)]
    else:
        configs = [
            triton.Config({"TILE_H": h, "TILE_W": w, "BLOCK_C": c}, num_warps=warps) for h, w, c, warps in candidates
        ]
    key = ["C", "H", "W", "K", "sxc", "sxh", "sxw"]  # and the tensors' dtypes; the input gradient reuses the forward's
    reset = ["partial"] if "partial" in kernel.arg_names else None
    prune = {"early_config_prune": fitting}
    autotune = triton.autotune(configs, key, prune_configs_by=prune, reset_to_zero=reset, cache_results=True)
    return autotune(kernel)


@functools.cache
def triton_kernels(interpret: bool) -> tuple:
    """The conv and weight-gradient kernels, compiled for the GPU or run by Triton's interpreter: the module is
    loaded afresh per mode, since `triton.jit` chooses the mode when it decorates (TRITON_INTERPRET)."""
    triton = require("triton", "triton")
    spec = importlib.util.find_spec("convmixer.depthwise_kernels")
    module = importlib.util.module_from_spec(spec)
    with triton.knobs.runtime.scope():
        triton.knobs.runtime.interpret = interpret
        spec.loader.exec_module(module)
        return tuned(module.conv, CONV_TILES, interpret), tuned(module.weight_grad, GRAD_TILES, interpret)


def kernels() -> tuple:
    return triton_kernels(interpreted())


def strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.stride())


def tap_major(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, K, K) weights as the conv kernel reads them: (K*K, C) in fp32, each tap's channels contiguous and
    zero-padded to a multiple of every BLOCK_C, so that the kernel reads them without a mask."""
    c = weight.shape[0]
    taps = weight.detach().float().reshape(c, -1).t()
    return torch.nn.functional.pad(taps, (0, -c % MAX_BLOCK_C)).contiguous()


def run_conv(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None, k: int, pad: int) -> torch.Tensor:
    """The conv kernel on x (N, C, H, W, any strides) with tap-major weights; y has x's dtype and layout."""
    conv, _ = kernels()
    n, c, h, w = x.shape
    y = torch.empty_like(x)

    def grid(meta: dict) -> tuple[int, int, int]:
        return tiles({**meta, "H": h, "W": w}), n, -(-c // meta["BLOCK_C"])

    bias_arg = bias if bias is not None else taps  # never read when HAS_BIAS is False
    conv[grid](
        x, taps, bias_arg, y, c, h, w, *strides(x), *strides(y), pad, taps.stride(0), K=k, HAS_BIAS=bias is not None
    )
    return y


@torch.library.custom_op("convmixer::depthwise_conv", mutates_args=())
def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int) -> torch.Tensor:
    """The depthwise conv of x (N, C, H, W, any strides) with weight (C, 1, K, K), zero padding `pad` on the
    top/left and K - 1 - pad on the bottom/right; the output has x's dtype and memory layout."""
    return run_conv(x, tap_major(weight), bias, weight.shape[-1], pad)


@depthwise_conv.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("convmixer::depthwise_input_grad", mutates_args=())
def depthwise_input_grad(grad: torch.Tensor, weight: torch.Tensor, pad: int) -> torch.Tensor:
    """d(loss)/d(x) of depthwise_conv: the conv of `grad` with the kernel flipped and the padding mirrored."""
    k = weight.shape[-1]
    return run_conv(grad, tap_major(weight.flip(2, 3)), None, k, k - 1 - pad)


@depthwise_input_grad.register_fake
def _(grad: torch.Tensor, weight: torch.Tensor, pad: int) -> torch.Tensor:
    return torch.empty_like(grad)


def partial_slots(x: torch.Tensor, rows: int) -> int:
    """How many slots the weight gradient reduces into: one per (image, tile) pair at the largest tile, so that
    every slot has work and a few large images still spread over the GPU, at most what PARTIAL_SHARE allows."""
    n, c, h, w = x.shape
    pairs = n * tiles(
        {"H": h, "W": w, "TILE_H": max(t[0] for t in GRAD_TILES), "TILE_W": max(t[1] for t in GRAD_TILES)}
    )
    budget = max(PARTIAL_FLOOR, x.numel() * x.element_size() // PARTIAL_SHARE)
    return max(1, min(pairs, budget // (rows * c * 4)))


@torch.library.custom_op("convmixer::depthwise_weight_grad", mutates_args=())
def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel_size: int, pad: int,
                          with_bias: bool) -> torch.Tensor:  # fmt: skip
    """d(loss)/d(weight) of depthwise_conv in fp32, (K*K + with_bias, C): a row per tap, then the bias's."""
    _, weight_grad = kernels()
    n, c, h, w = x.shape
    rows = kernel_size * kernel_size + with_bias
    partial = torch.zeros(partial_slots(x, rows), rows, c, device=x.device, dtype=torch.float32)

    def grid(meta: dict) -> tuple[int, int]:
        return partial.shape[0], -(-c // meta["BLOCK_C"])

    weight_grad[grid](x, grad, partial, n, c, h, w, *strides(x), *strides(grad), pad,
                      K=kernel_size, HAS_BIAS=with_bias)  # fmt: skip
    return partial.sum(0)


@depthwise_weight_grad.register_fake
def _(x: torch.Tensor, grad: torch.Tensor, kernel_size: int, pad: int, with_bias: bool) -> torch.Tensor:
    return x.new_empty(kernel_size * kernel_size + with_bias, x.shape[1], dtype=torch.float32)


def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    x, weight, bias, pad = inputs
    ctx.save_for_backward(x, weight)
    ctx.pad, ctx.has_bias = pad, bias is not None


def backward(ctx, grad: torch.Tensor) -> tuple:
    x, weight = ctx.saved_tensors
    c, _, k, _ = weight.shape
    grads = depthwise_weight_grad(x, grad, k, ctx.pad, ctx.has_bias)
    grad_w = grads[: k * k].t().reshape(c, 1, k, k).to(weight.dtype)
    grad_b = grads[k * k].to(weight.dtype) if ctx.has_bias else None
    return depthwise_input_grad(grad, weight, ctx.pad), grad_w, grad_b, None


depthwise_conv.register_autograd(backward, setup_context=setup_context)


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), run by `impl`: "torch" or "triton"."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__(dim, dim, kernel_size, groups=dim, padding="same")
        self.impl = "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "torch":
            return super().forward(x)
        if torch.is_autocast_enabled(x.device.type):  # as autocast runs nn.Conv2d: in its lower precision
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return depthwise_conv(x, self.weight, self.bias, same_padding(self.kernel_size[0]))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl}"


def use_impl(model: nn.Module, impl: str) -> None:
    """Run every DepthwiseConv2d of `model` on `impl` ("torch" or "triton")."""
    if impl not in IMPLS:
        raise ValueError(f"depthwise impl {impl!r} is not accepted; choose one of {', '.join(IMPLS)}")
    for module in model.modules():
        if isinstance(module, DepthwiseConv2d):
            module.impl = impl
