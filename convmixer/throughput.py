"""Inference throughput of a model: images/s and peak memory on a device, timed after warm-up.

The counter's CLI reports it next to the counts (`python -m convmixer.count --throughput`), and the GPU check
runs it on CUDA. Each batch is timed by convmixer.runtime.step_seconds (CUDA events on a GPU: launches are
asynchronous).
"""

import statistics

import torch
from torch import nn

from convmixer.arguments import check_choice, check_integer
from convmixer.model import count_parameters
from convmixer.runtime import AUTOCAST_DTYPES, check_memory, parse_device, peak_memory_mb, step_seconds


def measure_throughput(
    model: nn.Module,
    image_size: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    *,
    in_chans: int = 3,
    warmup: int = 3,
    repeats: int = 10,
    dtype: str = "fp32",
    channels_last: bool = False,
) -> dict:
    """Inference images/s (median over `repeats` timed batches) and peak memory of `model` on `device`.

    Peak memory is torch.cuda.max_memory_allocated on CUDA. On CPU it is how much the process's peak
    resident set grew during warm-up and timing: a lower bound, 0 if an earlier peak was already higher.
    """
    for name, value, minimum in (("batch_size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        check_integer(name, value, minimum)
    check_choice("dtype", dtype, AUTOCAST_DTYPES)
    device = parse_device(device)
    if device.type == "cpu":  # a lower bound: the weights and the batch of images alone
        floats = count_parameters(model) + batch_size * in_chans * image_size**2
        check_memory(f"batch_size={batch_size}, image_size={image_size}", floats)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).eval()
    images = torch.randn(batch_size, in_chans, image_size, image_size, device=device)
    images = images.contiguous(memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=AUTOCAST_DTYPES[dtype], enabled=dtype != "fp32")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_memory_mb(device)
    with torch.inference_mode(), autocast:
        median = statistics.median(step_seconds(lambda: model(images), device, warmup, repeats))
    if device.type == "cuda":
        peak_mb, peak_kind = peak_memory_mb(device), "torch.cuda.max_memory_allocated"
    else:
        peak_mb, peak_kind = peak_memory_mb(device) - before, "growth of the process's peak RSS, a lower bound"
    return {
        "device": str(device),
        "batch_size": batch_size,
        "dtype": dtype,
        "channels_last": channels_last,
        "repeats": repeats,
        "median_batch_s": median,
        "images_per_s": batch_size / median,
        "peak_memory_mb": peak_mb,
        "peak_memory_kind": peak_kind,
    }
