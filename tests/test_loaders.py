"""Loaders: the device-resident and the DataLoader paths, normalisation, (seed, epoch) replay, the patch check on
the loaded images, and one load of a run's data per process."""

import pytest
import torch
from conftest import imagefolder, write_tree

from ablations.config import ConfigError, RunConfig
from ablations.data import loaders, sources, synthetic
from ablations.data import tree as tree_module
from ablations.data.augment import WORKER_STEPS, normalise
from ablations.data.loaders import build_data, derived_seed
from ablations.sweep.plan import data_record


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = zip(*batches, strict=True)
    return torch.cat(images), torch.cat(targets)


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


def test_a_streamed_folder_has_the_resident_paths_labels_and_device_augmentation(tmp_path):
    write_tree(tmp_path / "tree", {"train": 5, "val": 3})  # val stands in for test
    cfg = imagefolder(tmp_path / "tree", scale=0.6, hflip=True, randaug_n=1)
    resident = build_data(cfg, torch.device("cpu"))
    streamed = build_data(cfg, torch.device("cpu"), resident_bytes=0, workers=0)
    assert resident.resident and not streamed.resident
    assert (streamed.num_classes, streamed.image_size, len(streamed.train)) == (3, 12, 4)
    assert torch.equal(collect(resident.test)[1], collect(streamed.test)[1])
    assert torch.equal(collect(resident.train.epoch(2))[1], collect(streamed.train.epoch(2))[1])
    # The workers crop and flip; the device does the rest of the recipe (here RandAugment), not a second crop.
    assert streamed.worker_steps == streamed.train.augment.done == WORKER_STEPS == {"crop", "flip"}
    assert resident.worker_steps == resident.train.augment.done == frozenset()


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


def test_a_patch_larger_than_the_loaded_images_is_a_config_error(tmp_path):
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})  # 12 px images: only known once loaded
    with pytest.raises(ConfigError, match="patch_size=16 is not accepted: larger than the 12x12 images in data_root"):
        build_data(imagefolder(tmp_path / "tree", patch_size=16), torch.device("cpu"))


def test_a_worker_keeps_the_resident_data_between_runs_on_the_same_data(monkeypatch):
    cfg = RunConfig(train_subset=64, test_subset=32, batch_size=16)
    first = build_data(cfg, "cpu")

    def loaded_splits(*args):
        raise AssertionError("the kept data must be used")

    monkeypatch.setattr(loaders, "loaded_splits", loaded_splits)
    again = build_data(RunConfig(**{**cfg.to_dict(), "lr": 0.1, "seed": 3}), "cpu")  # another run, same data
    assert again.train.images is first.train.images and again.mean == first.mean
    with pytest.raises(AssertionError, match="the kept data must be used"):
        build_data(RunConfig(**{**cfg.to_dict(), "train_subset": 48}), "cpu")  # other data: loaded afresh


def test_augmentation_never_changes_the_kept_images():
    heavy = dict(scale=0.35, hflip=True, randaug_n=2, randaug_m=12, jitter=0.4, reprob=0.25, mixup=0.8, cutmix=1.0)
    cfg = RunConfig(train_subset=64, test_subset=32, batch_size=16, **heavy)
    data = build_data(cfg, "cpu")
    before = data.train.images.images.clone(), data.test.images.images.clone()
    for epoch in range(2):
        collect(data.train.epoch(epoch))
    collect(iter(data.test))
    assert torch.equal(data.train.images.images, before[0]) and torch.equal(data.test.images.images, before[1])


@pytest.mark.parametrize("resident_bytes", ["0", ""], ids=["streamed", "held"])
def test_a_runs_check_and_its_training_share_one_load_of_its_data(tmp_path, monkeypatch, resident_bytes):
    write_tree(tmp_path / "tree", {"train": 4, "val": 2})
    monkeypatch.setenv(sources.RESIDENT_ENV, resident_bytes)
    walks = []
    walk = tree_module.image_names
    monkeypatch.setattr(tree_module, "image_names", lambda root: walks.append(root) or walk(root))
    cfg = imagefolder(tmp_path / "tree", image_size=8)
    record = data_record(cfg.with_absolute_data_root())  # the check before the run (the sweep's plan, SLURM's job)
    data = build_data(cfg, "cpu", workers=0)
    assert len(walks) == 1 and data.resident == (resident_bytes == "") and data.image_size == record["image_size"]
    # Streamed: the next run of a sweep's worker on the same data reads the same files; held: on the device now
    # (loaders._kept), the process let go of its host copy.
    sources.loaded_splits(cfg, sources.resident_limit())
    assert len(walks) == (2 if data.resident else 1)
    assert (
        len(build_data(imagefolder(tmp_path / "tree", image_size=8, train_subset=6), "cpu", workers=0).train.images)
        == 6
    )
    assert len(walks) == (3 if data.resident else 2)  # other data: read
    data_record(cfg)
    assert len(walks) == (4 if data.resident else 3)  # a check reads the data as it is now
