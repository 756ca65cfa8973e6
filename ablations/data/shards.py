"""Sharded tar archives in the WebDataset layout, read by index: a dataset too big to hold streams from them.

A shard folder holds `train-000000.tar`, `train-000001.tar`, ... and `val-000000.tar`, ... (`test-` stands in for
`val-`), and optionally `classes.txt` (line i names class i). A sample is the members sharing a key, as in
WebDataset: `<key>.jpg` (or another image extension) and `<key>.cls`, the class index as decimal text. Each shard
is an uncompressed tar, so an image is read with one pread at its offset: every shard's headers are read once
into an index (key -> shard, offset, size; cached under the toolkit's cache folder until the shard changes),
never its images, and no archive is read whole into memory. The images
are then named as in an ImageFolder tree, `<split>/<class>/<key>.<ext>`, with the class as its zero-padded index
(sorted, the folders keep the .cls order), so that every rule of ablations.data.tree applies to them unchanged.
This module reads shards; `python -m ablations.data.make_shards` (ablations/data/make_shards.py) writes them.
"""

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ablations import atomic
from ablations.data import DataError, cache_dir
from ablations.data.files import is_data_member

# A shard's name: its split and six digits, after any prefix ending in "-", "_" or "." (WebDataset sets are often
# named `imagenet-train-000000.tar`); the rule in words is SHARD_RULE, which a folder with none of them is told.
SHARD = re.compile(r"^(?:.*[-_.])?(train|val|test)-(\d{6})\.tar$")
SHARD_RULE = "shards named [<prefix>-]train-NNNNNN.tar (six digits; val- or test- for the test split)"
CLASSES_FILE = "classes.txt"
LABEL_EXT = "cls"
CLASS_DIGITS = 6  # the zero-padded class index that names a class folder: sorted, it keeps the index order
# A shard's index (its samples' keys, offsets, sizes and classes) is cached here, under the toolkit's cache folder,
# keyed by the shard's path, size and modification time: scanning ImageNet's 2.6 million tar headers takes minutes.
INDEX_FOLDER, INDEX_FORMAT = "shard-index", "v1"


@dataclass(frozen=True)
class Member:
    shard: int  # index into ShardSet.paths
    offset: int
    size: int


def is_shard_folder(path: Path) -> bool:
    """A folder holding training shards ([<prefix>-]train-NNNNNN.tar)."""
    return path.is_dir() and any((match := SHARD.match(entry.name)) and match[1] == "train" for entry in path.iterdir())


def split_key(name: str) -> tuple[str, str]:
    """A member's (key, extension), as WebDataset splits them: at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def end_marker_missing(fd: int, end: int) -> bool:
    """Python's tarfile stops without a word at a cut on a member boundary: a whole shard ends in a zero block."""
    return os.pread(fd, tarfile.BLOCKSIZE, end) != bytes(tarfile.BLOCKSIZE)


class ShardSet:
    """The shards of one folder, indexed: `names` (ImageFolder-style paths), `read(name)`, `size(name)`, and the
    class names (`class_names`: from classes.txt, else the indices)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths = sorted(entry for entry in folder.iterdir() if SHARD.match(entry.name))
        self.index: dict[str, Member] = {}
        labels: dict[int, int] = {}  # class index -> images
        for number, path in enumerate(self.paths):
            split = SHARD.match(path.name).group(1)
            for key, (ext, member, label) in self._samples(path, number).items():
                name = f"{split}/{label:0{CLASS_DIGITS}d}/{key}.{ext}"
                if name in self.index:
                    raise DataError(f"imagefolder: the key {key!r} of {path} is in another {split} shard too")
                self.index[name] = member
                labels[label] = labels.get(label, 0) + 1
        self.class_names = self._class_names(max(labels, default=-1) + 1)
        self._fds: dict[int, int] = {}

    def _samples(self, path: Path, number: int) -> dict[str, tuple[str, Member, int]]:
        """The samples of one shard: key -> (image extension, where its bytes are, its class index); from the
        index cache when the shard is unchanged since it was indexed."""
        try:
            stat = path.stat()
        except OSError as error:
            raise DataError(f"imagefolder: cannot read the shard {path} ({error.strerror})") from None
        identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{INDEX_FORMAT}"
        cached = cache_dir() / INDEX_FOLDER / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.json"
        rows = read_index(cached)
        if rows is None:
            rows = scan(path)
            try:
                atomic.write_json(cached, rows)
            except atomic.WriteError:  # a read-only cache costs the next run a scan, not this one its data
                pass
        return {key: (ext, Member(number, offset, size), label) for key, ext, offset, size, label in rows}

    def _class_names(self, count: int) -> list[str]:
        path = self.folder / CLASSES_FILE
        if not path.exists():
            return [str(i) for i in range(count)]
        names = path.read_text().split()
        if len(names) < count:
            raise DataError(f"imagefolder: {path} names {len(names)} classes; the shards use class index {count - 1}")
        return names

    def size(self, name: str) -> int:
        return self.index[name].size

    def read(self, name: str) -> bytes:
        """The bytes of image `name`: one pread (which moves no shared file position, so forked workers may share
        the descriptors)."""
        member = self.index[name]
        fd = self._fds.get(member.shard)
        if fd is None:
            fd = self._fds[member.shard] = os.open(self.paths[member.shard], os.O_RDONLY)
        return os.pread(fd, member.size, member.offset)


def read_index(path: Path) -> list[list] | None:
    """A shard's cached index rows, or None when there is none or it is damaged (then the shard is scanned)."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    well_formed = isinstance(rows, list) and all(isinstance(row, list) and len(row) == 5 for row in rows)
    return rows if well_formed else None


def scan(path: Path) -> list[list]:
    """One shard's samples, [key, image extension, offset, size, class index] each, from its tar headers (the
    images are never read; a .cls member is one pread)."""
    images, labels = {}, {}
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for m in tar:
                key, ext = split_key(m.name)
                if is_data_member(m):
                    images[key] = (ext, m.offset_data, m.size)
                elif m.isfile() and ext.lower() == LABEL_EXT:
                    labels[key] = os.pread(f.fileno(), m.size, m.offset_data)
            if end_marker_missing(f.fileno(), tar.offset):
                raise DataError(f"imagefolder: the shard {path} is cut short (no end-of-archive marker)")
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"imagefolder: cannot read the shard {path}: {error}") from None
    rows = []
    for key, (ext, offset, size) in images.items():
        text = labels.get(key, b"").strip()
        if not text.isdigit():
            problem = "no .cls member" if key not in labels else f"a .cls that is not a class index ({text[:20]!r})"
            raise DataError(f"imagefolder: the sample {key!r} of {path} has {problem}")
        rows.append([key, ext, offset, size, int(text)])
    return rows
