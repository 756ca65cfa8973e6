"""`build_data(cfg, device)`: the train and test loaders of a run, with the dataset on the device when it fits.

A dataset whose decoded uint8 images fit in `resident_bytes` (every CIFAR-sized one) is moved to the device
once; an epoch is then a shuffled index, copied to the device once (asynchronously, from pinned memory), and
batched augmentation on the device, with no CPU work per image and no host sync inside the epoch.
A larger ImageFolder tree streams through a torch DataLoader whose workers only decode and resize; the uint8
batches go to the device and get the same augmentation. Either way every random draw of an epoch comes from
generators seeded with (cfg.seed, epoch), so an epoch replays identically, for bit-exact resume.
"""

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ablations.augment import Augment, normalise
from ablations.config import ConfigError, RunConfig
from ablations.datasets import (
    DataError,
    ImageTree,
    Split,
    TreeSplit,
    decode_image,
    load_cifar,
    load_synthetic,
    stratified_subset,
)

__all__ = ["Data", "DataError", "TestLoader", "TrainLoader", "build_data"]

RESIDENT_BYTES = 4 << 30  # decoded uint8 train + test images up to this size live on the device
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


class ImageFiles(Dataset):
    """Image files of a folder tree, each decoded to a size x size uint8 tensor in a DataLoader worker."""

    def __init__(self, root: Path, paths: list[str], labels: torch.Tensor, size: int) -> None:
        self.root, self.paths, self.labels, self.size = root, paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_image((self.root / self.paths[i]).read_bytes(), self.size), self.labels[i]


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
    """

    def __init__(self, images: ResidentImages | StreamedImages, augment: Augment, cfg: RunConfig) -> None:
        self.images, self.augment, self.batch_size, self.seed = images, augment, cfg.batch_size, cfg.seed
        self.drop_last = cfg.compile and self.num_samples > self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order_gen = torch.Generator().manual_seed(derived_seed(self.seed, epoch, "order"))
        order = torch.randperm(self.num_samples, generator=order_gen)[: len(self) * self.batch_size]
        augment_gen = torch.Generator(self.images.device).manual_seed(derived_seed(self.seed, epoch, "augment"))
        for images, labels in self.images.batches(order, self.batch_size):
            yield self.augment(images, labels, augment_gen)


class TestLoader:
    """Normalised test batches in a fixed order, no augmentation."""

    def __init__(
        self, images: ResidentImages | StreamedImages, mean: torch.Tensor, std: torch.Tensor, cfg: RunConfig
    ) -> None:
        self.images, self.batch_size = images, cfg.batch_size
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.images.batches(torch.arange(self.num_samples), self.batch_size):
            yield normalise(images, self.mean, self.std), labels


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


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 NCHW images in [0, 1] units, exact, from each channel's histogram."""
    histograms = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256) for c in range(images.shape[1])])
    levels = torch.arange(256, dtype=torch.float64, device=images.device) / 255
    counts = histograms.double()
    mean = counts @ levels / counts.sum(1)
    std = (counts @ levels.square() / counts.sum(1) - mean.square()).clamp(min=0).sqrt()
    return mean.float(), std.clamp(min=1 / 255).float()  # at least one grey level: a flat channel stays finite


def resize(split: Split, image_size: int) -> Split:
    """Resize (bilinear, antialiased) a split whose images are not image_size x image_size already."""
    if not image_size or split.images.shape[-1] == image_size:
        return split
    resized = torch.nn.functional.interpolate(
        split.images.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
    )
    return Split(resized.round().clamp(0, 255).to(torch.uint8), split.labels, split.classes)


def load_resident(cfg: RunConfig, tree: ImageTree | None) -> tuple[Split, Split]:
    """(train, test) as uint8 tensors on the CPU, subsets taken, for the datasets that are held in memory."""
    if tree is not None:
        return tree.load("train", cfg.image_size, cfg.train_subset), tree.load("test", cfg.image_size, cfg.test_subset)
    if cfg.dataset == "synthetic":
        train, test = load_synthetic(True), load_synthetic(False)
    else:
        train, test = load_cifar(cfg.dataset, cfg.data_root, True), load_cifar(cfg.dataset, cfg.data_root, False)
    train = train.subset(stratified_subset(train.labels, cfg.train_subset))
    test = test.subset(stratified_subset(test.labels, cfg.test_subset))
    return resize(train, cfg.image_size), resize(test, cfg.image_size)


def streamed_files(
    tree: ImageTree, cfg: RunConfig, resident_bytes: int
) -> tuple[ImageFiles, ImageFiles, list[str]] | None:
    """(train files, test files, classes) of an ImageFolder *folder* too big for `resident_bytes` once decoded;
    None when it fits, and for archives, which are always decoded into memory (streaming them would be slow)."""
    if tree.is_archive:
        return None
    train, test = tree.splits["train"], tree.splits["test"]
    train_keep = stratified_subset(train.labels, cfg.train_subset)
    test_keep = stratified_subset(test.labels, cfg.test_subset)
    size = cfg.image_size or tree.native_size()
    if (len(train_keep) + len(test_keep)) * 3 * size * size <= resident_bytes:
        return None

    def files(split: TreeSplit, keep: torch.Tensor) -> ImageFiles:
        return ImageFiles(tree.source, [split.paths[i] for i in keep.tolist()], split.labels[keep], size)

    return files(train, train_keep), files(test, test_keep), tree.classes


def build_data(
    cfg: RunConfig, device: torch.device, *, resident_bytes: int = RESIDENT_BYTES, workers: int | None = None
) -> Data:
    """The loaders of one run. Raises DataError (a ValueError, one line) when the data cannot be found or read.

    `resident_bytes`: the most decoded uint8 bytes (train + test) held on the device; larger ImageFolder
    folders stream through `workers` DataLoader processes (default: one per CPU core, at most 8).
    """
    device = torch.device(device)
    tree = ImageTree(Path(cfg.data_root)) if cfg.dataset == "imagefolder" else None
    streamed = streamed_files(tree, cfg, resident_bytes) if tree is not None else None
    if streamed is None:
        train_split, test_split = load_resident(cfg, tree)
        train, test = ResidentImages(train_split, device), ResidentImages(test_split, device)
        mean, std = (stat.to(device) for stat in channel_stats(train_split.images))
        classes, image_size = train_split.classes, train_split.images.shape[-1]
    else:
        train_files, test_files, classes = streamed
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        train, test = StreamedImages(train_files, device, workers), StreamedImages(test_files, device, workers)
        mean, std = torch.tensor(STREAMED_MEAN, device=device), torch.tensor(STREAMED_STD, device=device)
        image_size = train_files.size
    if cfg.patch_size > image_size:
        raise ConfigError(
            f"patch_size={cfg.patch_size} is not accepted: larger than the {image_size}x{image_size} images "
            f"in data_root={cfg.data_root!r}"
        )
    return Data(
        train=TrainLoader(train, Augment(cfg, len(classes), mean, std), cfg),
        test=TestLoader(test, mean, std, cfg),
        num_classes=len(classes),
        image_size=image_size,
        in_chans=3,
        classes=classes,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        resident=streamed is None,
    )
