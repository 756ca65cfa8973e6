"""How a run executes, apart from what it computes: its autocast dtype, torch.compile (with its on-disk caches and
CUDA graphs), fused AdamW and activation checkpointing. Each is a switch of RunConfig whose choice the engine
records in metrics.json; none changes the function trained (the tests hold each against its plain form).
"""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from torch._inductor.runtime.cache_dir_utils import default_cache_dir
from torch.utils.checkpoint import checkpoint

from ablations.config import ConfigError, RunConfig
from ablations.data.sources import cache_dir
from convmixer.runtime import AUTOCAST_DTYPES, autocast_dtype

COMPILE_BACKEND = "inductor"  # torch.compile's; the tests use "eager" to check graph capture without a C++ build
COMPILE_CACHE = "inductor"  # Inductor's cache folder, under the toolkit's cache folder ($CONVMIXER_CACHE)
PRECISION_NAMES = {dtype: name for name, dtype in AUTOCAST_DTYPES.items()}  # metrics.json's precision_used


def run_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a run of `precision` uses on `device` (None: plain fp32); ConfigError if it cannot run."""
    try:
        return autocast_dtype(precision, device)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def compiled_graphs() -> int:
    """Graphs torch.compile has captured in this process so far (dynamo's counter survives dynamo.reset)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def persistent_compile_caches() -> Path:
    """Keep Inductor's on-disk caches (the FX graph and AOTAutograd caches, on by default, and the kernels) under
    the toolkit's cache folder, so that every later run compiling the same shapes, in this process, in another
    worker of the sweep or in a later sweep, loads compiled code instead of compiling it again. Set before the
    first compile of each process (torch reads the folder when it compiles); an explicit TORCHINDUCTOR_CACHE_DIR
    (a benchmark's fresh folder, say) is kept. Unlike torch's default (/tmp/torchinductor_<user>), the folder
    lives with the decoded data, so it can be carried to a fresh GPU machine with them. Returns the folder."""
    # Importing torch's compiler already writes its default folder into the environment: replace only that.
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / COMPILE_CACHE)
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def check_cuda_graphs(cfg: RunConfig, device: torch.device) -> None:
    """ConfigError if the run asks for CUDA graphs on a device that has none."""
    if cfg.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"cuda_graphs=True is not accepted on {device.type}: CUDA graphs need a CUDA device")


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs fused on `device`: on CUDA, one kernel for all parameters and no host sync (the
    for-each kernel reads its step counters back to the host). The CPU keeps the for-each kernel, whose
    numbers the committed CPU results were made with."""
    return device.type == "cuda"


@contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """Leave `module`'s buffers as they were on entry: a recomputed forward pass in training mode would update
    BatchNorm's running statistics (and its batch count) a second time. Restored in `finally`: the checkpoint
    ends a recomputation early by raising once it has the tensors the backward pass needs."""
    kept = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in kept:
                buffer.copy_(value)


def checkpoint_blocks(model: nn.Module) -> None:
    """Recompute each mixer block's activations in the backward pass instead of keeping them (checkpoint_activations):
    the forward's memory becomes one block's. The modules stay where they are, so the state dict is unchanged, and
    the recomputation leaves the buffers alone, so the run trains the same function as without."""
    for block in model.blocks:

        def forward(x: torch.Tensor, block_forward: Callable = block.forward, block: nn.Module = block) -> torch.Tensor:
            contexts = lambda: (nullcontext(), buffers_kept(block))  # noqa: E731 (forward pass, recomputation)
            return checkpoint(block_forward, x, use_reentrant=False, context_fn=contexts)

        block.forward = forward
