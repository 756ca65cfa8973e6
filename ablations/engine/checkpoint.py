"""A run's checkpoint.pt read back: what it must hold, what happens to one that is unusable, and how every process
of a run resumes from the same epoch.

The engine writes it at each epoch's end (Trainer.state, atomic.torch_save) with only tensors and plain Python
values, so it loads with `weights_only=True`; a resumed run replays exactly what an uninterrupted one would have done
(every random draw comes from (seed, epoch)).
"""

import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ablations.config import RunConfig
from ablations.engine import distributed
from ablations.engine.distributed import Ranks
from ablations.store import CHECKPOINT_KEYS, set_aside


def read_checkpoint(path: Path, cfg: RunConfig, device: torch.device, log: Callable[[str], None]) -> dict | None:
    """This run's checkpoint at `path`, or None when it is unusable (truncated, damaged, another run's): then it
    is set aside (ablations.store.set_aside: checkpoint.pt.damaged-<time>), named in the log and on the console,
    and the run starts over, since retrying with the same file would fail the same way every time."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
        problem = f"it has no {missing[0]!r}" if missing else ""
        if not problem and checkpoint["run_id"] != cfg.run_id():
            problem = f"it belongs to run {checkpoint['run_id']}"
    except Exception as error:  # truncated, not a zip, a pickle weights_only refuses: all mean "unusable"
        problem = f"it cannot be loaded ({type(error).__name__})"  # torch's text would suggest weights_only=False
    if not problem:
        return checkpoint
    aside = set_aside(path)
    message = f"checkpoint {path} is unusable ({problem}): set aside as {aside.name}; training from scratch"
    log(message)
    if log is not print:  # a sweep's run logs to its log.txt: say it on the console too
        print(f"{cfg.run_id()}: {message}", file=sys.stderr)
    return None


def read_checkpoint_on_every_rank(
    path: Path | None, cfg: RunConfig, device: torch.device, ranks: Ranks, log: Callable[[str], None]
) -> dict | None:
    """The checkpoint every rank resumes from: rank 0 reads it first (and alone sets an unusable one aside), then
    the others read what it kept; a rank that finds another epoch there than rank 0 (a checkpoint changed in
    between) fails the run instead of training out of step."""
    checkpoint = None
    if ranks.main and path is not None and path.exists():
        checkpoint = read_checkpoint(path, cfg, device, log)
    distributed.barrier()
    if not ranks.main and path is not None and path.exists():
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    epochs = distributed.gathered(checkpoint["epoch"] if checkpoint else 0)
    if len(set(epochs)) > 1:
        raise RuntimeError(f"the ranks found checkpoints of different epochs in {path}: {epochs}")
    return checkpoint
