"""What code needs to know about the machine it runs on, in one place: device names, autocast dtypes, CUDA math
flags, synchronisation, timing a step, peak memory, and the facts every stored number names
(hardware, commit).

Everything here is plain torch and the standard library, so the engine, the counter, the sweep CLI and the
benchmarks share one device vocabulary without importing each other (or fvcore).
"""

import itertools
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.backends import cudnn

from convmixer.arguments import AUTOCAST_PRECISIONS

REPO = Path(__file__).resolve().parent.parent


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU model as the OS names it, with the cores this process may use: 'AMD EPYC 7B13 (2 cores)'."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:  # not Linux
        pass
    return f"{model} ({usable_cores()} cores)"


def hardware_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def gpu_driver(device: torch.device) -> str | None:
    """The NVIDIA driver's version on CUDA (nvidia-smi's), None elsewhere or when nvidia-smi does not answer: two
    sittings of one study on the same GPU kind may still differ in driver, and the run should say so."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={index}"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip() if done.returncode == 0 else ""
    return version or None


def toolkit_commit() -> str:
    """The git commit of this checkout ('-dirty' when it has uncommitted changes), or 'unknown' outside git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=10"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


# --- devices: one vocabulary for every entry point (the engine, the sweep CLI, count, the benchmarks) ---


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` as CUDA where there is a GPU, else the CPU; any other name as torch.device, unchecked."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def parse_device(device: str | torch.device) -> torch.device:
    """`device` (auto, cpu, cuda or cuda:N) as a torch.device that exists on this machine, else ValueError."""
    if str(device) == "auto":
        return resolve_device(device)
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} is not accepted; choose auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} is not accepted: CUDA is not available on this machine")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r} is not accepted: there are {torch.cuda.device_count()} GPU(s)")
    return parsed


def parse_devices(text: str) -> list[str]:
    """A sweep's devices: `auto` (every visible GPU, else the CPU), `cpu`, `cuda` (every GPU), or GPU indices
    `0,1` / `cuda:0,cuda:1`. Counts GPUs without creating a CUDA context, so spawned workers start cleanly."""
    gpus = torch.cuda.device_count()
    accepted = f"expected auto, cpu, cuda, or GPU indices like 0,1 or cuda:0,cuda:1 ({gpus} GPUs visible)"
    word = text.strip().lower()
    if word in ("auto", "cuda", "gpu") and (gpus or word == "auto"):
        return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    if word == "cpu":
        return ["cpu"]
    devices = []
    for item in word.split(","):
        index = item.strip().removeprefix("cuda:")
        if not index.isdigit() or int(index) >= gpus or f"cuda:{int(index)}" in devices:
            raise ValueError(f"--devices {text!r} is not accepted: {accepted}")
        devices.append(f"cuda:{int(index)}")
    return devices


def device_name(device: torch.device) -> str:
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


# --- precision ---

AUTOCAST_DTYPES = dict(zip(AUTOCAST_PRECISIONS, (None, torch.bfloat16, torch.float16), strict=True))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `precision` (auto, fp32, bf16, fp16) on `device`, None for plain fp32; ValueError for
    fp16 off CUDA (it needs a GradScaler, which we run only on CUDA). auto: bf16 on CUDA, fp32 elsewhere."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' is not accepted on {device.type}: it needs CUDA; use bf16 or fp32")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision={precision!r} is not accepted; choose auto, {', '.join(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[precision]


@contextmanager
def cuda_math_flags(*, benchmark: bool, tf32: bool) -> Iterator[None]:
    """For a block: cuDNN's autotuner on or off, and TF32 for fp32 convolutions on or off (torch's default is on);
    fp32 matmuls stay full fp32 (torch's default). Restores the flags afterwards, so one run's choice never leaks
    into the next run, a benchmark's baseline or a test in the same process."""
    saved = (cudnn.benchmark, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    cudnn.benchmark, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = benchmark, tf32, False
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# --- timing and memory ---


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA launches are asynchronous; time the work, not the launch


def step_seconds(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """The time of each of `repeats` calls of `step`, after `warmup` untimed ones: the one timing helper of the
    toolkit. On CUDA, events recorded around each call time the work on the device (as airbench does), with one
    host sync at the end, so a short step is not slowed by a sync of its own; elsewhere the wall clock."""
    for _ in range(warmup):
        step()
    if device.type != "cuda":
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
        return seconds
    events = [torch.cuda.Event(enable_timing=True) for _ in range(repeats + 1)]
    with torch.cuda.device(device):
        events[0].record()
        for event in events[1:]:
            step()
            event.record()
        torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in itertools.pairwise(events)]


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors held on the device (since the last reset of its peak statistics).
    CPU: the peak resident set size of the whole process, as the OS reports it."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def check_memory(sizes: str, floats: int) -> None:
    """Refuse `sizes` whose `floats` float32 numbers cannot fit in this machine's memory, before allocating them:
    a failed allocation is a C++ traceback, and one that nearly fits drives the machine into swap."""
    needed, available = 4 * floats, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise ValueError(
            f"{sizes} are not accepted: they need at least {needed / 2**30:.3g} GiB of memory, more than the "
            f"{available / 2**30:.3g} GiB of this machine"
        )
