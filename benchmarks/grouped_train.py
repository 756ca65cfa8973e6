"""Training N runs that differ only in their seed as one GroupedConvMixer, each as its solo run would train.

What keeps each model's training its solo run's (tests/test_grouped.py holds them equal to the engine's runs):
- weights: model i is built from torch.manual_seed(seed_i) as train_run builds it, then stacked;
- data: each run has its own TrainLoader (its seed's permutation and augmentation stream, as its solo run draws
  them); the step's batch is the N batches side by side along the channels, and the test set is given to all;
- loss: the sum of the N models' mean losses, so each model's gradient is its solo gradient;
- clipping: each model's gradient norm over its own parameters (its rows of every gradient), and its own factor;
- AdamW: one optimiser over the grouped parameters is N optimisers, since AdamW works element by element and the
  runs share lr, schedule and step count; model i's moments are its rows of the state.
What it does not do (refused by `check_groupable`): fp16 (GradScaler would skip every model's step when one model's
gradient overflows), several processes, gradient accumulation, activation checkpointing and compile.
"""

import dataclasses
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ablations.config import ConfigError, RunConfig
from ablations.data.loaders import TestLoader, TrainLoader, build_data
from ablations.engine.schedule import learning_rate
from ablations.engine.setup import Setup, Workload, fastest_setup
from ablations.engine.train import fused_adamw, run_dtype
from benchmarks.grouped import GroupedConvMixer
from convmixer.depthwise import use_impl
from convmixer.runtime import cuda_math_flags, synchronize

# Run keys the prototype leaves at their defaults: what it has not built.
UNBUILT = ("accum_steps", "checkpoint_activations", "compile")


def check_groupable(cfgs: list[RunConfig]) -> None:
    """ConfigError (one line) unless the runs differ only in their seed, each seed once, and can be grouped."""
    seeds = [cfg.seed for cfg in cfgs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} are not accepted: a group trains each seed once")
    first = dataclasses.replace(cfgs[0], seed=0).to_dict()
    for cfg in cfgs[1:]:
        other = dataclasses.replace(cfg, seed=0).to_dict()
        key = next((key for key, value in first.items() if other[key] != value), None)
        if key is not None:
            raise ConfigError(
                f"{key}={other[key]!r} is not accepted: a group's runs differ only in seed "
                f"(the first run has {key}={first[key]!r})"
            )
    if first["precision"] == "fp16":
        raise ConfigError(
            "precision='fp16' is not accepted for grouped runs: GradScaler would skip every model's "
            "step when one model's gradient overflows"
        )
    for key in UNBUILT:
        if first[key] != getattr(RunConfig, key):
            raise ConfigError(f"{key}={first[key]!r} is not accepted for grouped runs: not built")


def per_model_clip(grads: list[torch.Tensor], groups: int, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for each model apart: model i's rows of every gradient scaled by max_norm / (its norm +
    1e-6), at most 1, as torch's clip_grad_norm_ scales a solo model's gradients. Returns the N norms."""
    rows = [grad.unflatten(0, (groups, -1)) for grad in grads]  # a view: model i is rows[.][i]
    squares = torch.stack([row.float().square().flatten(1).sum(1) for row in rows]).sum(0)
    norms = squares.sqrt()
    factors = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for row in rows:
        row.mul_(factors.view(-1, *[1] * (row.ndim - 1)).to(row.dtype))
    return norms


class GroupedTrainer:
    """The grouped model and its optimiser, with one method per phase of an epoch, as the engine's Trainer."""

    def __init__(
        self,
        cfgs: list[RunConfig],
        models: list[torch.nn.Module],
        device: torch.device,
        dtype: torch.dtype | None,
        setup: Setup,
    ) -> None:
        check_groupable(cfgs)
        self.cfg, self.groups, self.device, self.dtype = cfgs[0], len(cfgs), device, dtype
        self.model = GroupedConvMixer.from_models(models)
        use_impl(self.model, setup.impl)
        self.memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.model.to(device=device, memory_format=self.memory_format)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.cfg.lr,
            weight_decay=self.cfg.weight_decay,
            eps=self.cfg.adam_eps,
            fused=fused_adamw(device),
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N * C, H, W) -> (B, N, classes), in fp32."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.model(images.contiguous(memory_format=self.memory_format)).float()

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every model on its own batch: `images` (B, N * C, H, W), `targets` (B, N) labels or (B,
        classes, N) soft targets. Returns each model's summed loss and number correct, (N,) each, on the device."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.logits(images)
        smoothing = self.cfg.label_smoothing
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", label_smoothing=smoothing).mean(0)
        losses.sum().backward()
        if self.cfg.clip_norm > 0:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            per_model_clip(grads, self.groups, self.cfg.clip_norm)
        self.optimizer.step()
        labels = targets if targets.ndim == 2 else targets.argmax(1)
        return losses.detach() * len(targets), (logits.detach().argmax(2) == labels).sum(0)

    def train_epoch(self, loaders: list[TrainLoader], epoch: int) -> list[dict]:
        """One epoch of every model on its own loader; each model's record as its solo run's train_epoch gives."""
        self.model.train()
        loss_sum = torch.zeros(self.groups, device=self.device)
        correct = torch.zeros(self.groups, device=self.device, dtype=torch.long)
        seen, lr = 0, 0.0
        synchronize(self.device)
        start = time.perf_counter()
        for step, (images, targets) in enumerate(side_by_side(loaders, epoch)):
            lr = learning_rate(self.cfg, epoch, step, len(loaders[0]))
            batch_loss, batch_correct = self.train_step(images, targets, lr)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(targets)
        losses, corrects = loss_sum.tolist(), correct.tolist()
        seconds = time.perf_counter() - start
        return [
            {
                "train_loss": loss / seen,
                "train_acc": right / seen,
                "lr": lr,
                "train_time_s": seconds,
                "train_images_per_s": seen / seconds,
            }
            for loss, right in zip(losses, corrects, strict=True)
        ]

    @torch.inference_mode()
    def evaluate(self, loader: TestLoader) -> list[dict]:
        """Every model on the whole test set (each batch given to all): each model's test loss and accuracy."""
        self.model.eval()
        loss_sum = torch.zeros(self.groups, device=self.device)
        correct = torch.zeros(self.groups, device=self.device, dtype=torch.long)
        seen = 0
        for images, labels in loader:
            logits = self.logits(images.repeat(1, self.groups, 1, 1))
            every = labels[:, None].expand(-1, self.groups)
            loss_sum += F.cross_entropy(logits.transpose(1, 2), every, reduction="none").sum(0)
            correct += (logits.argmax(2) == every).sum(0)
            seen += len(labels)
        return [
            {"test_loss": loss / seen, "test_acc": right / seen}
            for loss, right in zip(loss_sum.tolist(), correct.tolist(), strict=True)
        ]


def side_by_side(loaders: list[TrainLoader], epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loaders' batches of `epoch` together: images along the channels, targets along a last dimension."""
    for batches in zip(*(loader.epoch(epoch) for loader in loaders), strict=True):
        images, targets = zip(*batches, strict=True)
        yield torch.cat(images, 1), torch.stack(targets, -1)


def grouped_trainer(
    cfgs: list[RunConfig], num_classes: int, in_chans: int, image_size: int, device: torch.device
) -> GroupedTrainer:
    """The GroupedTrainer of `cfgs` for images of this shape, each model initialised as train_run initialises its
    run, and the layout and depthwise conv chosen as train_run chooses them (for N * dim channels)."""
    cfg, dtype = cfgs[0], run_dtype(cfgs[0].precision, device)
    model_config = cfg.model_config(num_classes, in_chans)
    models = []
    for run in cfgs:
        torch.manual_seed(run.seed)
        models.append(model_config.build())
    work = Workload(device, dtype, len(cfgs) * cfg.dim, cfg.kernel_size, image_size // cfg.patch_size, cfg.batch_size)
    return GroupedTrainer(cfgs, models, device, dtype, fastest_setup(cfg.channels_last, cfg.depthwise_impl, work))


def train_grouped(cfgs: list[RunConfig], device: str | torch.device) -> tuple[list[list[dict]], GroupedTrainer]:
    """Train the runs `cfgs` (differing only in seed) together; returns each run's history (its records as its
    solo run's history.json has them, timings aside) and the trainer (its model's `model_state(i)`: run i's
    weights)."""
    device = torch.device(device)
    for cfg in cfgs:
        cfg.validate()
    check_groupable(cfgs)
    with cuda_math_flags(benchmark=device.type == "cuda", tf32=cfgs[0].tf32):
        data = [build_data(cfg, device) for cfg in cfgs]  # one dataset on the device; each run its own TrainLoader
        trainer = grouped_trainer(cfgs, data[0].num_classes, data[0].in_chans, data[0].image_size, device)
        histories: list[list[dict]] = [[] for _ in cfgs]
        for epoch in range(cfgs[0].epochs):
            start = time.perf_counter()
            records = trainer.train_epoch([run.train for run in data], epoch)
            tested = trainer.evaluate(data[0].test)
            for history, record, test in zip(histories, records, tested, strict=True):
                history.append({"epoch": epoch + 1, **record, **test, "epoch_time_s": time.perf_counter() - start})
    return histories, trainer
