"""How a run's numbers end it and sum it up: the divergence rule each epoch's record is checked against, and the
run's summary that metrics.json holds (its last epoch, totals over epochs, and the facts of where and how it ran).
"""

import datetime
import math

import torch

from ablations.store import DIVERGED, DONE
from convmixer.runtime import device_name, gpu_driver, hardware_name, peak_memory_mb, toolkit_commit

# Divergence of a finite loss: from this epoch on, a train loss above CHANCE_FACTOR x ln(classes) (the loss of a
# uniform guess) stops the run. Epoch 1 is spared (a warm-up can start high); no committed run's train loss ever
# went above 1.03 x chance (tests/test_train.py checks them), and an exploding lr=10 run stood at 120 x.
DIVERGENCE_FROM_EPOCH, CHANCE_FACTOR = 2, 3.0


def divergence(record: dict, num_classes: int) -> str:
    """Why an epoch's numbers mean the run diverged, or "" when they do not: a loss that is not finite, or the
    rule above."""
    for key in ("train_loss", "test_loss"):
        if not math.isfinite(record[key]):
            return f"{key.replace('_', ' ')} is {record[key]} in epoch {record['epoch']}"
    limit = CHANCE_FACTOR * math.log(num_classes)
    if record["epoch"] >= DIVERGENCE_FROM_EPOCH and record["train_loss"] > limit:
        return (
            f"train loss is {record['train_loss']:.4g} in epoch {record['epoch']}, above {CHANCE_FACTOR:g} x "
            f"ln({num_classes} classes) = {limit:.3g}"
        )
    return ""


def final_metrics(history: list[dict], reason: str, device: torch.device, counts: dict, wall_time_s: float,
                  engine: dict) -> dict:  # fmt: skip
    """The run's summary: the last completed epoch's numbers (None if none completed), totals over epochs, and
    `engine`'s facts of how it ran (precision, TF32, compiled graphs)."""
    last = history[-1] if history else {}
    train_time = sum(record["train_time_s"] for record in history)
    images = sum(record["train_time_s"] * record["train_images_per_s"] for record in history)
    return {
        "status": DIVERGED if reason else DONE,
        "reason": reason,
        **{key: last.get(key) for key in ("test_acc", "test_loss", "train_acc", "train_loss")},
        "train_images_per_s": images / train_time if train_time else None,
        "peak_memory_mb": peak_memory_mb(device),
        "train_time_s": train_time,
        "wall_time_s": wall_time_s,
        **{key: counts[key] for key in ("params", "macs", "flops")},
        "epochs_completed": len(history),
        **engine,
        "device": device_name(device),
        "hardware": hardware_name(device),
        **({"driver": driver} if (driver := gpu_driver(device)) else {}),  # GPU runs only: the report checks types
        "torch_version": torch.__version__,
        "toolkit_commit": toolkit_commit(),
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
