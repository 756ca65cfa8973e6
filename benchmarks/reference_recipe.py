"""The reference recipe (locuslab/convmixer-cifar10, train.py), re-implemented plainly as the engine's baseline.

Kept as the original does it: per-image PIL transforms in DataLoader worker processes, a fresh worker pool each
epoch, the triangular schedule set before every step, AdamW, optional gradient clipping, fp16 autocast with a
GradScaler on CUDA (fp32 on CPU, where the original does not run), and `.item()` twice per step. Images are held
as uint8 arrays and turned into PIL images one at a time, as torchvision's CIFAR10 dataset does.

Two variants: PUBLISHED is the original's defaults (2 DataLoader workers, NCHW, plain AdamW); TUNED is the same
recipe with the easy speed-ups (8 workers, channels_last, fused AdamW on CUDA), so that the engine is compared
with a fair effort at the reference too, not only with its defaults.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ablations.config import RunConfig
from ablations.data.sources import Split
from ablations.engine.schedule import onecycle_lr

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # the reference's constants
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


@dataclass(frozen=True)
class Variant:
    workers: int  # DataLoader worker processes
    channels_last: bool
    fused_adamw: bool  # on CUDA only, as the engine


PUBLISHED = Variant(workers=2, channels_last=False, fused_adamw=False)  # the original's argparse defaults
TUNED = Variant(workers=8, channels_last=True, fused_adamw=True)


class ArrayDataset(Dataset):
    """uint8 images turned into PIL images on access and transformed, like torchvision.datasets.CIFAR10."""

    def __init__(self, split: Split, transform: Callable) -> None:
        self.images = split.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def reference_transforms(cfg: RunConfig, image_size: int) -> tuple[Callable, Callable]:
    normalise = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, scale=(cfg.scale, 1.0), ratio=(1.0, 1.0)),
            transforms.RandomHorizontalFlip(p=0.5 if cfg.hflip else 0.0),
            transforms.RandAugment(num_ops=cfg.randaug_n, magnitude=cfg.randaug_m),
            transforms.ColorJitter(cfg.jitter, cfg.jitter, cfg.jitter),
            transforms.ToTensor(),
            normalise,
            transforms.RandomErasing(p=cfg.reprob),
        ]
    )
    return train, transforms.Compose([transforms.ToTensor(), normalise])


def train_reference(
    cfg: RunConfig,
    train_split: Split,
    test_split: Split,
    device: torch.device,
    variant: Variant = PUBLISHED,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> list[dict]:
    """Train cfg's model the reference's way; returns one record per epoch (the engine's history keys).
    `stop_after`: end after this many of cfg.epochs (the schedule stays cfg.epochs long), to time a few epochs."""
    train_transform, test_transform = reference_transforms(cfg, train_split.images.shape[-1])
    workers = variant.workers
    train_loader = DataLoader(
        ArrayDataset(train_split, train_transform), batch_size=cfg.batch_size, shuffle=True, num_workers=workers
    )
    test_loader = DataLoader(
        ArrayDataset(test_split, test_transform), batch_size=cfg.batch_size, shuffle=False, num_workers=workers
    )
    torch.manual_seed(cfg.seed)
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = cfg.model_config(len(train_split.classes), train_split.images.shape[1]).build()
    model = model.to(device, memory_format=memory_format)
    fused = variant.fused_adamw and device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    fp16 = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    history = []
    for epoch in range(cfg.epochs if stop_after is None else min(stop_after, cfg.epochs)):
        start = time.perf_counter()
        record, seen = train_epoch_reference(cfg, epoch, model, train_loader, optimizer, scaler, device, memory_format)
        train_time = time.perf_counter() - start
        record |= {
            **evaluate_reference(model, test_loader, device, fp16, memory_format),
            "train_time_s": train_time,
            "train_images_per_s": seen / train_time,
            "epoch_time_s": time.perf_counter() - start,
        }
        history.append(record)
        log(
            f"reference epoch {epoch + 1}/{cfg.epochs} train acc {record['train_acc']:.4f} test acc "
            f"{record['test_acc']:.4f} | {record['epoch_time_s']:.1f} s, {record['train_images_per_s']:.0f} img/s"
        )
    return history


def train_epoch_reference(
    cfg: RunConfig,
    epoch: int,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    memory_format: torch.memory_format,
) -> tuple[dict, int]:
    """One epoch of the reference's loop: its record (epoch, train loss and accuracy, last lr) and images seen."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for i, (images, labels) in enumerate(loader):
        images, labels = images.to(device, memory_format=memory_format), labels.to(device)
        lr = onecycle_lr(epoch + (i + 1) / len(loader), cfg.epochs, cfg.lr)
        optimizer.param_groups[0].update(lr=lr)
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            output = model(images)
            loss = F.cross_entropy(output, labels, label_smoothing=cfg.label_smoothing)
        scaler.scale(loss).backward()
        if cfg.clip_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.item() * labels.size(0)
        correct += (output.max(1)[1] == labels).sum().item()
        seen += labels.size(0)
    return {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen, "lr": lr}, seen


@torch.no_grad()
def evaluate_reference(
    model: nn.Module, loader: DataLoader, device: torch.device, fp16: bool, memory_format: torch.memory_format
) -> dict:
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, memory_format=memory_format), labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            output = model(images)
        loss_sum += F.cross_entropy(output.float(), labels, reduction="sum").item()
        correct += (output.max(1)[1] == labels).sum().item()
        seen += labels.size(0)
    return {"test_loss": loss_sum / seen, "test_acc": correct / seen}
