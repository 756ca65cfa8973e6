"""The streaming path: ImageNet-layout folders and WebDataset shards read by index, training crops cut from the
full-size file and replayed from (seed, epoch, index), the eval transform, decode=cpu|gpu|auto, bad images and
empty classes (error or skip), the data record, the loader's log line; and, slow, runs trained through it."""

import io
import math
import os
import shutil
import tarfile

import numpy as np
import pytest
import torch
from helpers import IMAGENET_CLASSES, read_json, write_imagenet_tree
from PIL import Image

from ablations import run
from ablations.config import RunConfig
from ablations.data import DataError, make_shards, shards
from ablations.data.loaders import build_data, skipped_note
from ablations.data.sources import load_splits
from ablations.data.stream import crop_seed, draw_crop, eval_cut, resolve_decode
from convmixer.registry import CONVMIXER_EVAL
from convmixer.transforms import EvalTransform

CPU = torch.device("cpu")


def streamed(root, **overrides) -> RunConfig:
    values = dict(dataset="imagefolder", data_root=str(root), image_size=16, patch_size=4, batch_size=4, scale=0.08,
                  randaug_n=0, jitter=0.0, reprob=0.0)  # fmt: skip
    return RunConfig(**{**values, **overrides})


def pixels(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batches, strict=True)
    return torch.cat(images), torch.cat(labels)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream") / "imagenet"
    write_imagenet_tree(root, {"train": 7, "val": 2})  # grayscale: image 4; CMYK: image 6
    return root


@pytest.fixture(scope="module")
def shard_folder(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "imagenet-shards"
    make_shards.write_shards(tree, out, per_shard=8)
    return out


def test_shards_hold_the_webdataset_layout_with_class_names(shard_folder):
    names = sorted(path.name for path in shard_folder.iterdir())
    assert names == ["classes.txt", "train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    with tarfile.open(shard_folder / "train-000000.tar") as tar:
        members = tar.getnames()
        assert members[:2] == ["n01440764/n01440764_0.JPEG", "n01440764/n01440764_0.cls"]
        assert tar.extractfile(members[1]).read() == b"0"
    assert (shard_folder / "classes.txt").read_text().split() == list(IMAGENET_CLASSES)


def test_the_same_images_in_a_folder_and_in_shards_give_the_same_pixels(tree, shard_folder):
    folder = build_data(streamed(tree), CPU, resident_bytes=0, workers=0)
    sharded = build_data(streamed(shard_folder), CPU, resident_bytes=0, workers=0)
    assert not folder.resident and not sharded.resident and sharded.classes == folder.classes == list(IMAGENET_CLASSES)
    for ours, theirs in ((folder.train.epoch(1), sharded.train.epoch(1)), (folder.test, sharded.test)):
        (a, a_labels), (b, b_labels) = pixels(ours), pixels(theirs)
        assert torch.equal(a, b) and torch.equal(a_labels, b_labels)


def test_shards_named_with_a_prefix_are_read_and_a_folder_without_the_naming_rule_is_told_it(shard_folder, tmp_path):
    prefixed, unsplit = tmp_path / "prefixed", tmp_path / "unsplit"
    prefixed.mkdir(), unsplit.mkdir()
    for path in shard_folder.iterdir():
        shutil.copy(path, prefixed / (path.name if path.suffix == ".txt" else f"imagenet-{path.name}"))
        shutil.copy(path, unsplit / path.name.replace("train-", "shard-").replace("val-", "shard-val"))
    ours, theirs = (build_data(streamed(root), CPU, resident_bytes=0, workers=0) for root in (shard_folder, prefixed))
    assert theirs.classes == ours.classes and len(theirs.train.images.files) == len(ours.train.images.files)
    (a, a_labels), (b, b_labels) = pixels(ours.test), pixels(theirs.test)
    assert torch.equal(a, b) and torch.equal(a_labels, b_labels)
    with pytest.raises(DataError, match=r"nor shards named \[<prefix>-\]train-NNNNNN\.tar \(six digits"):
        build_data(streamed(unsplit), CPU, resident_bytes=0, workers=0)


def test_a_training_crop_depends_on_seed_epoch_and_index_only(tree):
    data = build_data(streamed(tree), CPU, resident_bytes=0, workers=0)
    files = data.train.images.files
    first = files[(7, 3)]
    assert torch.equal(first.image, files[(7, 3)].image)  # read again, alone, in another order: the same crop
    assert not torch.equal(first.image, files[(8, 3)].image)  # another epoch's seed
    epoch = pixels(data.train.epoch(2))[0]
    assert torch.equal(epoch, pixels(data.train.epoch(2))[0]) and not torch.equal(epoch, pixels(data.train.epoch(3))[0])
    crop = draw_crop(375, 500, 0.08, True, crop_seed(123, 4))
    assert crop == draw_crop(375, 500, 0.08, True, crop_seed(123, 4))
    assert 0.08 * 375 * 500 * 0.9 <= crop.height * crop.width <= 375 * 500 and crop.top + crop.height <= 375


def test_random_interpolation_resizes_each_training_crop_bilinearly_or_bicubically_as_pillow(tree):
    """train_interpolation=random: each crop draws its resize (about half bicubic), and the worker's image is Pillow's
    resize of that crop with that filter, then the flip."""
    assert not draw_crop(375, 500, 0.08, True, 9).bicubic  # without the choice: bilinear, and no draw
    assert {draw_crop(375, 500, 0.08, True, seed, True).bicubic for seed in range(16)} == {False, True}
    files = build_data(
        streamed(tree, train_interpolation="random"), CPU, resident_bytes=0, workers=0
    ).train.images.files
    filters = set()
    for i in range(len(files)):
        sample = files[(5, i)]
        crop, filters = sample.crop, filters | {sample.crop.bicubic}
        resample = Image.Resampling.BICUBIC if crop.bicubic else Image.Resampling.BILINEAR
        box = (crop.left, crop.top, crop.left + crop.width, crop.top + crop.height)
        with Image.open(tree / files.paths[i]) as image:
            expected = image.convert("RGB").resize((16, 16), resample, box=box)
        expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if crop.flip else expected
        assert torch.equal(sample.image, torch.from_numpy(np.array(expected)).permute(2, 0, 1))
    assert filters == {False, True}


def test_test_images_get_timms_eval_transform(tree):
    """Exactly EvalTransform's resize and crop with Pillow; within a few grey levels with torchvision's decoder."""
    files = build_data(streamed(tree), CPU, resident_bytes=0, workers=0).test.images.files
    with Image.open(tree / files.paths[0]) as image:
        expected = torch.from_numpy(
            np.array(EvalTransform(16, CONVMIXER_EVAL).geometry()(image.convert("RGB")))
        ).permute(2, 0, 1)
    assert torch.equal(files[(0, 0)].image, expected)
    files.cpu_decoder = "torchvision"
    assert (files[(0, 0)].image.float() - expected.float()).abs().mean() < 3


@pytest.mark.parametrize("size", [224, 160, 32])
def test_the_device_paths_eval_cut_sizes_images_as_timm_and_matches_its_pixels(size):
    """eval_cut (decode=gpu's test path, here on CPU tensors) resizes to the shape torchvision's Resize(int) gives a
    PIL image, the rule timm's eval transform applies (the longer side truncated: 500 x 375 -> 310 x 233 at 224),
    and crops at its offsets: on noise its pixels are timm's up to the resize arithmetic."""
    rng = np.random.default_rng(size)
    for height, width in ((375, 500), (480, 640), (900, 1200), (300, 257), (777, 333), (233, 233), (41, 97)):
        pixels_hwc = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        geometry = EvalTransform(size, CONVMIXER_EVAL).geometry()
        expected = torch.from_numpy(np.array(geometry(Image.fromarray(pixels_hwc)))).permute(2, 0, 1).int()
        difference = (eval_cut(torch.from_numpy(pixels_hwc).permute(2, 0, 1).contiguous(), size).int() - expected).abs()
        # On noise a size or offset 1 px off is ~75 grey levels on average; the resize arithmetic alone is < 1.
        assert difference.float().mean() < 1 and difference.max() < 32, (height, width, difference.float().mean())


def test_grayscale_and_cmyk_jpegs_come_out_rgb(tree):
    files = build_data(streamed(tree), CPU, resident_bytes=0, workers=0).train.images.files
    modes = {Image.open(tree / path).mode for path in files.paths}
    assert modes == {"L", "RGB", "CMYK"}
    assert all(files[(0, i)].image.shape == (3, 16, 16) and not files[(0, i)].problem for i in range(len(files)))


@pytest.mark.parametrize("interpolation", ["bilinear", "random"])
def test_decode_on_the_device_gives_the_pixels_of_its_decoder_in_the_workers(tree, interpolation):
    """decode=gpu on a CPU device runs the device path (the worker reads, the device decodes and cuts) with
    torchvision's CPU decoder: the pixels of that decoder in the workers, and within a few grey levels of decode=cpu
    (Pillow)."""
    pillow = build_data(streamed(tree, train_interpolation=interpolation), CPU, resident_bytes=0, workers=0)
    device = build_data(
        streamed(tree, decode="gpu", train_interpolation=interpolation), CPU, resident_bytes=0, workers=0
    )
    workers = build_data(streamed(tree, train_interpolation=interpolation), CPU, resident_bytes=0, workers=0)
    workers.train.images.files.cpu_decoder = workers.test.images.files.cpu_decoder = "torchvision"
    for by_workers, by_device, by_pillow in (
        (workers.train.epoch(0), device.train.epoch(0), pillow.train.epoch(0)),
        (workers.test, device.test, pillow.test),
    ):
        (a, _), (b, _), (c, _) = pixels(by_workers), pixels(by_device), pixels(by_pillow)
        assert torch.equal(a, b) and (a - c).abs().mean() < 0.1  # normalised units: about 6 grey levels


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvjpeg_decodes_and_cuts_on_the_gpu_within_a_few_grey_levels_of_pillow(tree):
    """decode=auto on CUDA is nvJPEG where torchvision has it; its batches match Pillow's up to the decoders."""
    cuda = torch.device("cuda")
    pillow = build_data(streamed(tree), cuda, resident_bytes=0, workers=0)
    nvjpeg = build_data(streamed(tree, decode="auto"), cuda, resident_bytes=0, workers=0)
    assert nvjpeg.train.images.files.decode == "gpu"
    for ours, theirs in ((pillow.train.epoch(0), nvjpeg.train.epoch(0)), (pillow.test, nvjpeg.test)):
        (a, a_labels), (b, b_labels) = pixels(ours), pixels(theirs)
        assert b.device.type == "cuda" and torch.equal(a_labels, b_labels) and (a - b).abs().mean() < 0.1


def test_decode_auto_is_gpu_only_where_cuda_decodes():
    assert resolve_decode("auto", CPU) == "cpu"
    assert resolve_decode("auto", torch.device("cuda"), available=lambda: True) == "gpu"
    assert resolve_decode("auto", torch.device("cuda"), available=lambda: False) == "cpu"
    assert resolve_decode("cpu", torch.device("cuda"), available=lambda: True) == "cpu"


def test_the_resident_limit_comes_from_the_environment_or_is_one_line(monkeypatch, tree):
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")
    assert not load_splits(streamed(tree)).resident
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "4G")
    with pytest.raises(DataError, match=r"^CONVMIXER_RESIDENT_BYTES='4G' is not accepted: expected a number of bytes"):
        load_splits(streamed(tree))


def test_new_keys_at_their_defaults_keep_every_run_id():
    cfg = RunConfig()
    assert cfg.run_id() == RunConfig(decode="cpu", bad_images="error", train_interpolation="bilinear").run_id()
    assert cfg.run_id() != RunConfig(train_interpolation="random").run_id()
    assert cfg.run_id() != RunConfig(decode="gpu").run_id() != RunConfig(bad_images="skip").run_id()


def copy_tree(tree, tmp_path):
    return shutil.copytree(tree, tmp_path / "imagenet")


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda path: path.write_bytes(path.read_bytes()[:300]), "cannot decode"),  # truncated
        (lambda path: path.write_bytes(b"not a jpeg"), "not an image file Pillow can identify"),
        (lambda path: Image.new("RGB", (1, 1)).save(path, "JPEG"), "1x1, under the 8 px"),
    ],
    ids=["truncated", "garbage", "1x1"],
)
def test_a_bad_image_is_one_line_naming_it_or_skipped_and_counted(tree, tmp_path, damage, why):
    root = copy_tree(tree, tmp_path)
    bad = root / "train" / IMAGENET_CLASSES[1] / f"{IMAGENET_CLASSES[1]}_2.JPEG"
    damage(bad)
    data = build_data(streamed(root), CPU, resident_bytes=0, workers=0)
    with pytest.raises(DataError) as error:
        pixels(data.train.epoch(0))
    message = str(error.value)
    assert "\n" not in message and f"train/{IMAGENET_CLASSES[1]}/{bad.name}" in message and why in message
    skipping = build_data(streamed(root, bad_images="skip"), CPU, resident_bytes=0, workers=0)
    images, labels = pixels(skipping.train.epoch(0))
    assert len(images) == len(labels) == 20  # 21 images, one left out
    note = skipped_note(skipping.skipped())
    assert note.startswith("bad_images=skip: 1 images skipped so far (") and bad.name in note


def test_the_log_names_the_first_three_skipped_images():
    assert skipped_note(["a", "b", "c", "d"]) == "bad_images=skip: 4 images skipped so far (a; b; c; ...)"


def test_a_huge_image_is_refused_before_its_pixels_are_decoded_and_named_with_its_shard(shard_folder, monkeypatch):
    from ablations.data import decode

    monkeypatch.setattr(decode, "MAX_PIXELS", 40 * 40)  # the generated images are up to 61x54
    data = build_data(streamed(shard_folder), CPU, resident_bytes=0, workers=0)
    with pytest.raises(DataError, match=r"cannot use train/.*\.JPEG \(in train-00000\d\.tar\): it is \d+x\d+, over"):
        pixels(data.train.epoch(0))


def test_an_empty_class_folder_is_an_error_or_skipped_and_recorded(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    (root / "train" / "n09999999").mkdir()
    (root / "val" / "n09999999").mkdir()
    with pytest.raises(DataError, match=r"the class folder train/n09999999/ \(and 1 more\) .* holds no image"):
        load_splits(streamed(root), resident_bytes=0)
    splits = load_splits(streamed(root, bad_images="skip"), resident_bytes=0)
    assert splits.classes == list(IMAGENET_CLASSES)
    assert splits.identity()["skipped_classes"] == ["train/n09999999/", "val/n09999999/"]


def test_the_streamed_record_hashes_names_sizes_and_a_sample_of_bytes(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    record = load_splits(streamed(root), resident_bytes=0).identity()
    assert (record["train_images"], record["test_images"]) == (21, 6) and "skipped_classes" not in record
    victim = root / "val" / IMAGENET_CLASSES[0] / f"{IMAGENET_CLASSES[0]}_0.JPEG"
    victim.write_bytes(victim.read_bytes() + b"\0")  # one byte more: its size changes
    changed = load_splits(streamed(root), resident_bytes=0).identity()
    assert changed["train_sha256"] == record["train_sha256"] and changed["test_sha256"] != record["test_sha256"]


def test_a_cut_shard_or_a_sample_without_its_class_is_one_line(shard_folder, tmp_path):
    cut = shutil.copytree(shard_folder, tmp_path / "cut")
    shard = cut / "train-000001.tar"
    with tarfile.open(shard) as tar:
        tar.getmembers()
        end = tar.offset  # where the last member ends: the end-of-archive marker follows
    shard.write_bytes(shard.read_bytes()[:end])  # cut on a member boundary, which tarfile reads without a word
    with pytest.raises(DataError, match="the shard .*train-000001.tar is cut short"):
        load_splits(streamed(cut), resident_bytes=0)
    lost = shutil.copytree(shard_folder, tmp_path / "lost")
    with tarfile.open(lost / "val-000009.tar", "w") as tar:
        jpeg = io.BytesIO()
        Image.new("RGB", (20, 20)).save(jpeg, "JPEG")
        info = tarfile.TarInfo("n01484850/x.JPEG")
        info.size = len(jpeg.getvalue())
        tar.addfile(info, io.BytesIO(jpeg.getvalue()))
    with pytest.raises(DataError, match=r"the sample 'n01484850/x' of .*val-000009.tar has no .cls member"):
        load_splits(streamed(lost), resident_bytes=0)


def test_a_shards_index_is_read_once_then_cached_until_the_shard_changes(shard_folder, tmp_path, monkeypatch):
    folder = shutil.copytree(shard_folder, tmp_path / "shards")
    first = shards.ShardSet(folder)

    def no_scan(path):
        raise AssertionError(f"{path} scanned again")

    monkeypatch.setattr(shards, "scan", no_scan)
    assert shards.ShardSet(folder).index == first.index  # every shard's index from the cache
    changed = folder / "val-000000.tar"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="val-000000.tar scanned again"):
        shards.ShardSet(folder)


def test_the_loader_says_in_one_line_how_fast_it_was_and_when_it_held_the_model_back(tree):
    data = build_data(streamed(tree), CPU, resident_bytes=0, workers=0)
    pixels(data.train.epoch(0))
    line = data.train.images.report()
    assert line.startswith("loader ") and " img/s (1 workers), model " in line and "waited for batches" in line
    times = data.train.images.times
    assert not line.endswith("bottleneck")  # a wait under half a second is noise, not a bottleneck
    times.wait_s, times.wall_s = 5.0, 10.0
    assert data.train.images.report().endswith(": the loader is the bottleneck")


def test_the_shards_command_writes_shards_and_refuses_bad_input_in_one_line(tree, tmp_path, capsys):
    assert make_shards.cli([str(tree), str(tmp_path / "out"), "--per-shard", "100"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["classes.txt", "train-000000.tar", "val-000000.tar"]
    assert make_shards.cli([str(tree), str(tmp_path / "out")]) == 2
    assert make_shards.cli([str(tree), str(tmp_path / "other"), "--per-shard", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "holds shards already" in err[0] and "--per-shard=0 is not accepted" in err[1]


# --- slow: whole runs through the streaming path, with DataLoader worker processes ---


def tiny_run(root, **overrides) -> RunConfig:
    return streamed(root, dim=16, depth=1, kernel_size=3, epochs=2, lr=0.01, randaug_n=1, mixup=0.5, **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["folder", "shards"])
def test_a_sweep_trains_end_to_end_through_the_stream(tree, shard_folder, tmp_path, monkeypatch, layout):
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")  # stream a dataset that would fit
    root = tree if layout == "folder" else shard_folder
    keys = "dataset=imagefolder,image_size=16,patch_size=4,batch_size=4,dim=16,depth=1,epochs=2,scale=0.08"
    code = run.main(["--preset", "smoke", "--set", keys, "--data-root", str(root), "--out", str(tmp_path / "sweep"),
                     "--devices", "cpu", "--jobs-per-device", "1"])  # fmt: skip
    assert code == 0
    [run_dir] = (tmp_path / "sweep" / "runs").iterdir()
    assert read_json(run_dir / "metrics.json")["epochs_completed"] == 2
    log = (run_dir / "log.txt").read_text()
    assert log.count(" data: loader ") == 2 and "model" in log


@pytest.mark.slow
def test_a_resumed_streamed_run_equals_an_uninterrupted_one(shard_folder, tmp_path, monkeypatch):
    from ablations.engine.train import train_run

    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")
    cfg = tiny_run(shard_folder)
    (tmp_path / "straight").mkdir()
    straight = train_run(cfg, tmp_path / "straight", device="cpu", log=lambda line: None)

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        raise Stop

    (tmp_path / "resumed").mkdir()
    with pytest.raises(Stop):
        train_run(cfg, tmp_path / "resumed", device="cpu", log=lambda line: None, on_epoch=stop)
    resumed = train_run(cfg, tmp_path / "resumed", device="cpu", log=lambda line: None)
    timing = ("train_time_s", "train_images_per_s", "epoch_time_s", "wall_time_s", "finished_at", "peak_memory_mb")
    for key in ("test_acc", "test_loss", "train_acc", "train_loss"):
        assert resumed[key] == straight[key]
    history = [{k: v for k, v in r.items() if k not in timing} for r in read_json(tmp_path / "resumed/history.json")]
    assert history == [
        {k: v for k, v in r.items() if k not in timing} for r in read_json(tmp_path / "straight/history.json")
    ]


@pytest.mark.slow
def test_the_loader_benchmark_measures_each_layout_and_decoder(tmp_path):
    from benchmarks import loader

    assert loader.cli(["--images", "10", "--repeats", "1", "--size", "32", "--out", str(tmp_path / "loader.json")]) == 0
    result = read_json(tmp_path / "loader.json")
    rows = {(row["layout"], row["decoder"]): row["images_per_s"] for row in result["rows"]}
    decoders = [name for name, _, _ in loader.variants("cpu")]
    assert set(rows) == {(layout, decoder) for layout in ("folder", "shards") for decoder in decoders}
    assert all(speed > 0 for speed in rows.values()) and result["size"] == 32
    assert "| shards | Pillow, in the worker |" in (tmp_path / "loader.md").read_text()


def streamed_history(sweep) -> list[dict]:
    [run_dir] = (sweep / "runs").iterdir()
    untimed = ("train_time_s", "train_images_per_s", "epoch_time_s")
    return [{k: v for k, v in r.items() if k not in untimed} for r in read_json(run_dir / "history.json")]


@pytest.mark.slow
def test_two_synced_processes_train_the_stream_as_one_process_does(tree, tmp_path, monkeypatch):
    """Crops and flips are drawn per image from (seed, epoch, index) and the device draws nothing here (smoke: no
    RandAugment, jitter, erasing, mixup or cutmix), so with sync_bn 2 processes compute what 1 does, as on
    resident data (tests/test_distributed.py): 18 images in batches of 6, 3 per rank. A truncated test image, in
    rank 1's share of the test set, is skipped, and counted in rank 0's metrics.json."""
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")
    root = copy_tree(tree, tmp_path)
    bad = root / "val" / IMAGENET_CLASSES[2] / f"{IMAGENET_CLASSES[2]}_1.JPEG"  # the last of 6: rank 1's 3
    bad.write_bytes(bad.read_bytes()[:300])
    make_shards.write_shards(root, tmp_path / "shards", per_shard=8)
    keys = "dataset=imagefolder,image_size=16,patch_size=4,batch_size=6,train_subset=18,dim=16,depth=1,epochs=2"
    sweeps = {procs: tmp_path / f"procs{procs}" for procs in (1, 2)}
    for procs, out in sweeps.items():
        assert run.main(["--preset", "smoke", "--set", f"{keys},scale=0.08,bad_images=skip", "--data-root",
                         str(tmp_path / "shards"), "--out", str(out), "--devices", "cpu", "--jobs-per-device", "1",
                         "--procs-per-run", str(procs)]) == 0  # fmt: skip
    one, two = streamed_history(sweeps[1]), streamed_history(sweeps[2])
    assert len(one) == len(two) == 2
    for a, b in zip(two, one, strict=True):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-5)
        assert math.isclose(a["test_loss"], b["test_loss"], rel_tol=1e-5)
        assert a["test_acc"] == b["test_acc"] and a["train_acc"] == b["train_acc"]
    for procs, out in sweeps.items():
        [run_dir] = (out / "runs").iterdir()
        metrics = read_json(run_dir / "metrics.json")
        assert metrics["skipped_images"] == 1 and bad.name in metrics["skipped_examples"][0]
        assert metrics.get("processes", 1) == procs
    assert "x 2 processes" in (run_dir / "log.txt").read_text()


@pytest.mark.slow
def test_images_skipped_in_both_splits_are_counted_in_metrics_json_also_across_a_resume(tree, tmp_path, monkeypatch):
    from ablations.engine.train import train_run
    from analysis.load import check_done_metrics

    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")
    root = copy_tree(tree, tmp_path)
    bad = [root / split / IMAGENET_CLASSES[1] / f"{IMAGENET_CLASSES[1]}_1.JPEG" for split in ("train", "val")]
    for path in bad:
        path.write_bytes(path.read_bytes()[:300])  # truncated
    cfg = tiny_run(root, bad_images="skip")
    lines = []

    def stop(record: dict) -> None:  # killed after the last checkpoint, before metrics.json: the rerun trains none
        if record["epoch"] == cfg.epochs:
            raise KeyboardInterrupt

    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
    straight = train_run(cfg, tmp_path / "straight", device="cpu", log=lines.append)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "resumed", device="cpu", log=lambda line: None, on_epoch=stop)
    resumed = train_run(cfg, tmp_path / "resumed", device="cpu", log=lambda line: None)
    assert straight["skipped_images"] == resumed["skipped_images"] == 2
    assert resumed["skipped_examples"] == straight["skipped_examples"]
    assert [path.name in " ".join(straight["skipped_examples"]) for path in bad] == [True, True]
    metrics = read_json(tmp_path / "resumed" / "metrics.json")
    assert metrics["skipped_images"] == 2
    check_done_metrics(metrics, tmp_path / "resumed" / "metrics.json")  # the report's reader accepts it
    assert sum("bad_images=skip: 2 images skipped so far" in line for line in lines) == 2


def test_a_batch_left_empty_by_skipped_images_is_skipped_and_counted_and_an_all_bad_split_is_one_line(tree, tmp_path):
    from ablations.engine.train import Trainer

    root = copy_tree(tree, tmp_path)
    for split in ("train", "val"):
        bad = root / split / IMAGENET_CLASSES[1] / f"{IMAGENET_CLASSES[1]}_1.JPEG"
        bad.write_bytes(b"not a jpeg")
    cfg = streamed(root, dim=16, depth=1, kernel_size=3, bad_images="skip", batch_size=1)
    data = build_data(cfg, CPU, resident_bytes=0, workers=0)
    trainer = Trainer(cfg, cfg.model_config(data.num_classes).build(), CPU, None)
    trained = trainer.train_epoch(data.train, 0, progress=False)
    tested = trainer.evaluate(data.test)
    assert trainer.empty_batches == 2 and len(data.skipped()) == 2  # one per split, batches of one
    assert math.isfinite(trained["train_loss"]) and math.isfinite(tested["test_loss"])
    before = [p.clone() for p in trainer.model.parameters()]
    trainer.train_step(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long), lr=0.1)  # no step alone
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    for path in (root / "val").rglob("*.JPEG"):
        path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="left out every image of the test split") as error:
        trainer.evaluate(build_data(cfg, CPU, resident_bytes=0, workers=0).test)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_rank_whose_slice_is_all_skipped_joins_the_step_and_the_run_finishes(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")
    root = copy_tree(tree, tmp_path)
    (root / "train" / IMAGENET_CLASSES[0] / f"{IMAGENET_CLASSES[0]}_1.JPEG").write_bytes(b"not a jpeg")
    keys = "dataset=imagefolder,image_size=16,patch_size=4,batch_size=2,dim=8,depth=1,epochs=1,bad_images=skip"
    assert run.main(["--preset", "smoke", "--set", keys, "--data-root", str(root), "--out", str(tmp_path / "out"),
                     "--devices", "cpu", "--jobs-per-device", "1", "--procs-per-run", "2"]) == 0  # fmt: skip
    [run_dir] = (tmp_path / "out" / "runs").iterdir()
    assert read_json(run_dir / "metrics.json")["skipped_images"] == 1
    assert "1 empty batches skipped so far" in (run_dir / "log.txt").read_text()
