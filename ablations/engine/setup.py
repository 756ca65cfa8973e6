"""How a run lays out its tensors and runs its depthwise convs: the engine's choice among what the model offers.

`fastest_setup` decides, per run, the memory layout (channels_last or NCHW) and the depthwise implementation
(convmixer.depthwise.IMPLS) when a run leaves them at "auto": on CUDA it times one mixer layer's forward and backward
at the run's shape under each candidate, once per process and shape (cached), and keeps the fastest; on CPU "auto"
is what it always was (channels_last, torch). Run ids do not depend on the choice.
"""

import functools
import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from convmixer.arguments import require
from convmixer.depthwise import IMPLS, DepthwiseConv2d, use_impl
from convmixer.runtime import step_seconds


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
    """Seconds of one forward and backward of a mixer layer of `work` run as `setup` says (the median of 5, after 3
    untimed). Its random weights and batch come from a forked generator, so measuring never shifts the random
    numbers of the run that asked."""
    with torch.random.fork_rng(devices=[work.device] if work.device.type == "cuda" else []):
        layer, x = mixer_layer(setup, work)

        def step() -> None:
            with torch.autocast(work.device.type, dtype=work.dtype, enabled=work.dtype is not None):
                out = layer(x)
            out.float().square().mean().backward()

        return statistics.median(step_seconds(step, work.device, warmup=3, repeats=5))


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
