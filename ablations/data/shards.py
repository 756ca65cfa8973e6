"""Sharded tar archives in the WebDataset layout, read by index: a dataset too big to hold streams from them.

A shard folder holds `train-000000.tar`, `train-000001.tar`, ... and `val-000000.tar`, ... (`test-` stands in for
`val-`), and optionally `classes.txt` (line i names class i). A sample is the members sharing a key, as in
WebDataset: `<key>.jpg` (or another image extension) and `<key>.cls`, the class index as decimal text. Each shard
is an uncompressed tar, so an image is read with one pread at its offset: every shard's headers are read once
into an index (key -> shard, offset, size; cached under the toolkit's cache folder, and used only while every
header block and class member it came from still hashes the same), never its images, and no archive is read
whole into memory. The images are then named as in an ImageFolder tree, `<split>/<class>/<key>.<ext>`, with the
class as its zero-padded index (sorted, the folders keep the .cls order), so that every rule of ablations.data.tree
applies to them unchanged.
This module reads shards; `python -m ablations.data.make_shards` (ablations/data/make_shards.py) writes them.
"""

import hashlib
import io
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
# found by the shard's path, size and modification time (scanning ImageNet's 2.6 million tar headers takes minutes)
# and trusted only while the blocks it was read from hash as they did: a shard rewritten with the same size and
# mtime (`cp -p`, `rsync -t`, reproducible packing) is scanned again, never read through the old index.
INDEX_FOLDER, INDEX_FORMAT = "shard-index", "v2"


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
        self.class_names = self._class_names(max(labels, default=-1) + 1, len(labels))
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
        index = read_index(cached)
        if index is None or blocks_digest(path, index["blocks"]) != index["digest"]:
            index = scan(path)
            try:
                atomic.write_json(cached, index)
            except atomic.WriteError:  # a read-only cache costs the next run a scan, not this one its data
                pass
        rows = index["rows"]
        return {key: (ext, Member(number, offset, size), label) for key, ext, offset, size, label in rows}

    def _class_names(self, count: int, found: int) -> list[str]:
        """classes.txt's names, else the indices: each index the shards use below the number of classes found, so
        that one wrong .cls cannot ask for a list of 10**11 names."""
        path = self.folder / CLASSES_FILE
        if not path.exists():
            if count > found:
                accepted = f"{found} classes found and no {CLASSES_FILE}: indices run 0 to {found - 1}"
                raise DataError(f"imagefolder: the shards of {self.folder} use class index {count - 1} ({accepted})")
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
        return os.pread(self._fd(member.shard), member.size, member.offset)

    def open(self, name: str) -> io.BufferedReader:
        """Image `name` as a file object reading only its member, as far as it is read (a header read of a 300 MB
        member reads its first blocks, not the member)."""
        member = self.index[name]
        return io.BufferedReader(MemberFile(self._fd(member.shard), member.offset, member.size))

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return fd


class MemberFile(io.RawIOBase):
    """The `size` bytes at `offset` of the file `fd`, as a seekable file, each read one pread (no shared position)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self.fd, self.offset, self.size, self.position = fd, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = os.pread(self.fd, max(0, min(len(buffer), self.size - self.position)), self.offset + self.position)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, start + position)
        return self.position

    def tell(self) -> int:
        return self.position


def read_index(path: Path) -> dict | None:
    """A shard's cached index ({"rows", "blocks", "digest"}), or None when there is none or it is damaged (then the
    shard is scanned)."""
    try:
        index = json.loads(path.read_text())
        rows, blocks, digest = index["rows"], index["blocks"], index["digest"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    well_formed = all(isinstance(row, list) and len(row) == 5 for row in rows) and isinstance(digest, str)
    well_formed &= all(isinstance(block, list) and len(block) == 2 for block in blocks)
    return index if well_formed else None


def blocks_digest(path: Path, blocks: list[list[int]]) -> str:
    """The sha256 of the shard's bytes in `blocks` ([offset, length] each): every member's header blocks, each
    .cls member's text and the end-of-archive marker, all an index is read from. One pread each, no image read."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""  # the scan that follows names the problem
    try:
        for offset, length in blocks:
            digest.update(os.pread(fd, length, offset))
    finally:
        os.close(fd)
    return digest.hexdigest()


def add_block(blocks: list[list[int]], start: int, end: int) -> None:
    """Add the bytes [start, end) to `blocks`, joined to the last block where they follow it: one pread fewer."""
    if blocks and blocks[-1][0] + blocks[-1][1] == start:
        blocks[-1][1] += end - start
    else:
        blocks.append([start, end - start])


def scan(path: Path) -> dict:
    """One shard's index: its samples ("rows", [key, image extension, offset, size, class index] each) from its tar
    headers (the images are never read; a .cls member is one pread), and the blocks they came from, hashed."""
    images, labels, blocks = {}, {}, []
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for m in tar:
                key, ext = split_key(m.name)
                end = m.offset_data
                if is_data_member(m):
                    images[key] = (ext, m.offset_data, m.size)
                elif m.isfile() and ext.lower() == LABEL_EXT:
                    labels[key] = os.pread(f.fileno(), m.size, m.offset_data)
                    end += -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE  # to its padded end: joins the next
                add_block(blocks, m.offset, end)
            add_block(blocks, tar.offset, tar.offset + tarfile.BLOCKSIZE)
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
    return {"rows": rows, "blocks": blocks, "digest": blocks_digest(path, blocks)}
