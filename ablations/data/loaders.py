"""`build_data(cfg, device)`: the train and test loaders of a run, with the dataset on the device when it fits.

The data arrive finished from ablations.data.sources (subset, sized); this module only places, batches and augments.
A dataset whose decoded uint8 images fit in `resident_bytes` (every CIFAR-sized one) is moved to the device
once; an epoch is then a shuffled index, copied to the device once (asynchronously, from pinned memory), and
batched augmentation on the device, with no CPU work per image and no host sync inside the epoch.
A larger ImageFolder tree streams through a torch DataLoader whose workers only decode and resize; the uint8
batches go to the device and get the same augmentation. Either way every random draw of an epoch comes from
generators seeded with (cfg.seed, epoch), so an epoch replays identically, for bit-exact resume.
A process that runs several runs (a sweep's worker) keeps the last resident dataset on its device, so the next
run on the same data starts without loading or copying it again; a batch is always a copy (an index_select), so
augmentation never changes the kept images.
"""

import dataclasses
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader

from ablations.config import RunConfig
from ablations.data.augment import Augment, normalise
from ablations.data.sources import RESIDENT_BYTES, ImageFiles, Split, Splits, load_splits

__all__ = ["Data", "TestLoader", "TrainLoader", "build_data", "for_rank"]

# Per-channel mean/std for a streamed dataset, whose train split is too big to scan: ImageNet's.
STREAMED_MEAN, STREAMED_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def derived_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one epoch, unrelated across seeds, epochs and streams."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` without a host sync: a pageable CPU->CUDA copy waits for the GPU, a pinned one does not
    (the caching host allocator keeps the pinned buffer alive until the copy is done)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class ResidentImages:
    """A split held as uint8 tensors on the device; a batch is an index_select."""

    def __init__(self, split: Split, device: torch.device) -> None:
        self.images, self.labels, self.device = split.images.to(device), split.labels.to(device), device

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The images at `order` (a CPU index tensor), batch_size at a time; the index moves to the device once."""
        for index in to_device_async(order, self.device).split(batch_size):
            yield self.images[index], self.labels[index]


class StreamedImages:
    """A split read from disk batch by batch, by `workers` DataLoader processes; batches land on the device."""

    def __init__(self, files: ImageFiles, device: torch.device, workers: int) -> None:
        self.files, self.device, self.workers = files, device, workers

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            self.files, batch_sampler=[index.tolist() for index in order.split(batch_size)], num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


class TrainLoader:
    """Shuffled, augmented batches; `epoch(e)` is a pure function of (cfg.seed, e).

    Like the reference's DataLoader, the last batch of an epoch may be smaller (len = ceil(N / batch_size)).
    With cfg.compile it is dropped instead (when there is a full batch), so the compiled model sees one shape.
    On `world_size` processes each global batch of the epoch's one permutation is cut into world_size equal
    slices, rank `rank` taking its own; the epoch is cut to a multiple of world_size images (at most
    world_size - 1 fewer, from the last batch), so that every rank's slice of every batch has the same size.
    Augmentation draws from the rank's own stream (rank 0's is the one-process stream).
    """

    def __init__(
        self, images: ResidentImages | StreamedImages, augment: Augment, cfg: RunConfig, *, rank: int = 0,
        world_size: int = 1,
    ) -> None:  # fmt: skip
        self.images, self.augment, self.batch_size, self.seed = images, augment, cfg.batch_size, cfg.seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = cfg.compile and self.num_samples > self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.images)

    @property
    def samples_per_epoch(self) -> int:
        """The images an epoch trains on, over all ranks."""
        kept = self.num_samples // self.batch_size * self.batch_size if self.drop_last else self.num_samples
        return kept - kept % self.world_size

    def __len__(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def rank_slice(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's slice of each global batch of `order`, concatenated."""
        if self.world_size == 1:
            return order
        return torch.cat([batch.view(self.world_size, -1)[self.rank] for batch in order.split(self.batch_size)])

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order_gen = torch.Generator().manual_seed(derived_seed(self.seed, epoch, "order"))
        order = torch.randperm(self.num_samples, generator=order_gen)[: self.samples_per_epoch]
        stream = "augment" if self.rank == 0 else f"augment/rank{self.rank}"
        augment_gen = torch.Generator(self.images.device).manual_seed(derived_seed(self.seed, epoch, stream))
        for images, labels in self.images.batches(self.rank_slice(order), self.batch_size // self.world_size):
            yield self.augment(images, labels, augment_gen)

    def one_batch_per_shape(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One augmented batch of each size an epoch yields (the full batch, and a shorter last one), drawn with a
        throwaway generator: what the engine warms up on, changing no epoch's draws."""
        gen = torch.Generator(self.images.device).manual_seed(0)
        for size in batch_sizes(self.samples_per_epoch, self.batch_size):
            size //= self.world_size
            images, labels = next(self.images.batches(torch.arange(size), size))
            yield self.augment(images, labels, gen)


class TestLoader:
    """Normalised test batches in a fixed order, no augmentation. On `world_size` processes rank `rank` takes its
    contiguous share of the test set (the shares differ by one image at most), batch_size / world_size at a time."""

    def __init__(
        self, images: ResidentImages | StreamedImages, mean: torch.Tensor, std: torch.Tensor, cfg: RunConfig, *,
        rank: int = 0, world_size: int = 1,
    ) -> None:  # fmt: skip
        self.images, self.batch_size = images, cfg.batch_size // world_size
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        self.indices = torch.arange(len(images)).tensor_split(world_size)[rank]

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.images.batches(self.indices, self.batch_size):
            yield normalise(images, self.mean, self.std), labels

    def one_batch_per_shape(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One test batch of each size an evaluation yields."""
        for size in batch_sizes(self.num_samples, self.batch_size):
            images, labels = next(self.images.batches(self.indices[:size], size))
            yield normalise(images, self.mean, self.std), labels


def batch_sizes(samples: int, batch_size: int) -> list[int]:
    """The distinct batch sizes of `samples` images taken batch_size at a time: the full one, then the last one."""
    sizes = [min(batch_size, samples)]
    if samples > batch_size and samples % batch_size:
        sizes.append(samples % batch_size)
    return sizes


class Resident(NamedTuple):
    """A dataset on its device, as every run on the same data and device can share it."""

    train: ResidentImages
    test: ResidentImages
    mean: torch.Tensor
    std: torch.Tensor
    classes: list[str]
    image_size: int


# The last resident dataset of this process, with what it was loaded for. One entry only: a sweep runs on one
# dataset, and two would hold two datasets' worth of device memory.
_kept: dict[tuple, Resident] = {}


@dataclass
class Data:
    train: TrainLoader
    test: TestLoader
    num_classes: int
    image_size: int
    in_chans: int
    classes: list[str]
    mean: tuple[float, ...]  # the per-channel normalisation, in [0, 1] pixel units
    std: tuple[float, ...]
    resident: bool  # True: the images live on the device; False: streamed from disk by DataLoader workers


def for_rank(data: Data, cfg: RunConfig, rank: int, world_size: int) -> Data:
    """`data` as rank `rank` of `world_size` processes sees it: its slices of each train batch and of the test set."""
    if world_size == 1:
        return data
    train, test = data.train, data.test
    return dataclasses.replace(
        data,
        train=TrainLoader(train.images, train.augment, cfg, rank=rank, world_size=world_size),
        test=TestLoader(test.images, test.mean, test.std, cfg, rank=rank, world_size=world_size),
    )


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 NCHW images in [0, 1] units, exact, from each channel's histogram."""
    histograms = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256) for c in range(images.shape[1])])
    levels = torch.arange(256, dtype=torch.float64, device=images.device) / 255
    counts = histograms.double()
    mean = counts @ levels / counts.sum(1)
    std = (counts @ levels.square() / counts.sum(1) - mean.square()).clamp(min=0).sqrt()
    return mean.float(), std.clamp(min=1 / 255).float()  # at least one grey level: a flat channel stays finite


def build_data(
    cfg: RunConfig, device: torch.device, *, resident_bytes: int = RESIDENT_BYTES, workers: int | None = None
) -> Data:
    """The loaders of one run. Raises DataError (a ValueError, one line) when the data cannot be found or read.

    `resident_bytes`: the most decoded uint8 bytes (train + test) held on the device; larger ImageFolder
    folders stream through `workers` DataLoader processes (default: one per CPU core, at most 8).
    """
    device = torch.device(device)
    key = (cfg.dataset, cfg.data_root, cfg.image_size, cfg.train_subset, cfg.test_subset, str(device), resident_bytes)
    if key in _kept:
        data = _kept[key]
    else:
        splits = load_splits(cfg, resident_bytes)
        if not splits.resident:
            return streamed_data(cfg, splits, device, workers)
        _kept.clear()  # free the device memory of the previous dataset before this one is placed
        train, test = ResidentImages(splits.train, device), ResidentImages(splits.test, device)
        mean, std = (stat.to(device) for stat in channel_stats(splits.train.images))
        data = _kept[key] = Resident(train, test, mean, std, splits.classes, splits.image_size)
    return loaders(cfg, *data, resident=True)


def streamed_data(cfg: RunConfig, splits: Splits, device: torch.device, workers: int | None) -> Data:
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    train, test = StreamedImages(splits.train, device, workers), StreamedImages(splits.test, device, workers)
    mean, std = torch.tensor(STREAMED_MEAN, device=device), torch.tensor(STREAMED_STD, device=device)
    return loaders(cfg, train, test, mean, std, splits.classes, splits.image_size, resident=False)


def loaders(
    cfg: RunConfig,
    train: ResidentImages | StreamedImages,
    test: ResidentImages | StreamedImages,
    mean: torch.Tensor,
    std: torch.Tensor,
    classes: list[str],
    image_size: int,
    *,
    resident: bool,
) -> Data:
    cfg.check_image_size(image_size, f" in data_root={cfg.data_root!r}")
    return Data(
        train=TrainLoader(train, Augment(cfg, len(classes), mean, std), cfg),
        test=TestLoader(test, mean, std, cfg),
        num_classes=len(classes),
        image_size=image_size,
        in_chans=3,
        classes=classes,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        resident=resident,
    )
