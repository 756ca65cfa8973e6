"""An ImageFolder-style tree, root/{train,test}/<class>/<image>, in a folder, a tar archive or a folder of WebDataset
shards: its classes and splits (file names and labels), its checks, its fingerprint, and reading or decoding its
files. What a run makes of a tree (subsets, the decoded-split cache, streaming) is ablations.data.sources'.

A tree never shrinks silently nor is it ambiguous: the train and test class sets must match, an empty class folder
is named, an archive must read to its end-of-archive marker (tarfile itself stops without a word at a cut that
falls on a member boundary), a data_root holding several trees is refused, and the native image size is the most
common one, never one image's.
"""

import hashlib
import io
import lzma
import sys
import tarfile
import zlib
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ablations.data import DataError
from ablations.data.decode import DecodeFailure, decode_all, fork_workers, image_sizes
from ablations.data.files import image_names, is_data_member
from ablations.data.shards import CLASS_DIGITS, CLASSES_FILE, SHARD_RULE, ShardSet, is_shard_folder
from convmixer.runtime import usable_cores

TEST_SPLIT_NAMES = ("test", "val")
NAMED_ODD_IMAGES = 3  # a note on images of another size than the native one names this many


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
            raise DataError(
                f"imagefolder: no train/<class>/<image> found in data_root={str(self.source)!r}, nor {SHARD_RULE}"
            )
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
