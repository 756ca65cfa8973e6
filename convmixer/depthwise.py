"""The depthwise conv of a mixer layer, on cuDNN or on the toolkit's Triton kernel.

`DepthwiseConv2d` is `nn.Conv2d(dim, dim, k, groups=dim, padding="same")` (the same parameters, so the same
state_dict keys) that can run on a Triton kernel instead of cuDNN: its `impl` is "torch" (nn.Conv2d's forward)
or "triton". The Triton route covers the three directions with two kernels: the forward, which also gives the
input gradient (the forward of the gradient with the kernel flipped and the "same" padding mirrored), and the
weight gradient, a per-tap reduction over the batch and the pixels. Each reads and writes through strides, so
NCHW and channels_last both run without a copy, and each accumulates in fp32 whatever the tensors' dtype. On CPU
it runs only under Triton's interpreter (TRITON_INTERPRET=1), which is how the tests check it without a GPU.

The model only offers the implementations (`IMPLS`, `use_impl`); which one a run uses, and its memory layout, is
the engine's choice (ablations/engine/setup.py).
"""

import functools
import os

import torch
from torch import nn

from convmixer.arguments import require
from convmixer.config import IMPLS

# Tile sizes of the Triton kernels: output pixels x channels per program, images per weight-gradient program.
# Untuned: a first guess that keeps a program's fp32 accumulator at 2,048 values (16 per thread with 4 warps).
BLOCK_HW, BLOCK_C, IMAGES_PER_PROGRAM = 64, 32, 16


def same_padding(kernel_size: int) -> int:
    """The top/left padding of padding="same": PyTorch puts the odd pixel of an even kernel on the bottom/right."""
    return (kernel_size - 1) // 2


# --- the Triton route (convmixer/depthwise_kernels.py, imported on first use: triton is optional) ---


@functools.cache
def triton_kernels(interpret: bool) -> tuple:
    """The two kernels, jitted (compiled for the GPU, or run by Triton's interpreter when `interpret`)."""
    triton = require("triton", "triton")
    from convmixer import depthwise_kernels

    del interpret  # part of the cache key only: triton.jit reads TRITON_INTERPRET itself
    return triton.jit(depthwise_kernels.forward), triton.jit(depthwise_kernels.weight_grad)


def kernels() -> tuple:
    return triton_kernels(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


def strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.stride())


@torch.library.custom_op("convmixer::depthwise_conv", mutates_args=())
def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int) -> torch.Tensor:
    """The depthwise conv of x (N, C, H, W, any strides) with weight (C, 1, K, K), zero padding `pad` on the
    top/left and K - 1 - pad on the bottom/right; the output has x's dtype and memory layout."""
    forward, _ = kernels()
    n, c, h, w = x.shape
    k = weight.shape[-1]
    y = torch.empty_like(x)
    grid = (n, -(-h * w // BLOCK_HW), -(-c // BLOCK_C))
    bias_arg = bias if bias is not None else weight  # never read when HAS_BIAS is False
    forward[grid](x, weight.contiguous(), bias_arg, y, c, h, w, *strides(x), *strides(y), pad,
                  K=k, HAS_BIAS=bias is not None, BLOCK_HW=BLOCK_HW, BLOCK_C=BLOCK_C)  # fmt: skip
    return y


@depthwise_conv.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("convmixer::depthwise_weight_grad", mutates_args=())
def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel_size: int, pad: int) -> torch.Tensor:
    """d(loss)/d(weight) of depthwise_conv, in fp32, shaped (C, 1, K, K)."""
    _, weight_grad = kernels()
    n, c, h, w = x.shape
    chunks = -(-n // IMAGES_PER_PROGRAM)
    partial = torch.empty(chunks, c, kernel_size * kernel_size, device=x.device, dtype=torch.float32)
    grid = (kernel_size * kernel_size, -(-c // BLOCK_C), chunks)
    weight_grad[grid](x, grad, partial, n, c, h, w, *strides(x), *strides(grad), pad,
                      K=kernel_size, IMAGES=IMAGES_PER_PROGRAM, BLOCK_HW=BLOCK_HW, BLOCK_C=BLOCK_C)  # fmt: skip
    return partial.sum(0).view(c, 1, kernel_size, kernel_size)


@depthwise_weight_grad.register_fake
def _(x: torch.Tensor, grad: torch.Tensor, kernel_size: int, pad: int) -> torch.Tensor:
    return x.new_empty(x.shape[1], 1, kernel_size, kernel_size, dtype=torch.float32)


def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    x, weight, bias, pad = inputs
    ctx.save_for_backward(x, weight)
    ctx.pad, ctx.has_bias = pad, bias is not None


def backward(ctx, grad: torch.Tensor) -> tuple:
    x, weight = ctx.saved_tensors
    k = weight.shape[-1]
    # The input gradient is a correlation of grad with the flipped kernel, padded on the opposite sides.
    grad_x = depthwise_conv(grad, weight.flip(2, 3), None, k - 1 - ctx.pad)
    grad_w = depthwise_weight_grad(x, grad, k, ctx.pad).to(weight.dtype)
    grad_b = grad.sum((0, 2, 3), dtype=torch.float32).to(weight.dtype) if ctx.has_bias else None
    return grad_x, grad_w, grad_b, None


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
