"""Where the images come from: torchvision's CIFAR or Imagenette, an ImageFolder tree (folder or tar archive), or the
synthetic set.

`load_splits(cfg)` hands a run its finished data: the train and test splits of its dataset with the stratified
subsets taken and every image at the run's size, as uint8 NCHW tensors with int64 labels (`Split`), or, for an
ImageFolder folder or shard folder too big to hold, as image files cropped to that size on the fly
(ablations.data.stream.ImageFiles). Subsetting happens here for every source, so the loaders
(ablations.data.loaders) only batch and augment.
Decoding JPEGs is the slow part, so it runs on every core (ablations.data.decode), and a decoded split is saved
once under the cache folder ($CONVMIXER_CACHE, default ~/.cache/convmixer), keyed by a hash of the source's
content, so every later run of a sweep loads the tensors instead of decoding again.

ImageFolder data never shrinks silently: the train and test class sets must match, a folder or file that cannot
be read and an empty class folder are errors (skipped and counted only with bad_images=skip), and an archive must
read to its end-of-archive marker (tarfile itself stops without a word at a cut that falls on a member boundary).
Nor is it ambiguous: a data_root holding several trees is refused, and the native image size is the most common
one, never one image's.
"""

import hashlib
import io
import lzma
import os
import sys
import tarfile
import zlib
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, Imagenette
from torchvision.datasets.folder import IMG_EXTENSIONS

from ablations import atomic
from ablations.config import RunConfig
from ablations.data import IMAGENETTE_FOLDER, DataError, cache_dir, synthetic
from ablations.data.decode import DecodeFailure, decode_all, fork_workers, image_sizes
from ablations.data.shards import CLASS_DIGITS, CLASSES_FILE, ShardSet, is_shard_folder
from ablations.data.stream import ImageFiles
from convmixer.runtime import usable_cores

CACHE_FORMAT = "v2"  # bump when decoding changes, so old cache files are not reused (v2: the native size rule)
SUBSET_SEED = 0  # subsets are the same for every run seed
RESIDENT_BYTES = 4 << 30  # decoded uint8 train + test images up to this size are held in memory (and on the device)
# A smaller limit, in bytes, streams data that would fit: to try or measure the streaming path on a small dataset.
RESIDENT_ENV = "CONVMIXER_RESIDENT_BYTES"
TEST_SPLIT_NAMES = ("test", "val")
NAMED_ODD_IMAGES = 3  # a note on images of another size than the native one names this many
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


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not PurePosixPath(name).name.startswith(".")


def is_data_member(member: tarfile.TarInfo) -> bool:
    """An archive member that is an image file. Links are not (they may point anywhere), nor a path through `..`
    (`small/train/cat/../../x.jpg` is not in train/cat/, whatever its name says)."""
    return member.isfile() and is_image(member.name) and ".." not in PurePosixPath(member.name).parts


def image_names(root: Path) -> list[str]:
    """Every image file under the folder `root`, as a path relative to it, sorted. Unlike Path.rglob, which skips
    a folder it cannot read, a folder that cannot be read is a DataError naming it."""

    def fail(error: OSError) -> None:
        raise DataError(
            f"imagefolder: cannot read the folder {error.filename} ({error.strerror}) in data_root={str(root)!r}"
        )

    names = []
    for folder, _, files in os.walk(root, onerror=fail, followlinks=True):
        names += [Path(folder, name).relative_to(root).as_posix() for name in files]
    return sorted(name for name in names if is_image(name))


def check_same_classes(source: Path, train: set[str], test: set[str], train_dir: str, test_dir: str) -> None:
    """A class with images on one side only would silently drop out of training or of the test score."""
    if train == test:
        return
    sides = [(train - test, train_dir, test_dir), (test - train, test_dir, train_dir)]
    problems = [f"{sorted(only)} have images in {has}/ but none in {lacks}/" for only, has, lacks in sides if only]
    raise DataError(
        f"imagefolder: the train and test classes of {source} differ: classes {'; classes '.join(problems)}"
    )


@dataclass
class TreeSplit:
    paths: list[str]  # as named inside the folder or archive, sorted by class then path
    labels: torch.Tensor
    folder: str  # the split's folder, holding one folder per class


class ImageTree:
    """An ImageFolder-style tree, root/{train,test}/<class>/<image>, in a folder, a tar archive or a folder of
    WebDataset shards (ablations.data.shards, whose images are named as in such a tree).

    The tree may sit one or more folders down (an archive of cifar10-jpeg/train/...); `val` stands in for a
    missing `test`. Archives are read straight from the file into memory, never extracted, so they suit
    datasets that fit in memory; stream a larger one from an extracted folder or from shards (read by index).
    """

    def __init__(self, source: Path) -> None:
        try:
            if not source.exists():
                raise DataError(
                    f"imagefolder: data_root={str(source)!r} does not exist; point it at a folder or a .tar/.tar.gz"
                )
            if source.is_file() and not tarfile.is_tarfile(source):
                raise DataError(f"imagefolder: data_root={str(source)!r} is a file but not a tar archive")
        except OSError as error:  # no permission to the file or a folder above it
            raise DataError(f"imagefolder: cannot read data_root={str(source)!r} ({error.strerror})") from None
        self.source, self.is_archive = source, source.is_file()
        self.is_sharded = not self.is_archive and is_shard_folder(source)

    @cached_property
    def _shards(self) -> ShardSet:
        return ShardSet(self.source)

    @cached_property
    def _archive(self) -> tuple[bytes, dict[str, tuple[int, int]]]:
        """An archive's tar stream, decompressed into memory whole (a tar.gz has no random access), and where
        each image member's bytes sit in it: name -> (offset, size)."""
        try:
            with tarfile.open(self.source) as tar:  # whichever compression tarfile recognises
                tar.fileobj.seek(0)
                raw = tar.fileobj.read()
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                index = {m.name: (m.offset_data, m.size) for m in tar if is_data_member(m)}
                end = tar.offset  # where tarfile stopped: the end-of-archive marker, or where the bytes ran out
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as error:  # truncated or corrupt
            raise DataError(f"imagefolder: cannot read the archive data_root={str(self.source)!r}: {error}") from None
        if raw[end : end + tarfile.BLOCKSIZE] != bytes(tarfile.BLOCKSIZE):
            raise DataError(
                f"imagefolder: the archive data_root={str(self.source)!r} is cut short: it ends at byte {end} of "
                "its tar stream without the end-of-archive marker (a partial copy or download?); copy it again"
            )
        return raw, index

    @cached_property
    def _files(self) -> list[str]:
        if self.is_sharded:
            return sorted(self._shards.index)
        return sorted(self._archive[1]) if self.is_archive else image_names(self.source)

    @cached_property
    def _layout(self) -> tuple[list[str], dict[str, TreeSplit]]:
        found: dict[str, list[tuple[str, str]]] = {}  # split folder -> (class, file name) pairs
        for name in self._files:
            parts = PurePosixPath(name).parts
            for depth, part in enumerate(parts[:-2]):
                if part == "train" or part in TEST_SPLIT_NAMES:
                    found.setdefault("/".join(parts[: depth + 1]), []).append((parts[depth + 1], name))
                    break
        train_dir = self._train_dir([key for key in found if PurePosixPath(key).name == "train"])
        beside_train = (str(PurePosixPath(train_dir).parent / name) for name in TEST_SPLIT_NAMES)
        test_dirs = [key for key in beside_train if key in found]
        if not test_dirs:
            raise DataError(f"imagefolder: no test/<class>/<image> (or val/) beside {train_dir} in {self.source}")
        classes = sorted({label for label, _ in found[train_dir]})
        check_same_classes(
            self.source, set(classes), {label for label, _ in found[test_dirs[0]]}, train_dir, test_dirs[0]
        )
        index = {label: i for i, label in enumerate(classes)}
        splits = {}
        for split, key in (("train", train_dir), ("test", test_dirs[0])):
            entries = sorted(found[key])
            labels = torch.tensor([index[c] for c, _ in entries])
            splits[split] = TreeSplit([name for _, name in entries], labels, key)
        return classes, splits

    def _train_dir(self, train_dirs: list[str]) -> str:
        """The one train/ folder of the tree; several mean several datasets, and which one is meant is not ours
        to guess."""
        if not train_dirs:
            raise DataError(f"imagefolder: no train/<class>/<image> found in data_root={str(self.source)!r}")
        if len(train_dirs) > 1:
            fix = "pack one tree per archive" if self.is_archive else "set data_root to the folder of one of them"
            raise DataError(
                f"imagefolder: data_root={str(self.source)!r} holds {len(train_dirs)} ImageFolder trees, with "
                f"{', '.join(f'{key}/' for key in sorted(train_dirs))}; {fix}"
            )
        return train_dirs[0]

    @property
    def classes(self) -> list[str]:
        if self.is_sharded:  # shards name a class folder by its index: its name is in classes.txt
            return [self._shards.class_names[int(folder)] for folder in self._layout[0]]
        return self._layout[0]

    @cached_property
    def empty_classes(self) -> list[str]:
        """Class folders of train/ or test/ holding no image (a class of classes.txt, for shards), as paths: a
        class with no image drops out of the class list, and every later class index moves. Hidden folders
        (.ipynb_checkpoints) are not classes, as hidden files are not images."""
        if self.is_sharded:
            return [f"class {i} ({name}) of {CLASSES_FILE}" for i, name in enumerate(self._shards.class_names)
                    if f"{i:0{CLASS_DIGITS}d}" not in self._layout[0]]  # fmt: skip
        if self.is_archive:  # an archive need not list its folders: nothing to compare with
            return []
        return [
            f"{split.folder}/{entry.name}/"
            for split in self.splits.values()
            for entry in sorted((self.source / split.folder).iterdir())
            if entry.is_dir() and entry.name not in self._layout[0] and not entry.name.startswith(".")
        ]

    @property
    def splits(self) -> dict[str, TreeSplit]:
        """'train' and 'test' file lists, labels indexing `classes`."""
        return self._layout[1]

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the archive's bytes (of each shard's, in order), or of every image file's path and bytes in
        the folder."""
        digest = hashlib.sha256()
        name = str(self.source)
        try:
            if self.is_archive or self.is_sharded:
                for name in self._shards.paths if self.is_sharded else [self.source]:
                    with open(name, "rb") as f:
                        while chunk := f.read(1 << 20):
                            digest.update(chunk)
            else:
                for name in self._files:
                    data = self.read(name)
                    digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
        except OSError as error:
            raise DataError(f"imagefolder: cannot read {name} in {self.source} ({error.strerror})") from None
        return digest.hexdigest()

    def read(self, name: str) -> bytes:
        """The bytes of image file `name` (OSError when a folder's file cannot be read)."""
        if self.is_sharded:
            return self._shards.read(name)
        if not self.is_archive:
            return (self.source / name).read_bytes()
        raw, index = self._archive
        offset, size = index[name]
        return memoryview(raw)[offset : offset + size]

    def where(self, name: str) -> str:
        """Image file `name` as an error names it: with its shard, for shards (the name is the index's)."""
        return f"{name} (in {self._shards.paths[self._shards.index[name].shard].name})" if self.is_sharded else name

    def size(self, name: str) -> int:
        """The size in bytes of image file `name`, from the folder's listing or the index (no image is read)."""
        if self.is_sharded:
            return self._shards.size(name)
        return self._archive[1][name][1] if self.is_archive else (self.source / name).stat().st_size

    def over_files(self, names: list[str], job: Callable[[Callable[[int], bytes], int, int], np.ndarray]) -> np.ndarray:
        """`job(read, count, workers)` (decode.decode_all, decode.image_sizes) over the image files `names`, on
        every core for many files; a file that fails is a one-line DataError naming it."""
        try:
            return job(lambda i: self.read(names[i]), len(names), fork_workers(len(names), usable_cores()))
        except DecodeFailure as failure:  # a read error is worded as the fingerprint's: "(Permission denied)"
            why = f" ({failure.detail})" if failure.verb == "read" else f": {failure.detail}"
            raise DataError(
                f"imagefolder: cannot {failure.verb} {names[failure.index]} in {self.source}{why}"
            ) from None
        except BrokenProcessPool:  # a worker killed (the out-of-memory killer?) is a one-line error like the rest
            raise DataError(f"imagefolder: a process decoding {self.source} died (out of memory?); rerun") from None

    def decode_files(self, names: list[str], size: int) -> torch.Tensor:
        """The image files `names`, decoded to size x size, as one uint8 tensor; on every core for many files."""
        return torch.from_numpy(self.over_files(names, lambda read, n, workers: decode_all(read, n, size, workers)))

    @cached_property
    def native_size(self) -> int:
        """The size used when image_size is 0: the most common shorter side of all the tree's images, train and
        test (ties: the larger), read from their headers, so that one odd image cannot resize all the others.
        The images of another size, which are resized to it, are counted and named in a note."""
        names = self.splits["train"].paths + self.splits["test"].paths
        sizes = self.over_files(names, image_sizes)
        sides, counts = np.unique(sizes.min(1), return_counts=True)
        native = int(sides[counts == counts.max()].max())
        odd = np.flatnonzero(sizes.min(1) != native)
        if len(odd):
            shown = ", ".join(f"{names[i]} ({sizes[i, 0]}x{sizes[i, 1]})" for i in odd[:NAMED_ODD_IMAGES])
            more = ", ..." if len(odd) > NAMED_ODD_IMAGES else ""
            print(
                f"note: the images in {self.source} not {native} px on their shorter side like most ({len(odd):,} of "
                f"{len(names):,}) are resized to it: {shown}{more}; set image_size to choose the size",
                file=sys.stderr,
            )
        return native

    def decode(self, split: str, size: int, subset: int) -> Split:
        """The stratified subset of a split, decoded (and resized to size x size) into one uint8 tensor."""
        files = self.splits[split]
        keep = stratified_subset(files.labels, subset)
        return Split(self.decode_files([files.paths[i] for i in keep.tolist()], size), files.labels[keep], self.classes)

    def load(self, split: str, image_size: int, subset: int) -> Split:
        """A decoded split from the cache, decoding it on a miss. For an archive the cache is checked first,
        so a hit never lists the archive (listing a 60k-image tar.gz takes seconds)."""
        size_name = f"{image_size}px" if image_size else "native"
        name = f"imagefolder-{self.fingerprint[:16]}-{split}-{size_name}-n{subset}"
        return cached(name, lambda: self.decode(split, image_size or self.native_size, subset))


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
class Splits:
    """A run's finished data: train and test, subsets taken, images image_size x image_size; held in memory
    (`Split`), or streamed (`ImageFiles`) when an ImageFolder folder or shard folder is too big to hold."""

    train: Split | ImageFiles
    test: Split | ImageFiles
    classes: list[str]
    image_size: int
    skipped: list[str] = field(default_factory=list)  # empty class folders left out, with bad_images=skip

    @property
    def resident(self) -> bool:
        return isinstance(self.train, Split)

    def identity(self) -> dict:
        """What the store records as the data of a run (data.json) and compares on a rerun: the classes, the image
        counts and size, and a sha256 of each split (`split_sha256`)."""
        return {
            "classes": list(self.classes), "image_size": self.image_size,
            "train_images": len(self.train.labels), "test_images": len(self.test.labels),
            "train_sha256": split_sha256(self.train), "test_sha256": split_sha256(self.test),
            **({"skipped_classes": self.skipped} if self.skipped else {}),
        }  # fmt: skip


def split_sha256(split: Split | ImageFiles) -> str:
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


def resize(split: Split, image_size: int) -> Split:
    """Resize (bilinear, antialiased) a split whose images are not image_size x image_size already."""
    if not image_size or split.images.shape[-1] == image_size:
        return split
    resized = torch.nn.functional.interpolate(
        split.images.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
    )
    return Split(resized.round().clamp(0, 255).to(torch.uint8), split.labels, split.classes)


def finished(split: Split, subset: int, image_size: int) -> Split:
    """A whole split in memory (CIFAR, synthetic), cut to its stratified subset and resized to image_size."""
    return resize(split.subset(stratified_subset(split.labels, subset)), image_size)


def streamed_files(tree: ImageTree, cfg: RunConfig, resident_bytes: int) -> Splits | None:
    """The files of an ImageFolder folder or shard folder too big for `resident_bytes` once decoded, to stream
    (training images cropped from the full-size file, ablations.data.stream); None when they fit, and for
    archives, which are always decoded into memory (streaming a compressed tar would be slow)."""
    if tree.is_archive:
        return None
    train, test = tree.splits["train"], tree.splits["test"]
    train_keep = stratified_subset(train.labels, cfg.train_subset)
    test_keep = stratified_subset(test.labels, cfg.test_subset)
    size = cfg.image_size or tree.native_size
    if (len(train_keep) + len(test_keep)) * 3 * size * size <= resident_bytes:
        return None

    def files(split: TreeSplit, keep: torch.Tensor, **crop) -> ImageFiles:
        paths = [split.paths[i] for i in keep.tolist()]
        return ImageFiles(tree, paths, split.labels[keep], size, **crop)  # decode: build_data resolves it

    train_files = files(train, train_keep, scale=cfg.scale, flip=cfg.hflip)
    return Splits(train_files, files(test, test_keep), tree.classes, size)


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


def load_splits(cfg: RunConfig, resident_bytes: int | None = None) -> Splits:
    """The finished train and test data of cfg's dataset. Raises DataError (one line) when it cannot be found or
    read. An ImageFolder tree decodes only the images it keeps, straight to the run's size (PIL, bilinear, after
    a centre crop to a square), or streams them when they do not fit; the other sources hold whole splits, cut
    and resized as tensors by `finished`."""
    skipped: list[str] = []
    resident_bytes = resident_limit() if resident_bytes is None else resident_bytes
    if cfg.dataset in ("imagefolder", "imagenette"):
        tree = ImageTree(Path(cfg.data_root)) if cfg.dataset == "imagefolder" else imagenette_tree(cfg.data_root)
        skipped = check_empty_classes(tree, cfg.bad_images)
        streamed = streamed_files(tree, cfg, resident_bytes)
        if streamed is not None:
            streamed.skipped = skipped
            return streamed
        train, test = (
            tree.load("train", cfg.image_size, cfg.train_subset),
            tree.load("test", cfg.image_size, cfg.test_subset),
        )
    else:
        if cfg.dataset == "synthetic":
            whole = load_synthetic(True), load_synthetic(False)
        else:
            whole = load_cifar(cfg.dataset, cfg.data_root, True), load_cifar(cfg.dataset, cfg.data_root, False)
        train = finished(whole[0], cfg.train_subset, cfg.image_size)
        test = finished(whole[1], cfg.test_subset, cfg.image_size)
    return Splits(train, test, train.classes, train.images.shape[-1], skipped)
