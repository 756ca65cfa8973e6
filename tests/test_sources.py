"""Sources: synthetic, ImageFolder folder/archive, CIFAR offline, stratified subsets, the decode cache, and the
finished splits `load_splits` hands over (subset and sized for every source)."""

import contextlib
import errno
import io
import json
import os
import re
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TREE_CLASSES, imagefolder, write_archive, write_tree
from PIL import Image, ImageFile, JpegImagePlugin

import ablations.data
from ablations import atomic, run
from ablations.config import RunConfig
from ablations.data import DataError, dataset_label, decode, sources, synthetic
from ablations.data import tree as tree_module
from ablations.data.sources import load_splits, resize_split, stratified_subset
from ablations.data.stream import ImageFiles
from analysis import provenance
from benchmarks import gpu_check, startup, train_speed

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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


def test_every_source_hands_over_a_subset_at_the_run_size(tmp_path):
    archive = write_archive(tmp_path, {"train": 6, "test": 4})
    for cfg in (RunConfig(), imagefolder(archive)):
        native = load_splits(cfg)
        cut = load_splits(RunConfig(**{**cfg.to_dict(), "train_subset": 9, "test_subset": 6, "image_size": 8}))
        assert cut.resident and cut.image_size == 8 and cut.classes == native.classes
        for whole, part, n in ((native.train, cut.train, 9), (native.test, cut.test, 6)):
            assert part.images.shape == (n, 3, 8, 8) and part.images.dtype == torch.uint8
            keep = stratified_subset(whole.labels, n)  # the same images, whichever source they came from
            assert torch.equal(part.labels, whole.labels[keep])
    synthetic_whole = sources.load_synthetic(False)
    expected = resize_split(synthetic_whole.subset(stratified_subset(synthetic_whole.labels, 6)), 8)
    assert torch.equal(load_splits(RunConfig(test_subset=6, image_size=8)).test.images, expected.images)


def test_imagefolder_archive_one_folder_down(tmp_path):
    archive = write_archive(tmp_path, {"train": 6, "test": 2})
    splits = load_splits(imagefolder(archive))
    assert splits.classes == list(TREE_CLASSES) and splits.image_size == 12 and splits.resident
    assert (len(splits.train.labels), len(splits.test.labels)) == (18, 6)
    red = splits.test.images[:, 0]
    assert torch.equal(red.amin((1, 2)), red.amax((1, 2)))  # the white border was cropped away
    assert torch.equal(red[:, 0, 0].long(), 40 + 60 * splits.test.labels)
    resized = load_splits(imagefolder(archive, image_size=8, train_subset=6))
    assert resized.image_size == 8 and resized.train.images.shape == (6, 3, 8, 8)


def test_decoded_archive_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    archive = write_archive(tmp_path, {"train": 10, "test": 4})
    decoded = []
    real_decode = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda data, size: decoded.append(1) or real_decode(data, size))
    first = load_splits(imagefolder(archive, train_subset=9))
    assert len(decoded) == 9 + 12  # only the subset is decoded

    def fail(*args):
        raise AssertionError("a cache hit must neither decode nor list the archive")

    monkeypatch.setattr(decode, "decode_image", fail)
    monkeypatch.setattr(tree_module.ImageTree, "_files", property(fail))
    again = load_splits(imagefolder(archive, train_subset=9))
    assert torch.equal(first.test.images, again.test.images) and torch.equal(first.train.images, again.train.images)
    monkeypatch.undo()
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    changed = write_archive(tmp_path / "other", {"train": 10, "test": 5}, name=archive.name)
    changed.replace(archive)  # same path, new content: a new cache entry
    assert len(load_splits(imagefolder(archive, train_subset=9)).test.labels) == 15


def test_a_folder_too_big_to_hold_is_handed_over_as_files_at_the_run_size(tmp_path):
    write_tree(tmp_path / "tree", {"train": 5, "val": 3})  # val stands in for test
    held = load_splits(imagefolder(tmp_path / "tree", train_subset=6, image_size=8))
    streamed = load_splits(imagefolder(tmp_path / "tree", train_subset=6, image_size=8), resident_bytes=0)
    assert not streamed.resident and (streamed.image_size, streamed.classes) == (8, list(TREE_CLASSES))
    assert (len(streamed.train), len(streamed.test)) == (6, 9)
    # The same files and labels; the pixels are cut per image as they stream (tests/test_stream.py).
    files = ImageFiles(streamed.train, scale=1.0)
    images = torch.stack([files[(0, i)].image for i in range(6)])
    assert images.shape == held.train.images.shape and images.dtype == torch.uint8
    assert torch.equal(streamed.train.labels, held.train.labels)


@pytest.mark.slow  # decodes real JPEGs
def test_shared_cifar10_jpeg_archive_subset(cifar10_jpeg):
    splits = load_splits(imagefolder(cifar10_jpeg, train_subset=50, test_subset=20))
    assert splits.classes == CIFAR_CLASSES and splits.image_size == 32
    assert (len(splits.train.labels), len(splits.test.labels)) == (50, 20)
    assert torch.bincount(splits.test.labels).tolist() == [2] * 10


@pytest.mark.parametrize(
    "dataset, data_root, label",
    [("imagefolder", "../shared/data/cifar10-jpeg.tar.gz", "CIFAR-10 (JPEG q75 copy)"),
     ("imagefolder", ".device-data/cifar10-jpeg.tar.gz", "CIFAR-10 (JPEG q75 copy)"),
     ("imagefolder", "/data/cifar10-jpeg/", "CIFAR-10 (JPEG q75 copy)"),
     ("imagefolder", "/data/pets.tar.gz", "ImageFolder pets.tar.gz"),
     ("imagefolder", "/data/my-cifar10-jpeg", "ImageFolder my-cifar10-jpeg"),
     ("cifar10", "data", "CIFAR-10"), ("cifar100", "data", "CIFAR-100"), ("synthetic", "", "synthetic")],
)  # fmt: skip
def test_the_data_layer_names_the_data(dataset, data_root, label):
    assert dataset_label(dataset, data_root) == label


def test_the_dataset_label_has_one_owner_ablations_data():
    """The JPEG copy must never pass for CIFAR-10: the report and both benchmarks ask ablations.data, none decides."""
    for user in (provenance, train_speed, gpu_check):
        assert user.dataset_label is ablations.data.dataset_label, user.__name__


def test_cifar10_offline_is_a_one_line_data_error_and_leaves_no_folder(tmp_path, monkeypatch):
    def offline(url, download_root, *args, **kwargs):
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision's download does before it fails
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    data_root = tmp_path / "cifar"
    with pytest.raises(DataError) as error:
        load_splits(RunConfig(dataset="cifar10", data_root=str(data_root)))
    message = str(error.value)
    assert "\n" not in message and "cifar-10-batches-py" in message and "data_root" in message
    assert "imagefolder" in message  # says how to use the shared copy instead
    assert not data_root.exists()


def test_bad_data_roots_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(imagefolder(tmp_path / "missing"))
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no train/<class>/<image>"):
        load_splits(imagefolder(tmp_path / "flat"))
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    (tmp_path / "tree" / "test" / "dog" / "000.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode test/dog/000.png"):
        load_splits(imagefolder(tmp_path / "tree"))


def test_a_class_missing_from_test_is_an_error_naming_it(tmp_path):
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    shutil.rmtree(tmp_path / "tree" / "test" / "dog")
    with pytest.raises(DataError, match=r"classes \['dog'\] have images in train/ but none in test/"):
        load_splits(imagefolder(tmp_path / "tree"))


def cut_tar(tmp_path: Path, keep_members: int) -> Path:
    """An uncompressed tar of a small tree, cut right before the header of member `keep_members`."""
    write_tree(tmp_path / "tree", {"train": 4, "test": 2})
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as tar:
        tar.add(tmp_path / "tree", arcname="tiny")
    with tarfile.open(whole) as tar:
        offset = tar.getmembers()[keep_members].offset
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:offset])
    return cut


@pytest.mark.parametrize("keep", [-1, 12])  # the last image gone; the tree cut in the middle of train/
def test_a_tar_cut_at_a_member_boundary_is_an_error_not_a_smaller_dataset(tmp_path, keep):
    with pytest.raises(DataError, match="is cut short: it ends at byte .* without the end-of-archive marker"):
        load_splits(imagefolder(cut_tar(tmp_path, keep)))


def test_unreadable_folders_are_errors_naming_them_not_skipped(tmp_path, monkeypatch):
    """chmod 000 cannot stop root, so the OS's answer (EACCES) is simulated where os.walk asks for it."""
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "cat":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"cannot read the folder .*/cat \(Permission denied\)"):
        load_splits(imagefolder(tmp_path / "tree"))


def test_unreadable_images_and_archives_are_one_line_errors_naming_them(tmp_path, monkeypatch):
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    archive = write_archive(tmp_path / "a", {"train": 2, "test": 1})
    real_read_bytes, real_open = Path.read_bytes, open

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(
        Path, "read_bytes", lambda path: refuse(path) if path.name == "001.png" else real_read_bytes(path)
    )
    with pytest.raises(DataError, match=r"cannot read train/cat/001.png in .* \(Permission denied\)"):
        load_splits(imagefolder(tmp_path / "tree"))
    monkeypatch.setattr(
        "builtins.open", lambda path, *a, **k: refuse(path) if path == archive else real_open(path, *a, **k)
    )
    with pytest.raises(DataError, match=r"cannot read data_root=.*tiny.tar.gz.* \(Permission denied\)"):
        load_splits(imagefolder(archive))


def test_parallel_decoding_equals_decoding_here_and_names_the_first_bad_file(tmp_path, monkeypatch):
    write_tree(tmp_path / "tree", {"train": 5, "test": 1})
    tree = tree_module.ImageTree(tmp_path / "tree")
    names = tree.splits["train"].paths
    here = decode.decode_all(lambda i: tree.read(names[i]), len(names), 8, workers=0)
    forked = decode.decode_all(lambda i: tree.read(names[i]), len(names), 8, workers=2)
    assert here.shape == (15, 3, 8, 8) and np.array_equal(here, forked)
    sizes = decode.image_sizes(lambda i: tree.read(names[i]), len(names), workers=2)
    assert sizes.tolist() == [[16, 12]] * 15  # width, height, read from the headers by forked workers too
    (tmp_path / "tree" / "train" / "dog" / "003.png").write_bytes(b"not an image")
    (tmp_path / "tree" / "train" / "emu" / "001.png").write_bytes(b"not an image")
    monkeypatch.setattr(tree_module, "fork_workers", lambda count, cores: 2)
    with pytest.raises(
        DataError, match=r"cannot decode train/dog/003.png in .*: not an image file Pillow can identify"
    ):
        sources.decode_tree_split(tree, "train", 8, 0)


def test_a_damaged_cache_file_is_rebuilt_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    archive = write_archive(tmp_path, {"train": 3, "test": 2})
    first = load_splits(imagefolder(archive))
    [cached] = (tmp_path / "cache").glob("*train*")
    cached.write_bytes(cached.read_bytes()[:1000])
    again = load_splits(imagefolder(archive))
    assert torch.equal(first.train.images, again.train.images)
    note = capsys.readouterr().err.strip()
    assert note.startswith("note: the cached split") and str(cached) in note and "\n" not in note
    load_splits(imagefolder(archive))
    assert capsys.readouterr().err == ""  # rebuilt: whole again


def test_an_unwritable_cache_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    archive = write_archive(tmp_path, {"train": 3, "test": 2})

    def refuse(dir, prefix, suffix):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dir)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", lambda dir, prefix, suffix: refuse(dir, prefix, suffix))
    with pytest.raises(
        DataError, match=rf"cannot write {tmp_path}/cache/.* \(Permission denied\); set CONVMIXER_CACHE"
    ):
        load_splits(imagefolder(archive))


def test_a_cifar_folder_failing_the_integrity_check_says_so_and_downloads_nothing(tmp_path, monkeypatch):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"damaged")

    def download(*args, **kwargs):
        raise AssertionError("a damaged copy must not trigger a download")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", download)
    with pytest.raises(DataError, match="cifar-10-batches-py fails torchvision's integrity check"):
        load_splits(RunConfig(dataset="cifar10", data_root=str(tmp_path)))


def test_the_startup_benchmark_times_each_start_and_leaves_the_cache_alone(tmp_path, capsys, convmixer_cache):
    archive = write_archive(tmp_path, {"train": 3, "test": 2})
    before = sorted(convmixer_cache.rglob("*"))
    assert startup.cli(["--data-root", str(archive), "--json", str(tmp_path / "startup.json")]) == 0
    figures = json.loads((tmp_path / "startup.json").read_text())
    assert figures["images"] == 15 and {"serial_s", "cold_s", "warm_s", "kept_s"} <= set(figures)
    assert re.search(r"cold start \d+\.\d\dx (faster|slower) than serial", capsys.readouterr().out)
    assert sorted(convmixer_cache.rglob("*")) == before


def test_a_decoding_worker_that_dies_is_a_one_line_error(tmp_path, monkeypatch):
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    tree = tree_module.ImageTree(tmp_path / "tree")
    monkeypatch.setattr(tree_module, "fork_workers", lambda count, cores: 2)
    monkeypatch.setattr(decode, "decode_image", lambda data, size: os._exit(9))  # as if SIGKILLed mid-decode
    with pytest.raises(DataError, match=r"a process decoding .*tree died \(out of memory\?\)"):
        sources.decode_tree_split(tree, "train", 8, 0)


def replace_image(path: Path, width: int, height: int) -> None:
    Image.new("RGB", (width, height), (200, 100, 50)).save(path)


def test_the_native_size_is_the_most_common_one_and_an_image_of_another_size_is_named(tmp_path, capsys):
    write_tree(tmp_path / "tree", {"train": 3, "test": 1})  # 12x16 images
    replace_image(tmp_path / "tree" / "train" / "cat" / "000.png", 9, 9)  # sorts first: it used to set the size
    splits = load_splits(imagefolder(tmp_path / "tree"))
    assert splits.image_size == 12 and splits.train.images.shape[1:] == (3, 12, 12)
    note = capsys.readouterr().err.strip()
    assert note.startswith("note: the images in") and "\n" not in note
    assert "not 12 px on their shorter side like most (1 of 12) are resized to it: train/cat/000.png (9x9);" in note
    write_tree(tmp_path / "even", {"train": 1, "test": 1})
    for name in ("cat", "dog", "emu"):  # 3 images of 12 px against 3 of 9: a tie goes to the larger
        replace_image(tmp_path / "even" / "train" / name / "000.png", 9, 20)
    assert tree_module.ImageTree(tmp_path / "even").native_size() == 12


@pytest.mark.parametrize("image_size", [0, 8])  # the header scan of the native size, and the decode
def test_an_image_under_the_minimum_size_is_a_one_line_error_naming_it(tmp_path, image_size):
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    replace_image(tmp_path / "tree" / "train" / "dog" / "001.png", 1, 1)
    with pytest.raises(DataError) as error:
        load_splits(imagefolder(tmp_path / "tree", image_size=image_size))
    assert f"cannot use train/dog/001.png in {tmp_path / 'tree'}: it is 1x1, under the 8 px a side" in str(error.value)


@pytest.mark.parametrize("image_size", [0, 8])
def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path, monkeypatch, recwarn, image_size):
    write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    replace_image(tmp_path / "tree" / "test" / "emu" / "000.png", 40, 30)
    monkeypatch.setattr(decode, "MAX_PIXELS", 32 * 32)  # the 12x16 images pass, the 40x30 one does not
    monkeypatch.setattr(decode.Image, "MAX_IMAGE_PIXELS", 1000)  # as in life, Pillow's warning limit is higher
    real_load = ImageFile.ImageFile.load

    def load(image):
        assert image.size != (40, 30), "the refused image was decoded"
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(DataError, match=r"cannot use test/emu/000.png in .*: it is 40x30, over the limit of 1,024 "):
        load_splits(imagefolder(tmp_path / "tree", image_size=image_size))
    assert not recwarn.list  # no DecompressionBombWarning beside the error


def test_a_decompression_bomb_is_a_one_line_error_and_exit_2_without_a_traceback(tmp_path, monkeypatch):
    write_tree(tmp_path / "tree", {"train": 1, "test": 1})
    monkeypatch.setattr(decode.Image, "MAX_IMAGE_PIXELS", 50)  # 12x16 = 192 pixels: over twice Pillow's limit
    with pytest.raises(DataError, match=r"cannot use train/cat/000.png in .*: it is over Pillow's decompression-bomb"):
        load_splits(imagefolder(tmp_path / "tree", image_size=8))
    out = tmp_path / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = run.cli(["--set", f"dataset=imagefolder,data_root={tmp_path / 'tree'}", "--dry-run", "--out", str(out)])
    [line] = stderr.getvalue().splitlines()
    assert code == 2 and "cannot use train/cat/000.png" in line and "Traceback" not in line


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_a_small_one_exactly(monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).resize((512, 384)).save(encoded, "JPEG")
    drafts = []
    real_draft = decode.Image.Image.draft
    monkeypatch.setattr(
        JpegImagePlugin.JpegImageFile, "draft", lambda image, *args: drafts.append(args) or real_draft(image, *args)
    )
    exact = decode.decode_image(encoded.getvalue(), 32)
    assert not drafts  # 512x384 is under DRAFT_PIXELS: decoded whole, as before
    monkeypatch.setattr(decode, "DRAFT_PIXELS", 1000)
    reduced = decode.decode_image(encoded.getvalue(), 32)
    assert drafts == [("RGB", (32, 32))] and reduced.shape == exact.shape == (3, 32, 32)
    assert np.abs(reduced.astype(int) - exact).mean() < 8  # the same picture, from libjpeg's 1/8-scale decode


def test_several_imagefolder_trees_in_one_data_root_are_refused_naming_them(tmp_path):
    for name in ("cifar", "pets/copy"):
        write_tree(tmp_path / "data" / name, {"train": 1, "test": 1})
    with pytest.raises(DataError) as error:
        load_splits(imagefolder(tmp_path / "data"))
    message = str(error.value)
    assert "holds 2 ImageFolder trees, with cifar/train/, pets/copy/train/; set data_root to the folder" in message
    archive = tmp_path / "two.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "data", arcname="both")
    with pytest.raises(DataError, match="with both/cifar/train/, both/pets/copy/train/; pack one tree per archive"):
        load_splits(imagefolder(archive))


def test_a_tar_member_whose_path_goes_through_dotdot_is_not_data(tmp_path):
    archive = write_archive(tmp_path, {"train": 2, "test": 1})
    image = (tmp_path / "tree" / "train" / "cat" / "000.png").read_bytes()
    with_dotdot = tmp_path / "dotdot.tar"
    with tarfile.open(archive) as source, tarfile.open(with_dotdot, "w") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        member = tarfile.TarInfo("tiny-jpeg/train/cat/../../x.png")
        member.size = len(image)
        tar.addfile(member, io.BytesIO(image))
    tree = tree_module.ImageTree(with_dotdot)
    assert "tiny-jpeg/train/cat/../../x.png" in tarfile.open(with_dotdot).getnames()
    assert (len(tree.splits["train"].paths), len(tree.splits["test"].paths)) == (6, 3)
