"""The measurements benchmarks.train_speed makes besides training: the engine as a researcher runs it (the product's
command in a fresh process, timed from start to exit), the bare training step, the device's copy rate, and the
bytes one training step moves.

- `product_runs`: `python -m ablations.run` for a RunConfig's seeds, one process per seed or all seeds in one
  sweep with `jobs` runs side by side on the device; per seed its history, metrics and the process's wall time.
- `bare_step`: the engine's own train_step (model, loss, backward, AdamW) on random images already on the device,
  with no augmentation, evaluation or bookkeeping: the ceiling a steady epoch is measured against.
- `copy_rate`: bytes read + written per second by a large device-to-device copy.
- `step_bytes`: the inputs and outputs of every aten op of one eager training step (views excluded), summed: the
  bytes an unfused step moves if each op reads and writes its tensors once. With the bare step's rate it gives
  the achieved memory bandwidth, which is what bounds a model this small (the GPU audit: ~19 FLOP per byte).
"""

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ablations.config import RunConfig
from ablations.engine import train
from ablations.store import HISTORY, METRICS, RUNS, read_history, read_metrics
from convmixer.runtime import step_seconds

REPO = Path(__file__).resolve().parents[1]


def set_text(cfg: RunConfig) -> str:
    """Every key of cfg but the seed (the product command's --grid gives it) as one --set value of
    `python -m ablations.run`: the product run is cfg, whatever --set changed."""
    values = {key: value for key, value in cfg.to_dict().items() if key != "seed"}
    return ",".join(f"{key}={str(v).lower() if isinstance(v, bool) else v}" for key, v in values.items())


def product_command(cfg: RunConfig, seeds: list[int], device: torch.device, jobs: int, out: Path) -> list[str]:
    grid = "seed=" + ",".join(map(str, seeds))
    options = ["--preset", "cifar10", "--set", set_text(cfg), "--grid", grid, "--devices", str(device)]
    options += ["--jobs-per-device", str(jobs), "--out", str(out), "--name", out.name]
    return [sys.executable, "-m", "ablations.run", *options]


def product_runs(
    cfg: RunConfig, seeds: list[int], device: torch.device, jobs: int, work: Path, env: dict
) -> tuple[list[dict], float]:
    """The seeds' runs of cfg by the product's command, all in one sweep process with `jobs` runs per device
    (jobs=1: one after another). Returns per seed {"history", "metrics"} and the process's start-to-exit seconds."""
    out = work / f"sweep-{len(list(work.glob('sweep-*')))}"
    command = product_command(cfg, seeds, device, jobs, out)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    runs = []
    for seed in seeds:
        folder = out / RUNS / RunConfig.from_dict({**cfg.to_dict(), "seed": seed}).run_id()
        runs.append({"history": read_history(folder / HISTORY), "metrics": read_metrics(folder / METRICS)})
    return runs, wall


def product_env(inductor_cache: Path) -> dict:
    """The environment of the product processes: this checkout first on the path, and a fresh Inductor cache for
    this benchmark, so the first compiled run pays a cold compile and the later ones show the warm cache."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache)}


def random_batch(cfg: RunConfig, image_size: int, classes: int, device: torch.device):
    gen = torch.Generator(device).manual_seed(cfg.seed)
    images = torch.randn(cfg.batch_size, 3, image_size, image_size, generator=gen, device=device)
    return images, torch.randint(classes, (cfg.batch_size,), generator=gen, device=device)


def bare_trainer(cfg: RunConfig, classes: int, device: torch.device, mode: str) -> train.Trainer:
    """The engine's Trainer for cfg; `mode` eager, compiled (as compile=true) or cudagraphs (torch.compile's
    reduce-overhead mode, as cuda_graphs=true: CUDA graphs of the compiled forward and backward; plain Inductor on a
    CPU)."""
    dtype = train.run_dtype(cfg.precision, device)
    if mode != "eager":
        train.persistent_compile_caches()
        graphs = mode == "cudagraphs" and device.type == "cuda"
        cfg = dataclasses.replace(cfg, compile=True, cuda_graphs=graphs)
    return train.Trainer(cfg, cfg.model_config(classes).build(), device, dtype)


def bare_step(cfg: RunConfig, image_size: int, classes: int, device: torch.device, mode: str, steps: int) -> dict:
    """Images per second of the engine's train_step alone (after warm-up steps, which compile if `mode` does)."""
    torch.manual_seed(cfg.seed)
    trainer = bare_trainer(cfg, classes, device, mode)
    images, targets = random_batch(cfg, image_size, classes, device)
    trainer.model.train()
    seconds = step_seconds(lambda: trainer.train_step(images, targets, cfg.lr), device, warmup=3, repeats=steps)
    return {"mode": mode, "steps": steps, "images_per_s": steps * cfg.batch_size / sum(seconds)}


class OpBytes(TorchDispatchMode):
    """Sums the bytes of every non-view aten op's tensor inputs and outputs, and counts the ops."""

    def __init__(self) -> None:
        super().__init__()
        self.total = self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.ops += 1
            tensors = [t for t in (*args, *(kwargs or {}).values(), out) for t in flat(t)]
            self.total += sum(t.nbytes for t in tensors)
        return out


def flat(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flat(item)]
    return []


def step_bytes(cfg: RunConfig, image_size: int, classes: int, device: torch.device) -> int:
    """The op-level bytes of one eager training step of cfg's model (after a warm-up step)."""
    trainer = bare_trainer(cfg, classes, device, "eager")
    images, targets = random_batch(cfg, image_size, classes, device)
    trainer.train_step(images, targets, cfg.lr)
    with OpBytes() as counter:
        trainer.train_step(images, targets, cfg.lr)
    return counter.total


def copy_rate(device: torch.device, megabytes: int, repeats: int = 10) -> float:
    """Bytes per second read plus written by a device-to-device copy of `megabytes` MB."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    seconds = step_seconds(lambda: target.copy_(source), device, warmup=1, repeats=repeats)
    return 2 * source.nbytes * repeats / sum(seconds)
