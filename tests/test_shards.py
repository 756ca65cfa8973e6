"""Shards that changed or lie: the index cache trusts a shard only while the blocks its index came from hash the
same (a rewrite with the same size and mtime is scanned again), a class index is bounded by the classes found, and
a member with an absolute name is not data."""

import io
import os
import shutil
import tarfile

import pytest
from helpers import write_imagenet_tree

from ablations.data import DataError, make_shards, shards


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree") / "imagenet"
    write_imagenet_tree(tree, {"train": 4, "val": 1})
    out = tmp_path_factory.mktemp("shards") / "imagenet-shards"
    make_shards.write_shards(tree, out, per_shard=6)
    return out


def same_stat(path, like) -> None:
    """Give `path` the mtime of `like` (`cp -p`, `rsync -t`, `touch -r`); the test asserts the size is the same."""
    stat = like.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def rewrite(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def zeros(name: str, data: bytes) -> bytes:
    """A .JPEG member's bytes as zeros (not an image), any other member's as they are."""
    return bytes(3 * tarfile.BLOCKSIZE) if name.endswith(".JPEG") else data


def test_a_shard_relabelled_in_place_with_its_size_and_mtime_is_read_again_not_through_the_cache(
    shard_folder, tmp_path
):
    folder = shutil.copytree(shard_folder, tmp_path / "shards")
    path = folder / "train-000000.tar"
    before, size = shards.ShardSet(folder).index, path.stat().st_size
    kept = path.with_suffix(".kept")
    shutil.copy2(path, kept)
    with tarfile.open(path) as tar:
        classes = [m for m in tar if m.name.endswith(".cls")]
    with open(path, "r+b") as f:  # the review's repro: class 0 -> 1 for every .cls of the shard, same length
        for m in classes:
            label = os.pread(f.fileno(), 1, m.offset_data)
            f.seek(m.offset_data)
            f.write(b"1" if label == b"0" else b"0")
    same_stat(path, kept)
    assert path.stat().st_size == size
    after = shards.ShardSet(folder).index
    assert set(after) != set(before)  # the names carry the class: the swapped samples moved class
    assert after == shards.ShardSet(folder).index  # the rescanned index is cached again, and reads the same


def test_a_shard_copied_over_another_of_the_same_size_and_mtime_is_scanned_again(shard_folder, tmp_path):
    folder = shutil.copytree(shard_folder, tmp_path / "shards")
    first, second = folder / "train-000000.tar", folder / "train-000001.tar"
    assert first.stat().st_size == second.stat().st_size
    shards.ShardSet(folder)
    stat = first.stat()
    shutil.copyfile(second, first)
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match="is in another train shard too"):  # the true error, not a stale decode
        shards.ShardSet(folder)


def test_a_huge_class_index_without_classes_txt_is_one_line_and_allocates_nothing(shard_folder, tmp_path):
    folder = shutil.copytree(shard_folder, tmp_path / "shards")
    (folder / shards.CLASSES_FILE).unlink()
    path = folder / "train-000000.tar"
    content = members(path)
    label = next(name for name in content if name.endswith(".cls"))
    rewrite(path, {**content, label: b"99999999999"})
    with pytest.raises(
        DataError, match=r"index 99999999999 \(4 classes found and no classes.txt: indices run 0 to 3\)"
    ) as e:
        shards.ShardSet(folder)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["/tmp/EVILABS/0001", "../../EVIL/0001", "a/../../EVIL/0001"])
def test_a_member_with_an_absolute_or_upward_name_is_not_indexed(shard_folder, tmp_path, name):
    folder = shutil.copytree(shard_folder, tmp_path / "shards")
    path = folder / "train-000000.tar"
    content = members(path)
    image = next(data for member, data in content.items() if member.endswith(".JPEG"))
    rewrite(path, {**content, f"{name}.jpg": image, f"{name}.cls": b"0"})
    index = shards.ShardSet(folder).index
    assert len(index) == len(shards.ShardSet(shard_folder).index)
    assert not any("EVIL" in entry for entry in index)


def test_the_native_size_scan_skips_bad_images_and_reads_headers_only(shard_folder, tmp_path, monkeypatch):
    from ablations.data.tree import ImageTree

    folder = shutil.copytree(shard_folder, tmp_path / "shards")
    path = folder / "train-000000.tar"
    content = members(path)
    bad = next(name for name in content if name.endswith(".JPEG"))
    rewrite(path, {**content, bad: zeros(bad, b"")})
    with pytest.raises(DataError, match="not an image file Pillow can identify"):
        ImageTree(folder).native_size()

    def whole(self, name):
        raise AssertionError(f"{name} read whole for its header")

    monkeypatch.setattr(shards.ShardSet, "read", whole)
    assert ImageTree(folder).native_size(skip_bad=True) == ImageTree(shard_folder).native_size()
    for shard in folder.glob("*.tar"):  # every image zeros
        rewrite(shard, {name: zeros(name, data) for name, data in members(shard).items()})
    with pytest.raises(DataError, match="bad_images=skip would leave out every image of"):
        ImageTree(folder).native_size(skip_bad=True)


def test_a_member_file_reads_only_its_member_and_seeks_within_it(tmp_path):
    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(256)) * 4)
    fd = os.open(path, os.O_RDONLY)
    member = shards.MemberFile(fd, 100, 50)
    assert member.read(10) == bytes(range(100, 110)) and member.read() == bytes(range(110, 150))
    member.seek(-5, io.SEEK_END)
    assert member.tell() == 45 and member.read(99) == bytes(range(145, 150)) and member.read(1) == b""
    os.close(fd)
