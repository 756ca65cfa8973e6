"""Learning-rate schedules as pure functions of the fractional epoch, evaluated before every optimiser step.

`onecycle` is the triangular schedule of the reference recipe (locuslab/convmixer-cifar10, train.py):
`np.interp(t, [0, 2E//5, 4E//5, E], [0, lr, lr/20, 0])`, with `t = epoch + (step + 1) / steps_per_epoch`,
so the first step already has a small positive rate and the last one has rate 0. `cosine` warms up linearly
over `warmup_epochs`, then decays to 0 along half a cosine.
"""

import math

import numpy as np

from ablations.config import RunConfig


def onecycle_lr(t: float, epochs: int, lr_max: float) -> float:
    return float(np.interp(t, [0, epochs * 2 // 5, epochs * 4 // 5, epochs], [0, lr_max, lr_max / 20, 0]))


def cosine_lr(t: float, epochs: int, lr_max: float, warmup_epochs: int) -> float:
    if t < warmup_epochs:
        return lr_max * t / warmup_epochs
    progress = min((t - warmup_epochs) / max(epochs - warmup_epochs, 1e-12), 1.0)
    return lr_max * 0.5 * (1 + math.cos(math.pi * progress))


def learning_rate(cfg: RunConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The rate for optimiser step `step` (0-based) of epoch `epoch` (0-based)."""
    t = epoch + (step + 1) / steps_per_epoch
    if cfg.schedule == "onecycle":
        return onecycle_lr(t, cfg.epochs, cfg.lr)
    return cosine_lr(t, cfg.epochs, cfg.lr, cfg.warmup_epochs)
