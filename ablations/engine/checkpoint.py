"""A run's checkpoint.pt read back: what it must hold, what happens to one that is unusable, and how every process
of a run resumes from the same epoch.

The engine writes it at each epoch's end (Trainer.state, atomic.torch_save) with only tensors and plain Python
values, so it loads with `weights_only=True`; a resumed run replays exactly what an uninterrupted one would have done
(every random draw comes from (seed, epoch)).
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from ablations.config import RunConfig
from ablations.engine import distributed
from ablations.engine.distributed import Ranks
from ablations.store import CHECKPOINT_KEYS, set_aside


class Loader(Protocol):
    """What reads a checkpoint in: engine.train's Trainer (which imports this module)."""

    device: torch.device
    ranks: Ranks

    def load(self, checkpoint: dict) -> None: ...


def read_checkpoint(path: Path, cfg: RunConfig, trainer: Loader, log: Callable[[str], None]) -> dict | None:
    """This run's checkpoint at `path`, loaded into `trainer` (Trainer.load: all or nothing), or None when it is
    unusable (truncated, damaged, another run's, a tensor of another shape: anything that does not load): then it
    is set aside (ablations.store.set_aside: checkpoint.pt.damaged-<time>), named in the log and on the console,
    and the run starts over, since retrying with the same file would fail the same way every time."""
    try:
        checkpoint = torch.load(path, map_location=trainer.device, weights_only=True)
        missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
        problem = f"it has no {missing[0]!r}" if missing else ""
        if not problem and checkpoint["run_id"] != cfg.run_id():
            problem = f"it belongs to run {checkpoint['run_id']}"
        if not problem:
            trainer.load(checkpoint)
    except Exception as error:  # truncated, not a zip, a pickle weights_only refuses, a tensor of another shape
        problem = f"it cannot be loaded ({first_line(error)})"
    if not problem:
        return checkpoint
    aside = set_aside(path)
    message = f"checkpoint {path} is unusable ({problem}): set aside as {aside.name}; training from scratch"
    log(message)
    if log is not print:  # a sweep's run logs to its log.txt: say it on the console too
        print(f"{cfg.run_id()}: {message}", file=sys.stderr)
    return None


def first_line(error: Exception) -> str:
    """The error's type and first line, short: torch's own text would suggest weights_only=False, and a size
    mismatch lists every tensor."""
    text = str(error).strip().splitlines()
    detail = text[1 if len(text) > 1 and text[0].endswith(":") else 0].strip() if text else ""
    detail = "" if "weights_only" in str(error) else detail
    return f"{type(error).__name__}: {detail[:160]}" if detail else type(error).__name__


def read_checkpoint_on_every_rank(
    path: Path | None, cfg: RunConfig, trainer: Loader, log: Callable[[str], None]
) -> dict | None:
    """The checkpoint every rank resumes from, loaded into each rank's `trainer`: rank 0 reads and loads it first
    (and alone sets an unusable one aside), then the others load what it kept (the same model takes it the same
    way); a rank that finds another epoch there than rank 0 (a checkpoint changed in between) fails the run instead
    of training out of step."""
    checkpoint = None
    if trainer.ranks.main and path is not None and path.exists():
        checkpoint = read_checkpoint(path, cfg, trainer, log)
    distributed.barrier()
    if not trainer.ranks.main and path is not None and path.exists():
        checkpoint = torch.load(path, map_location=trainer.device, weights_only=True)
        trainer.load(checkpoint)
    epochs = distributed.gathered(checkpoint["epoch"] if checkpoint else 0)
    if len(set(epochs)) > 1:
        raise RuntimeError(f"the ranks found checkpoints of different epochs in {path}: {epochs}")
    return checkpoint
