"""Datasets and loaders: sources (synthetic, ImageFolder folder/archive, CIFAR offline), stratified subsets, the
decode cache, the device-resident and the DataLoader paths, and (seed, epoch) replay."""

import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ablations import datasets, synthetic
from ablations.augment import normalise
from ablations.config import ConfigError, RunConfig
from ablations.data import build_data, derived_seed
from ablations.datasets import DataError, stratified_subset

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TREE_CLASSES = ("cat", "dog", "emu")
NO_AUGMENT = dict(scale=1.0, hflip=False, randaug_n=0, jitter=0.0, reprob=0.0)


def write_tree(root: Path, per_class: dict[str, int], size: int = 12) -> None:
    """root/<split>/<class>/NNN.png, lossless; red encodes the class, green the image's number."""
    for split, count in per_class.items():
        for label, name in enumerate(TREE_CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.zeros((size, size + 4, 3), np.uint8)  # not square: decoding centre-crops
                pixels[..., 0], pixels[..., 1] = 40 + 60 * label, 10 * i
                pixels[:, :2] = 255  # a left border the centre crop removes
                Image.fromarray(pixels).save(root / split / name / f"{i:03d}.png")


def write_archive(tmp_path: Path, per_class: dict[str, int], name: str = "tiny.tar.gz") -> Path:
    tree = tmp_path / "tree"
    write_tree(tree, per_class)
    archive = tmp_path / name
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="tiny-jpeg")  # one folder down, like the shared CIFAR-10 archive
    return archive


def imagefolder(root: Path, **overrides) -> RunConfig:
    return RunConfig(**{"dataset": "imagefolder", "data_root": str(root), "batch_size": 4, **NO_AUGMENT, **overrides})


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = zip(*batches, strict=True)
    return torch.cat(images), torch.cat(targets)


def test_stratified_subset_takes_equal_class_shares_deterministically():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    pick = stratified_subset(labels, 31)
    assert torch.bincount(labels[pick]).tolist() == [11, 10, 10]
    assert torch.equal(pick, stratified_subset(labels, 31)) and torch.equal(pick, pick.sort().values)
    assert not torch.equal(pick[:11], torch.arange(11))  # a fixed shuffle, not the first items of the source
    assert torch.equal(stratified_subset(labels, 0), torch.arange(100))
    assert torch.equal(stratified_subset(labels, 500), torch.arange(100))
    assert torch.bincount(labels[stratified_subset(labels, 75)]).tolist() == [28, 27, 20]  # class 2 has only 20


def test_synthetic_is_deterministic_balanced_and_not_solved_by_colour():
    images, labels = synthetic.make_split(train=False)
    again, labels_again = synthetic.make_split(train=False)
    assert torch.equal(images, again) and torch.equal(labels, labels_again)
    assert images.shape == (2000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [200] * 10 and len(synthetic.CLASSES) == 10
    # Colour statistics of a whole image barely beat chance (0.1): a nearest-class-mean classifier on each
    # image's per-channel mean, std and max, fitted on half the split and scored on the other half.
    pixels = images.float().flatten(2) / 255
    features = torch.cat([pixels.mean(2), pixels.std(2), pixels.amax(2)], 1)
    features = (features - features.mean(0)) / features.std(0)
    fit, score = slice(0, 1000), slice(1000, 2000)
    centres = torch.stack([features[fit][labels[fit] == c].mean(0) for c in range(10)])
    predicted = torch.cdist(features[score], centres).argmin(1)
    assert (predicted == labels[score]).float().mean() < 0.2


def test_synthetic_markers_sit_in_their_class_direction():
    sector = torch.arange(1000) % len(synthetic.DIRECTIONS)
    plus_at, marker_at = synthetic._marker_positions(sector, torch.Generator().manual_seed(0))
    dy, dx = (marker_at - plus_at).float().unbind(1)
    angle = torch.rad2deg(torch.atan2(dy, dx.abs()))  # mirror-folded: -90 is straight above, 90 below
    assert ((angle - (-72 + 36 * sector)).abs() < 18).all()  # inside the class's 36-degree sector
    assert (dx < 0).any() and (dx > 0).any()  # both mirror images occur
    distance = (dx**2 + dy**2).sqrt()
    assert ((distance > synthetic.DISTANCE[0] - 1) & (distance < synthetic.DISTANCE[1] + 1)).all()
    for at in (plus_at, marker_at):  # whole shapes inside the image
        assert ((at >= synthetic.RADIUS) & (at < synthetic.IMAGE_SIZE - synthetic.RADIUS)).all()


def test_synthetic_stamps_each_shape_at_its_own_place():
    kinds, at = torch.tensor([synthetic.PLUS, synthetic.FIRST_MARKER]), torch.tensor([[4, 9], [20, 27]])
    stamped = synthetic._stamp(torch.zeros(2, 3, 32, 32), kinds, at, torch.Generator().manual_seed(0))
    for i in range(2):
        expected = torch.zeros(32, 32, dtype=torch.bool)
        expected[at[i, 0] - 2 : at[i, 0] + 3, at[i, 1] - 2 : at[i, 1] + 3] = synthetic.SHAPES[kinds[i]]
        assert torch.equal(stamped[i].amax(0) > 0, expected)
        assert stamped[i].amax() >= 0.55  # bright enough to stand out from the dark background


def test_build_data_synthetic_subsets_shapes_and_normalisation():
    cfg = RunConfig(train_subset=200, test_subset=100, batch_size=64)
    data = build_data(cfg, torch.device("cpu"))
    assert (data.num_classes, data.image_size, data.in_chans, data.resident) == (10, 32, 3, True)
    assert data.classes == synthetic.CLASSES
    assert (data.train.num_samples, len(data.train), data.test.num_samples, len(data.test)) == (200, 4, 100, 2)
    images, targets = collect(data.train.epoch(0))
    assert images.shape == (200, 3, 32, 32) and images.dtype == torch.float32 and targets.dtype == torch.int64
    assert torch.bincount(targets).tolist() == [20] * 10
    test_images, test_labels = collect(data.test)
    assert torch.equal(test_images, collect(data.test)[0])  # fixed order, no augmentation
    assert torch.bincount(test_labels).tolist() == [10] * 10
    per_channel = test_images.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 0.1 and (per_channel.std(1) - 1).abs().max() < 0.1


def test_epochs_replay_exactly_and_differ_across_epochs_and_seeds():
    cfg = RunConfig(train_subset=100, test_subset=10, batch_size=32, randaug_n=2, mixup=0.5, cutmix=1.0, reprob=0.5)
    data = build_data(cfg, torch.device("cpu"))
    first, again = collect(data.train.epoch(3)), collect(data.train.epoch(3))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], collect(data.train.epoch(4))[0])
    other_seed = build_data(RunConfig(**{**cfg.to_dict(), "seed": 1}), torch.device("cpu"))
    assert not torch.equal(first[0], collect(other_seed.train.epoch(3))[0])
    # mixup/cutmix: soft targets, one row per image, each a distribution
    assert first[1].shape == (100, 10) and torch.allclose(first[1].sum(1), torch.ones(100))


def test_imagefolder_archive_one_folder_down(tmp_path):
    archive = write_archive(tmp_path, {"train": 6, "test": 2})
    data = build_data(imagefolder(archive), torch.device("cpu"))
    assert data.classes == list(TREE_CLASSES) and data.image_size == 12 and data.resident
    assert (data.train.num_samples, data.test.num_samples) == (18, 6)
    images, labels = collect(data.test)
    raw = images * torch.tensor(data.std).view(3, 1, 1) + torch.tensor(data.mean).view(3, 1, 1)
    red = (raw[:, 0] * 255).round()
    assert torch.equal(red.amin((1, 2)), red.amax((1, 2)))  # the white border was cropped away
    assert torch.equal(red[:, 0, 0], 40 + 60 * labels.float())
    resized = build_data(imagefolder(archive, image_size=8, train_subset=6), torch.device("cpu"))
    assert resized.image_size == 8 and resized.train.num_samples == 6
    assert next(resized.train.epoch(0))[0].shape == (4, 3, 8, 8)


def test_decoded_archive_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    archive = write_archive(tmp_path, {"train": 10, "test": 4})
    decoded = []
    real_decode = datasets.decode_image
    monkeypatch.setattr(datasets, "decode_image", lambda data, size: decoded.append(1) or real_decode(data, size))
    first = build_data(imagefolder(archive, train_subset=9), torch.device("cpu"))
    assert len(decoded) == 9 + 12  # only the subset is decoded

    def fail(*args):
        raise AssertionError("a cache hit must neither decode nor list the archive")

    monkeypatch.setattr(datasets, "decode_image", fail)
    monkeypatch.setattr(datasets.ImageTree, "_files", property(fail))
    again = build_data(imagefolder(archive, train_subset=9), torch.device("cpu"))
    assert torch.equal(collect(first.test)[0], collect(again.test)[0])
    assert first.mean == again.mean
    monkeypatch.undo()
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    changed = write_archive(tmp_path / "other", {"train": 10, "test": 5}, name=archive.name)
    changed.replace(archive)  # same path, new content: a new cache entry
    assert build_data(imagefolder(archive, train_subset=9), torch.device("cpu")).test.num_samples == 15


def test_streamed_folder_gives_the_same_batches_as_the_resident_path(tmp_path):
    write_tree(tmp_path / "tree", {"train": 5, "val": 3})  # val stands in for test
    cfg = imagefolder(tmp_path / "tree", scale=0.6, hflip=True, randaug_n=1)
    resident = build_data(cfg, torch.device("cpu"))
    streamed = build_data(cfg, torch.device("cpu"), resident_bytes=0, workers=2)
    assert resident.resident and not streamed.resident
    assert (streamed.num_classes, streamed.image_size, len(streamed.train)) == (3, 12, 4)

    def pixels(data, images):  # undo each path's own normalisation
        return images * torch.tensor(data.std).view(3, 1, 1) + torch.tensor(data.mean).view(3, 1, 1)

    for loader in ("test", "train"):
        batches = [(resident, resident.test), (streamed, streamed.test)]
        if loader == "train":
            batches = [(resident, resident.train.epoch(2)), (streamed, streamed.train.epoch(2))]
        (ours_images, ours_labels), (their_images, their_labels) = (collect(b) for _, b in batches)
        assert torch.equal(ours_labels, their_labels)
        assert torch.allclose(pixels(resident, ours_images), pixels(streamed, their_images), atol=1e-5)


def test_shared_cifar10_jpeg_archive_subset(cifar10_jpeg):
    data = build_data(imagefolder(cifar10_jpeg, train_subset=50, test_subset=20, batch_size=25), torch.device("cpu"))
    assert data.classes == CIFAR_CLASSES and data.image_size == 32
    assert (data.train.num_samples, data.test.num_samples, len(data.train)) == (50, 20, 2)
    assert torch.bincount(collect(data.test)[1]).tolist() == [2] * 10


def test_cifar10_offline_is_a_one_line_data_error_and_leaves_no_folder(tmp_path, monkeypatch):
    def offline(url, download_root, *args, **kwargs):
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision's download does before it fails
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    data_root = tmp_path / "cifar"
    with pytest.raises(DataError) as error:
        build_data(RunConfig(dataset="cifar10", data_root=str(data_root)), torch.device("cpu"))
    message = str(error.value)
    assert "\n" not in message and "cifar-10-batches-py" in message and "data_root" in message
    assert "imagefolder" in message  # says how to use the shared copy instead
    assert not data_root.exists()


def test_bad_data_roots_and_sizes_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_data(imagefolder(tmp_path / "missing"), torch.device("cpu"))
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no train/<class>/<image>"):
        build_data(imagefolder(tmp_path / "flat"), torch.device("cpu"))
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    with pytest.raises(ConfigError, match="patch_size=16"):
        build_data(imagefolder(tmp_path / "tree", patch_size=16), torch.device("cpu"))
    (tmp_path / "tree" / "test" / "dog" / "000.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode test/dog/000.png"):
        build_data(imagefolder(tmp_path / "tree"), torch.device("cpu"))


def test_batches_equal_the_per_batch_index_copies_they_replace():
    """The epoch's index now reaches the device once; its batches must be the ones the per-batch copy gave."""
    cfg = RunConfig(train_subset=150, test_subset=70, batch_size=32, randaug_n=2, randaug_m=12, mixup=0.5)
    data = build_data(cfg, torch.device("cpu"))
    resident = data.train.images
    order = torch.randperm(150, generator=torch.Generator().manual_seed(derived_seed(cfg.seed, 2, "order")))
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, 2, "augment"))
    expected = [data.train.augment(resident.images[i], resident.labels[i], gen) for i in order.split(32)]
    got = list(data.train.epoch(2))
    assert [len(t) for _, t in got] == [32, 32, 32, 32, 22]
    for (images, targets), (want_images, want_targets) in zip(got, expected, strict=True):
        assert torch.equal(images, want_images) and torch.equal(targets, want_targets)
    test_images = torch.cat([images for images, _ in data.test])
    assert torch.equal(test_images, normalise(data.test.images.images, data.test.mean, data.test.std))


def test_compiled_runs_drop_the_last_partial_train_batch_only():
    eager = build_data(RunConfig(train_subset=150, test_subset=70, batch_size=32), torch.device("cpu"))
    compiled = build_data(RunConfig(train_subset=150, test_subset=70, batch_size=32, compile=True), "cpu")
    assert (len(eager.train), len(compiled.train)) == (5, 4)
    assert [len(t) for _, t in compiled.train.epoch(0)] == [32] * 4
    first = next(compiled.train.epoch(0))[0]
    assert torch.equal(first, next(eager.train.epoch(0))[0])  # the same images, the same draws, minus the tail
    assert len(compiled.test) == len(eager.test) == 3  # every test image is still evaluated
    small = build_data(RunConfig(train_subset=20, test_subset=10, batch_size=32, compile=True), "cpu")
    assert [len(t) for _, t in small.train.epoch(0)] == [20]  # no full batch: keep the one there is
