"""Where the images come from: torchvision's CIFAR or Imagenette, an ImageFolder tree (folder, tar archive or shard
folder: ablations.data.tree), or the synthetic set.

`load_splits(cfg)` hands a run its finished data: the train and test splits of its dataset with the stratified
subsets taken and every image at the run's size, as uint8 NCHW tensors with int64 labels (`Split`), or, for an
ImageFolder folder or shard folder too big to hold, as the list of its image files (`FileSplit`), which the
loaders' workers crop to that size on the fly (ablations.data.stream). Subsetting happens here for every source,
so the loaders (ablations.data.loaders) only batch and augment.
Decoding JPEGs is the slow part, so it runs on every core (ablations.data.decode), and a decoded split is saved
once under the cache folder ($CONVMIXER_CACHE, default ~/.cache/convmixer), keyed by a hash of the source's
content, so every later run of a sweep loads the tensors instead of decoding again.
A run's data is loaded once per process: the run (`loaded_splits`) takes the splits its check before training (its
data record) loaded, so a streamed ImageNet's 1.28 M files are listed and stat'ed once, not twice.
"""

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100, Imagenette

from ablations import atomic
from ablations.config import RunConfig
from ablations.data import IMAGENETTE_FOLDER, DataError, cache_dir, synthetic
from ablations.data.tree import NAMED_ODD_IMAGES, ImageTree, TreeSplit

CACHE_FORMAT = "v2"  # bump when decoding changes, so old cache files are not reused (v2: the native size rule)
SUBSET_SEED = 0  # subsets are the same for every run seed
RESIDENT_BYTES = 4 << 30  # decoded uint8 train + test images up to this size are held in memory (and on the device)
# A smaller limit, in bytes, streams data that would fit: to try or measure the streaming path on a small dataset.
RESIDENT_ENV = "CONVMIXER_RESIDENT_BYTES"
# The files of a streamed split whose bytes its data record hashes, beside every name and size (a fixed pick).
SAMPLED_FILES = 32


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N
    classes: list[str]

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index], self.classes)


def read_cached(path: Path) -> Split | None:
    """The split saved at `path`, or None (with a one-line note) when the file is damaged, so it is rebuilt."""
    try:
        split = Split(**torch.load(path, weights_only=True))
        whole = split.images.dtype == torch.uint8 and split.images.ndim == 4 and len(split.labels) == len(split.images)
        if whole:
            return split
        problem = "it holds something else than a decoded split"
    except Exception as error:  # truncated, not a zip, refused by weights_only, missing keys: all mean "rebuild"
        problem = f"it cannot be loaded ({type(error).__name__})"
    print(f"note: the cached split {path} is damaged ({problem}); decoding it again", file=sys.stderr)
    return None


def cached(name: str, build: Callable[[], Split]) -> Split:
    """Load split `name` from the cache folder, or build it and save it there (atomically) for the next run."""
    path = cache_dir() / f"{name}-{CACHE_FORMAT}.pt"
    split = read_cached(path) if path.exists() else None
    if split is not None:
        return split
    split = build()
    try:
        atomic.torch_save(asdict(split), path)
    except atomic.WriteError as error:
        if error.transient:  # disk full: the one-line error says so; a rerun retries
            raise
        raise DataError(f"the decoded-split cache: {error}; set CONVMIXER_CACHE to a writable folder") from None
    return split


def class_quotas(counts: torch.Tensor, n: int) -> torch.Tensor:
    """How many items to take from each class so they sum to n (n < counts.sum()), as equal as the counts allow:
    classes are served smallest first, each taking an equal share of what is left (or all it has)."""
    quotas = torch.zeros_like(counts)
    left = n
    for served, c in enumerate(torch.argsort(counts, stable=True).tolist()):
        quotas[c] = min(int(counts[c]), left // (len(counts) - served))
        left -= int(quotas[c])
    return quotas


def stratified_subset(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted indices of n items (all when n is 0 or too many), stratified by class with `class_quotas`.

    Items are taken in one fixed random order, so the pick does not depend on how the source is sorted.
    """
    if n == 0 or n >= len(labels):
        return torch.arange(len(labels))
    counts = torch.bincount(labels)
    quota = class_quotas(counts, n)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SUBSET_SEED))
    by_class, position = torch.sort(labels[order], stable=True)
    rank_in_class = torch.arange(len(labels)) - (counts.cumsum(0) - counts)[by_class]
    keep = rank_in_class < quota[by_class]
    return order[position[keep]].sort().values


def load_synthetic(train: bool) -> Split:
    # Keyed by the generator's own source code, so editing the generator never reuses stale images.
    digest = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:16]
    split = "train" if train else "test"
    return cached(f"synthetic-{digest}-{split}", lambda: Split(*synthetic.make_split(train), synthetic.CLASSES))


def load_cifar(name: str, root: str, train: bool) -> Split:
    """CIFAR-10/100 in torchvision's format under `root`, downloaded there when missing and online."""
    dataset_class = CIFAR10 if name == "cifar10" else CIFAR100
    folder = Path(root) / dataset_class.base_folder
    try:
        dataset = dataset_class(root, train=train, download=False)
    except OSError as error:  # an unreadable batch file
        raise DataError(f"{name}: cannot read {error.filename or folder} ({error.strerror})") from None
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        if folder.exists():  # downloading would not replace a damaged copy, and may not be wanted: say so
            raise DataError(
                f"{name}: {folder} fails torchvision's integrity check (a damaged or partial copy?); "
                "delete it to download it again, or copy it again"
            ) from None
        created = not Path(root).exists()
        try:
            dataset = dataset_class(root, train=train, download=True)
        except (OSError, RuntimeError) as error:
            if created and not any(Path(root).iterdir()):  # torchvision made data_root, then failed: undo that
                Path(root).rmdir()
            raise DataError(
                f"{name}: no {dataset_class.base_folder}/ under data_root={root!r} and downloading it failed "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'offline?'}); set data_root "
                f"to the folder holding {dataset_class.base_folder}/, or use dataset=imagefolder with data_root "
                "set to an ImageFolder tree or .tar.gz (the CIFAR-10 JPEG copy: docs/data.md)"
            ) from error
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor(dataset.targets), list(dataset.classes))


def decode_tree_split(tree: ImageTree, split: str, size: int, subset: int) -> Split:
    """The stratified subset of a tree's split, decoded (and resized to size x size) into one uint8 tensor."""
    files = tree.splits[split]
    keep = stratified_subset(files.labels, subset)
    return Split(tree.decode_files([files.paths[i] for i in keep.tolist()], size), files.labels[keep], tree.classes)


def load_tree_split(tree: ImageTree, split: str, image_size: int, subset: int) -> Split:
    """A tree's decoded split from the cache, decoding it on a miss. For an archive the cache is checked first,
    so a hit never lists the archive (listing a 60k-image tar.gz takes seconds)."""
    size_name = f"{image_size}px" if image_size else "native"
    name = f"imagefolder-{tree.fingerprint[:16]}-{split}-{size_name}-n{subset}"
    return cached(name, lambda: decode_tree_split(tree, split, image_size or tree.native_size(), subset))


def imagenette_tree(root: str) -> ImageTree:
    """Imagenette in torchvision's layout under `root` (root/imagenette2-160/{train,val}/<wnid>/<image>.JPEG),
    downloaded there by torchvision.datasets.Imagenette (its 160 px copy, 94 MB) when missing."""
    folder = Path(root) / IMAGENETTE_FOLDER
    if not folder.exists():
        try:
            Imagenette(root, split="train", size="160px", download=True)  # one archive holds both splits
        except (OSError, RuntimeError) as error:
            raise DataError(
                f"imagenette: no {IMAGENETTE_FOLDER}/ under data_root={root!r} and downloading it failed "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'offline?'}); set data_root "
                f"to the folder holding {IMAGENETTE_FOLDER}/ (how to get it offline: docs/data.md)"
            ) from None
    return ImageTree(folder)


@dataclass
class FileSplit:
    """A split too big to hold, as its image files: `paths` in `reader` (a tree's folder or shards), with their
    labels, cropped to `size` by the loader's workers (ablations.data.stream.ImageFiles)."""

    reader: ImageTree
    paths: list[str]
    labels: torch.Tensor
    size: int

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Splits:
    """A run's finished data: train and test, subsets taken, images image_size x image_size; held in memory
    (`Split`), or streamed (`FileSplit`) when an ImageFolder folder or shard folder is too big to hold."""

    train: Split | FileSplit
    test: Split | FileSplit
    classes: list[str]
    image_size: int
    skipped: list[str] = field(default_factory=list)  # empty class folders left out, with bad_images=skip

    @property
    def resident(self) -> bool:
        return isinstance(self.train, Split)

    def identity(self) -> dict:
        """What the store records as the data of a run (data.json) and compares on a rerun: the classes, the image
        counts and size, a sha256 of each split (`split_sha256`), and the pipeline: held on the device or streamed."""
        return {
            "classes": list(self.classes), "image_size": self.image_size,
            "train_images": len(self.train.labels), "test_images": len(self.test.labels),
            "train_sha256": split_sha256(self.train), "test_sha256": split_sha256(self.test),
            **({"skipped_classes": self.skipped} if self.skipped else {}),
            "pipeline": "held" if self.resident else "streamed",
        }  # fmt: skip


def split_sha256(split: Split | FileSplit) -> str:
    """A split held in memory: of its labels and decoded pixels. A streamed one, whose files are too many to read
    at every start: of its labels, every file's name and size, and the bytes of SAMPLED_FILES files picked at
    fixed places. That detects a file added, removed, renamed, moved to another class or changed in size (a
    re-encoded JPEG nearly always is), and any change to the sampled files; not a same-size edit elsewhere."""
    digest = hashlib.sha256(split.labels.to(torch.int64).numpy().tobytes())
    if isinstance(split, Split):
        digest.update(split.images.contiguous().numpy().tobytes())
        return digest.hexdigest()
    try:
        for path in split.paths:
            digest.update(f"{path}\0{split.reader.size(path)}\0".encode())
        for i in torch.randperm(len(split.paths), generator=torch.Generator().manual_seed(SUBSET_SEED))[:SAMPLED_FILES]:
            digest.update(split.reader.read(split.paths[int(i)]))
    except OSError as error:
        raise DataError(f"imagefolder: cannot read {error.filename} ({error.strerror})") from None
    return digest.hexdigest()


def resize_split(split: Split, image_size: int) -> Split:
    """A held split's images resized (bilinear, antialiased) to image_size x image_size, unless they are already."""
    if not image_size or split.images.shape[-1] == image_size:
        return split
    resized = torch.nn.functional.interpolate(
        split.images.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
    )
    return Split(resized.round().clamp(0, 255).to(torch.uint8), split.labels, split.classes)


def finished(split: Split, subset: int, image_size: int) -> Split:
    """A whole split in memory (CIFAR, synthetic), cut to its stratified subset and resized to image_size."""
    return resize_split(split.subset(stratified_subset(split.labels, subset)), image_size)


def streamed_files(tree: ImageTree, cfg: RunConfig, resident_bytes: int) -> Splits | None:
    """The files of an ImageFolder folder or shard folder too big for `resident_bytes` once decoded, to stream
    (training images cropped from the full-size file, ablations.data.stream); None when they fit, and for
    archives, which are always decoded into memory (streaming a compressed tar would be slow)."""
    if tree.is_archive:
        return None
    train, test = tree.splits["train"], tree.splits["test"]
    train_keep = stratified_subset(train.labels, cfg.train_subset)
    test_keep = stratified_subset(test.labels, cfg.test_subset)
    size = cfg.image_size or tree.native_size(skip_bad=cfg.bad_images == "skip")
    if (len(train_keep) + len(test_keep)) * 3 * size * size <= resident_bytes:
        return None

    def files(split: TreeSplit, keep: torch.Tensor) -> FileSplit:
        return FileSplit(tree, [split.paths[i] for i in keep.tolist()], split.labels[keep], size)

    return Splits(files(train, train_keep), files(test, test_keep), tree.classes, size)


def check_empty_classes(tree: ImageTree, bad_images: str) -> list[str]:
    """The tree's empty class folders: a one-line DataError naming the first, or with bad_images=skip the list
    (a note on stderr says so), so that the data record counts them."""
    empty = tree.empty_classes
    if empty and bad_images == "error":
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(
            f"imagefolder: the class folder {empty[0]}{more} in {tree.source} holds no image, so every later class "
            "index would move; remove it, or set bad_images=skip to leave it out"
        )
    if empty:
        shown = ", ".join(empty[:NAMED_ODD_IMAGES]) + (", ..." if len(empty) > NAMED_ODD_IMAGES else "")
        print(f"note: bad_images=skip: {len(empty)} empty class folders left out: {shown}", file=sys.stderr)
    return empty


def resident_limit() -> int:
    """The most decoded bytes held in memory: RESIDENT_BYTES, or $CONVMIXER_RESIDENT_BYTES when set."""
    text = os.environ.get(RESIDENT_ENV, "")
    if not text:
        return RESIDENT_BYTES
    if not text.isdigit():
        raise DataError(f"{RESIDENT_ENV}={text!r} is not accepted: expected a number of bytes (an integer >= 0)")
    return int(text)


# The splits this process loaded last, with what they were loaded from: one entry, as loaders._kept. The check
# before a run (its data record) loads them, and the run's build_data takes them from here (`loaded_splits`).
_loaded: dict[tuple, Splits] = {}


def splits_key(cfg: RunConfig, resident_bytes: int) -> tuple:
    """What a run's splits depend on; data_root as the sweep makes it (RunConfig.with_absolute_data_root), since a
    run and its check may spell it two ways."""
    root = os.path.abspath(os.path.expanduser(cfg.data_root))
    return (cfg.dataset, root, cfg.image_size, cfg.train_subset, cfg.test_subset, cfg.bad_images, resident_bytes)


def loaded_splits(cfg: RunConfig, resident_bytes: int) -> Splits:
    """The splits `load_splits` last loaded in this process when they are cfg's data (a run's check loaded them, or
    the process's previous run), else loaded now: a run lists and reads its data once. The data must not change
    under a running sweep, as for loaders._kept."""
    key = splits_key(cfg, resident_bytes)
    return _loaded[key] if key in _loaded else load_splits(cfg, resident_bytes)


def forget_splits() -> None:
    """Let go of the splits this process loaded last (build_data, once held splits are on the device)."""
    _loaded.clear()


def load_splits(cfg: RunConfig, resident_bytes: int | None = None) -> Splits:
    """The finished train and test data of cfg's dataset, read now (a check sees the data as it is), and kept for
    the run that follows (`loaded_splits`). Raises DataError (one line) when it cannot be found or read.

    An ImageFolder tree decodes only the images it keeps, straight to the run's size (PIL, bilinear, after a centre
    crop to a square), or streams them when they do not fit; the other sources hold whole splits, cut and resized
    as tensors by `finished`."""
    resident_bytes = resident_limit() if resident_bytes is None else resident_bytes
    _loaded.clear()  # one dataset at a time
    splits = _loaded[splits_key(cfg, resident_bytes)] = read_splits(cfg, resident_bytes)
    return splits


def read_splits(cfg: RunConfig, resident_bytes: int) -> Splits:
    """cfg's data read from its source (`load_splits`)."""
    skipped: list[str] = []
    if cfg.dataset in ("imagefolder", "imagenette"):
        tree = ImageTree(Path(cfg.data_root)) if cfg.dataset == "imagefolder" else imagenette_tree(cfg.data_root)
        skipped = check_empty_classes(tree, cfg.bad_images)
        streamed = streamed_files(tree, cfg, resident_bytes)
        if streamed is not None:
            streamed.skipped = skipped
            return streamed
        train = load_tree_split(tree, "train", cfg.image_size, cfg.train_subset)
        test = load_tree_split(tree, "test", cfg.image_size, cfg.test_subset)
    else:
        if cfg.dataset == "synthetic":
            whole = load_synthetic(True), load_synthetic(False)
        else:
            whole = load_cifar(cfg.dataset, cfg.data_root, True), load_cifar(cfg.dataset, cfg.data_root, False)
        train = finished(whole[0], cfg.train_subset, cfg.image_size)
        test = finished(whole[1], cfg.test_subset, cfg.image_size)
    return Splits(train, test, train.classes, train.images.shape[-1], skipped)
