"""`build_data(cfg, device, rank=, world_size=)`: a process's train and test loaders of a run, each built once, with
the dataset on the device when it fits.

The data arrive finished from ablations.data.sources (subset, sized); this module only places, batches and augments.
A dataset whose decoded uint8 images fit in `resident_bytes` (every CIFAR-sized one) is moved to the device
once; an epoch is then a shuffled index, copied to the device once (asynchronously, from pinned memory), and
batched augmentation on the device, with no CPU work per image and no host sync inside the epoch.
A larger ImageFolder folder or shard folder streams through persistent DataLoader workers, reading ahead, which
cut each training image's random-resized crop and flip from the full-size file (test images: timm's eval
transform; ablations.data.stream); the uint8 batches go to the device for the rest of the augmentation. Each
pass times how long the steps waited for batches, so the run's log says when the loader is the bottleneck.
Either way every random draw of an epoch comes from seeds derived from (cfg.seed, epoch) (and, for a streamed
crop, the image's index), so an epoch replays identically, for bit-exact resume.
A process that runs several runs (a sweep's worker) keeps the last resident dataset on its device, so the next
run on the same data starts without loading or copying it again; a batch is always a copy (an index_select), so
augmentation never changes the kept images.
"""

import hashlib
import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader

from ablations.config import RunConfig
from ablations.data import DataError
from ablations.data.augment import WORKER_STEPS, Augment, Draws, normalise
from ablations.data.sources import Split, Splits, forget_splits, loaded_splits, resident_limit
from ablations.data.stream import Batch, ImageFiles, collate, finish_on_device, resolve_decode
from convmixer.registry import CONVMIXER_EVAL

__all__ = ["NAMED_SKIPS", "Data", "TestLoader", "TrainLoader", "build_data", "skipped_note"]
PREFETCH = 4  # batches each streaming worker reads ahead (DataLoader's prefetch_factor; its default is 2)
# A pass whose steps waited for batches longer than this share of its time, and this long at least (the first
# batch's wait, the workers starting, left out), says in the run's log that the loader is the bottleneck.
BOTTLENECK_WAIT, BOTTLENECK_MIN_S = 0.1, 0.5
NAMED_SKIPS = 3  # the log and metrics.json name this many of the images bad_images=skip left out


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


class EpochOrder:
    """The batch sampler of a streamed split's DataLoader: the order being read, batch_size at a time, each item
    (the epoch's crop seed, index). It runs in this process, so a persistent loader reads each new order as it is
    set; batches are made as the loader asks for them (an epoch of ImageNet as Python tuples would take 100 MB)."""

    def __init__(self) -> None:
        self.order, self.batch_size, self.epoch_seed = torch.zeros(0, dtype=torch.long), 1, 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for index in self.order.split(self.batch_size):
            yield [(self.epoch_seed, i) for i in index.tolist()]

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)


@dataclass
class LoaderTimes:
    """What one pass over a streamed split measured: images, workers' seconds, the wait for the first batch (the
    workers starting, the prefetch filling) and for the later ones, and the whole pass."""

    images: int = 0
    worker_s: float = 0.0
    first_wait_s: float = 0.0
    wait_s: float = 0.0
    wall_s: float = 0.0


def worker_context(workers: int) -> str | None:
    """How the loader starts its workers: forked where the platform can (in milliseconds; they only read files and
    never touch the device), not by the start method the process inherited: a sweep's spawned worker would spawn
    them too, each importing torch first (5 s for a run's first batch on the 2-core VM)."""
    return "fork" if workers and "fork" in multiprocessing.get_all_start_methods() else None


class StreamedImages:
    """A split read from disk batch by batch by `workers` persistent DataLoader processes, `PREFETCH` batches ahead
    each, into pinned memory; batches land on the device. A bad image is a one-line DataError, or with
    bad_images=skip leaves its batch (counted in `skipped`)."""

    def __init__(self, files: ImageFiles, device: torch.device, workers: int, bad_images: str = "error") -> None:
        self.files, self.device, self.workers, self.bad_images = files, device, workers, bad_images
        self.order = EpochOrder()
        self.loader = DataLoader(
            files, batch_sampler=self.order, num_workers=workers, collate_fn=collate,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=PREFETCH if workers else None, multiprocessing_context=worker_context(workers),
        )  # fmt: skip
        self.epoch_seed = 0  # the crops' seed: StreamedTrainLoader sets it for each epoch
        self.times = LoaderTimes()
        self.skipped: dict[str, None] = {}  # each skipped image's problem (naming it), in the order met, over the run

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.order.order, self.order.batch_size, self.order.epoch_seed = order, batch_size, self.epoch_seed
        self.times = times = LoaderTimes()
        start = time.perf_counter()
        batches = iter(self.loader)
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            if times.images:
                times.wait_s += time.perf_counter() - waited
            else:
                times.first_wait_s = time.perf_counter() - waited
            if batch is None:
                break
            times.images += len(batch.labels)
            times.worker_s += batch.seconds
            images, labels = self.finish(batch)
            times.wall_s = time.perf_counter() - start
            yield images, labels
        times.wall_s = time.perf_counter() - start

    def finish(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's images and labels on the device, its bad images raised or, with bad_images=skip, left out."""
        bad = [i for i, problem in enumerate(batch.problems) if problem]
        if bad and self.bad_images == "error":
            raise DataError(f"imagefolder: {batch.problems[bad[0]]}; set bad_images=skip to leave such images out")
        self.skipped.update(dict.fromkeys(batch.problems[i] for i in bad))
        images = finish_on_device(batch, self.files.size, self.device, train=self.files.scale is not None)
        labels = batch.labels.to(self.device, non_blocking=True)
        if bad:
            keep = torch.tensor([not problem for problem in batch.problems], device=self.device)
            images, labels = images[keep], labels[keep]
        return images, labels

    def report(self) -> str:
        """The last pass in one line: the loader's img/s (its workers' speed, all busy) beside the model's (the
        images over the time the steps took, waits left out), and whether the loader held the model back."""
        t = self.times
        loader = t.images / t.worker_s * max(self.workers, 1) if t.worker_s else math.inf
        model = t.images / max(t.wall_s - t.wait_s - t.first_wait_s, 1e-9)
        line = (
            f"loader {loader:.0f} img/s ({max(self.workers, 1)} workers), model {model:.0f} img/s; waited for "
            f"batches {t.wait_s:.1f} s of {t.wall_s:.1f} s (+{t.first_wait_s:.1f} s for the first)"
        )
        if t.wait_s > max(BOTTLENECK_WAIT * t.wall_s, BOTTLENECK_MIN_S):
            line += ": the loader is the bottleneck"
        return line


def skipped_note(skipped: list[str]) -> str:
    """What the run's log says of the images bad_images=skip left out so far (each one's problem), naming a few."""
    shown = "; ".join(skipped[:NAMED_SKIPS]) + ("; ..." if len(skipped) > NAMED_SKIPS else "")
    return f"bad_images=skip: {len(skipped)} images skipped so far ({shown})"


class TrainLoader:
    """Shuffled, augmented batches; `epoch(e)` is a pure function of (cfg.seed, e).

    Like the reference's DataLoader, the last batch of an epoch may be smaller (len = ceil(N / batch_size)).
    With cfg.compile it is dropped instead (when there is a full batch), so the compiled model sees one shape.
    On `world_size` processes each global batch of the epoch's one permutation is cut into world_size equal
    slices, rank `rank` taking its own, and its images get their rows of the augmentation drawn for the whole
    global batch (augment.Draws), so the run trains on what one process trains on. With mixup or cutmix a slice
    is paired (`rows`): it holds each of its images' mirrors in the global batch, the partners one process mixes.
    The epoch is cut to a multiple of world_size images (2 x world_size when paired; at most that less one fewer,
    from the last batch), so that every rank's slice of every batch has the same size.
    """

    def __init__(
        self, images: ResidentImages | StreamedImages, augment: Augment, cfg: RunConfig, *, rank: int = 0,
        world_size: int = 1,
    ) -> None:  # fmt: skip
        self.images, self.augment, self.batch_size, self.seed = images, augment, cfg.batch_size, cfg.seed
        self.rank, self.world_size = rank, world_size
        self.paired = world_size > 1 and bool(cfg.mixup or cfg.cutmix)
        self.drop_last = cfg.compile and self.num_samples > self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.images)

    @property
    def samples_per_epoch(self) -> int:
        """The images an epoch trains on, over all ranks."""
        kept = self.num_samples // self.batch_size * self.batch_size if self.drop_last else self.num_samples
        return kept - kept % (self.world_size * (2 if self.paired else 1))

    def __len__(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def rows(self, size: int) -> torch.Tensor | None:
        """This rank's positions in a global batch of `size` images (None: one process, all of them): its
        contiguous slice, or when paired its share of the first half followed by their mirrors, in order, so that
        the mirror of its i-th image is its own (n - 1 - i)-th, as in the global batch."""
        if self.world_size == 1:
            return None
        share = size // self.world_size
        if not self.paired:
            return torch.arange(self.rank * share, (self.rank + 1) * share)
        first = torch.arange(self.rank * share // 2, (self.rank + 1) * share // 2)
        return torch.cat([first, (size - 1 - first).flip(0)])

    def rank_slice(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's rows of each global batch of `order`, concatenated."""
        if self.world_size == 1:
            return order
        return torch.cat([batch[self.rows(len(batch))] for batch in order.split(self.batch_size)])

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order_gen = torch.Generator().manual_seed(derived_seed(self.seed, epoch, "order"))
        order = torch.randperm(self.num_samples, generator=order_gen)[: self.samples_per_epoch]
        augment_gen = torch.Generator(self.images.device).manual_seed(derived_seed(self.seed, epoch, "augment"))
        sizes = [len(batch) for batch in order.split(self.batch_size)]
        batches = self.images.batches(self.rank_slice(order), self.batch_size // self.world_size)
        for size, (images, labels) in zip(sizes, batches, strict=True):
            rows = self.rows(size)
            if rows is None or len(rows) != len(images):  # one process, or bad_images=skip left images out
                yield self.augment(images, labels, augment_gen)
            else:
                yield self.augment(images, labels, Draws(augment_gen, size, to_device_async(rows, self.images.device)))

    def one_batch_per_shape(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One augmented batch of each size an epoch yields (the full batch, and a shorter last one), drawn with a
        throwaway generator: what the engine warms up on, changing no epoch's draws."""
        gen = torch.Generator(self.images.device).manual_seed(0)
        for size in batch_sizes(self.samples_per_epoch, self.batch_size):
            size //= self.world_size
            images, labels = next(self.images.batches(torch.arange(size), size))
            yield self.augment(images, labels, gen)


class StreamedTrainLoader(TrainLoader):
    """A TrainLoader over streamed images, whose workers crop each image from its (seed, epoch, index): the epoch
    tells them its seed before its batches are read."""

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.images.epoch_seed = derived_seed(self.seed, epoch, "crop")
        return super().epoch(epoch)


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
    """A process's loaders of one run, and what is done where: the loader workers of streamed data did
    `worker_steps` of the augmentation on each image (augment.WORKER_STEPS); `train.augment` does the rest, batched
    on the device, leaving those out. Held data has no worker steps: the device does all of it."""

    train: TrainLoader
    test: TestLoader
    num_classes: int
    image_size: int
    in_chans: int
    classes: list[str]
    mean: tuple[float, ...]  # the per-channel normalisation, in [0, 1] pixel units
    std: tuple[float, ...]
    worker_steps: frozenset[str]

    @property
    def resident(self) -> bool:
        """True: the images live on the device; False: streamed from disk by DataLoader workers."""
        return not self.worker_steps

    def skipped(self) -> list[str]:
        """The images of both splits bad_images=skip has left out in this process so far, each its one-line problem,
        in the order met (held data is checked whole at load: never any)."""
        return [] if self.resident else list({**self.train.images.skipped, **self.test.images.skipped})


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 NCHW images in [0, 1] units, exact, from each channel's histogram."""
    histograms = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256) for c in range(images.shape[1])])
    levels = torch.arange(256, dtype=torch.float64, device=images.device) / 255
    counts = histograms.double()
    mean = counts @ levels / counts.sum(1)
    std = (counts @ levels.square() / counts.sum(1) - mean.square()).clamp(min=0).sqrt()
    return mean.float(), std.clamp(min=1 / 255).float()  # at least one grey level: a flat channel stays finite


def build_data(
    cfg: RunConfig,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
    resident_bytes: int | None = None,
    workers: int | None = None,
) -> Data:
    """The loaders of one run as rank `rank` of `world_size` processes sees them (its slices of each train batch
    and of the test set). Raises DataError (a ValueError, one line) when the data cannot be found or read.

    `resident_bytes`: the most decoded uint8 bytes (train + test) held on the device (default:
    sources.RESIDENT_BYTES, or $CONVMIXER_RESIDENT_BYTES); larger ImageFolder folders and shard folders stream
    through `workers` DataLoader processes (default: one per CPU core, at most 8).
    """
    device = torch.device(device)
    resident_bytes = resident_limit() if resident_bytes is None else resident_bytes
    key = (cfg.dataset, cfg.data_root, cfg.image_size, cfg.train_subset, cfg.test_subset, str(device), resident_bytes)
    if key not in _kept:
        splits = loaded_splits(cfg, resident_bytes)
        if not splits.resident:
            train, test = streamed_images(cfg, splits, device, workers)
            mean, std = (torch.tensor(stat, device=device) for stat in (CONVMIXER_EVAL.mean, CONVMIXER_EVAL.std))
            return loaders(cfg, train, test, mean, std, splits, rank, world_size)
        _kept.clear()  # free the device memory of the previous dataset before this one is placed
        train, test = ResidentImages(splits.train, device), ResidentImages(splits.test, device)
        mean, std = (stat.to(device) for stat in channel_stats(splits.train.images))
        _kept[key] = Resident(train, test, mean, std, splits.classes, splits.image_size)
        forget_splits()  # the kept data on the device stands in for them: no second copy in host memory
    kept = _kept[key]
    return loaders(cfg, kept.train, kept.test, kept.mean, kept.std, kept, rank, world_size)


def streamed_images(
    cfg: RunConfig, splits: Splits, device: torch.device, workers: int | None
) -> tuple[StreamedImages, StreamedImages]:
    """The train and test files of `splits`, each read by its own persistent workers: training images cropped and
    flipped there (WORKER_STEPS), test images cut by the eval transform; decoded where cfg.decode says."""
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    decode = resolve_decode(cfg.decode, device)  # auto: one probe decode
    random_interpolation = cfg.train_interpolation == "random"
    train = ImageFiles(
        splits.train, scale=cfg.scale, flip=cfg.hflip, random_interpolation=random_interpolation, decode=decode
    )
    test = ImageFiles(splits.test, decode=decode)
    return StreamedImages(train, device, workers, cfg.bad_images), StreamedImages(test, device, workers, cfg.bad_images)


def loaders(
    cfg: RunConfig,
    train: ResidentImages | StreamedImages,
    test: ResidentImages | StreamedImages,
    mean: torch.Tensor,
    std: torch.Tensor,
    data: Splits | Resident,
    rank: int,
    world_size: int,
) -> Data:
    """Rank `rank`'s loaders over `train` and `test`, normalised by (mean, std); `data` gives the classes and size."""
    cfg.check_image_size(data.image_size, f" in data_root={cfg.data_root!r}")
    streamed = isinstance(train, StreamedImages)
    worker_steps = WORKER_STEPS if streamed else frozenset()
    augment = Augment(cfg, len(data.classes), mean, std, done=worker_steps)
    return Data(
        train=(StreamedTrainLoader if streamed else TrainLoader)(train, augment, cfg, rank=rank, world_size=world_size),
        test=TestLoader(test, mean, std, cfg, rank=rank, world_size=world_size),
        num_classes=len(data.classes),
        image_size=data.image_size,
        in_chans=3,
        classes=data.classes,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        worker_steps=worker_steps,
    )
