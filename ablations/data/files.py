"""Which files of a dataset are images: the one rule that a folder's walk, an archive's index and a shard's index
(ablations.data.tree, ablations.data.shards) all apply, so that the three readers never disagree on a tree."""

import os
import tarfile
from pathlib import Path, PurePosixPath

from torchvision.datasets.folder import IMG_EXTENSIONS

from ablations.data import DataError


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not PurePosixPath(name).name.startswith(".")


def is_data_member(member: tarfile.TarInfo) -> bool:
    """An archive member that is an image file. Links are not (they may point anywhere), nor a path through `..`
    (`small/train/cat/../../x.jpg` is not in train/cat/, whatever its name says), nor an absolute one (`/tmp/x.jpg`
    is in no split's folder)."""
    path = PurePosixPath(member.name)
    return member.isfile() and is_image(member.name) and ".." not in path.parts and not path.is_absolute()


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
