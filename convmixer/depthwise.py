"""The depthwise conv of a mixer layer, and choosing the fastest way to run it on a GPU.

`DepthwiseConv2d` is `nn.Conv2d(dim, dim, k, groups=dim, padding="same")` (the same parameters, so the same
state_dict keys) that can run on a Triton kernel instead of cuDNN: its `impl` is "torch" (nn.Conv2d's forward)
or "triton". The Triton route covers the three directions with two kernels: the forward, which also gives the
input gradient (the forward of the gradient with the kernel flipped and the "same" padding mirrored), and the
weight gradient, a per-tap reduction over the batch and the pixels. Each reads and writes through strides, so
NCHW and channels_last both run without a copy, and each accumulates in fp32 whatever the tensors' dtype. On CPU
it runs only under Triton's interpreter (TRITON_INTERPRET=1), which is how the tests check it without a GPU.

`fastest_setup` decides, per run, the memory layout (channels_last or NCHW) and the depthwise implementation when
a run leaves them at "auto": on CUDA it times one mixer layer's forward and backward at the run's shape under
each candidate, once per process and shape (cached), and keeps the fastest; on CPU "auto" is what it always was
(channels_last, torch). Run ids do not depend on the choice.
"""

import functools
import itertools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from convmixer.runtime import require, synchronize

IMPLS = ("torch", "triton")
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


# --- choosing the layout and the implementation on the device ---


@dataclass(frozen=True)
class Setup:
    """How a run lays out its tensors and runs its depthwise convs."""

    channels_last: bool
    impl: str  # one of IMPLS


@dataclass(frozen=True)
class Workload:
    """The shape one mixer layer of a run sees: what a measurement times, and the key of its cached choice."""

    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype, None for fp32
    dim: int
    kernel_size: int
    size: int  # height and width of the feature map: image size // patch size
    batch: int


def step_seconds(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """The wall time of each of `repeats` calls of `step`, after `warmup` untimed ones, each synchronised."""
    seconds = []
    for call in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if call >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def median_seconds(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    return statistics.median(step_seconds(step, device, warmup, repeats))


def mixer_layer(setup: Setup, work: Workload) -> tuple[nn.Module, torch.Tensor]:
    """One mixer layer (depthwise conv, GELU, BatchNorm, 1x1 conv) and a batch for it, laid out as `setup` says."""
    layer = nn.Sequential(DepthwiseConv2d(work.dim, work.kernel_size), nn.GELU(), nn.BatchNorm2d(work.dim),
                          nn.Conv2d(work.dim, work.dim, 1))  # fmt: skip
    use_impl(layer, setup.impl)
    memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
    layer.to(work.device, memory_format=memory_format)
    x = torch.randn(work.batch, work.dim, work.size, work.size, device=work.device)
    return layer, x.contiguous(memory_format=memory_format).requires_grad_()


def time_setup(setup: Setup, work: Workload) -> float:
    """Seconds of one forward and backward of a mixer layer of `work` run as `setup` says. Its random weights and
    batch come from a forked generator, so measuring never shifts the random numbers of the run that asked."""
    with torch.random.fork_rng(devices=[work.device] if work.device.type == "cuda" else []):
        layer, x = mixer_layer(setup, work)

        def step() -> None:
            with torch.autocast(work.device.type, dtype=work.dtype, enabled=work.dtype is not None):
                out = layer(x)
            out.float().square().mean().backward()

        return median_seconds(step, work.device, warmup=3, repeats=5)


def candidates(channels_last: bool | str, impl: str, device: torch.device) -> tuple[Setup, ...]:
    """The setups "auto" leaves open. On CPU only the one it always was: channels_last unless told False, torch."""
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"depthwise_impl={impl!r} is not accepted; choose auto, {', '.join(IMPLS)}")
    if device.type != "cuda":
        return (Setup(channels_last is not False, "torch"),)
    layouts = (True, False) if channels_last == "auto" else (bool(channels_last),)
    impls = IMPLS if impl == "auto" else (impl,)
    if "triton" in impls:
        require("triton", "triton")
    return tuple(Setup(layout, name) for layout, name in itertools.product(layouts, impls))


@functools.cache
def fastest(options: tuple[Setup, ...], work: Workload, seconds: Callable[[Setup, Workload], float]) -> Setup:
    """The option with the fewest `seconds` on `work`; cached, so a worker measures each shape once."""
    return min(options, key=lambda setup: seconds(setup, work))


def fastest_setup(channels_last: bool | str, impl: str, work: Workload,
                  seconds: Callable[[Setup, Workload], float] = time_setup) -> Setup:  # fmt: skip
    """The setup a run uses: what it asked for, with each "auto" settled by timing `work` on its device."""
    options = candidates(channels_last, impl, work.device)
    return options[0] if len(options) == 1 else fastest(options, work, seconds)
