"""Helpers that several test files share to run tiny sweeps and look at their result folders: the tiny runs' --set
values, the two tiny sweeps committed in tests/data/ and how they were made, and readers of a sweep's files."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from ablations.config import RunConfig
from ablations.sweep.grid import build_sweep
from ablations.sweep.presets import PRESETS

DATA = Path(__file__).resolve().parent / "data"

# tests/data/tiny-sweep and tiny-study were trained by the runner with these options (+ --devices cpu --out
# tests/data/<name>; then .lock removed; each log.txt names the absolute data_root, written as /path/to/checkout/data);
# test_analysis.py checks, in slow tests, that a fresh sweep still writes the same stores.
TINY_SWEEP_KEYS = "dataset=synthetic,epochs=2,dim=8,depth=1,train_subset=128,test_subset=64,batch_size=64"
TINY_SWEEP_OPTIONS = ("--preset", "smoke", "--grid", "kernel_size=3,5", "--seeds", "3", "--set", TINY_SWEEP_KEYS)
TINY_SWEEP = DATA / "tiny-sweep"
TINY_STUDY_OPTIONS = ("--preset", "smoke", "--vary", "kernel_size=3", "--vary", "patch_size=2", "--seeds", "2",
                      "--set", TINY_SWEEP_KEYS)  # fmt: skip
TINY_STUDY = DATA / "tiny-study"

TINY_VALUES = {"dim": 8, "depth": 1, "patch_size": 4, "train_subset": 200, "test_subset": 100, "batch_size": 50}


def tiny_set(epochs: int = 2, **changes) -> str:
    """A --set value for runs that take about a second on a CPU core."""
    return ",".join(f"{key}={value}" for key, value in {**TINY_VALUES, "epochs": epochs, **changes}.items())


def tiny_configs(grid: list[str], epochs: int = 2) -> list[RunConfig]:
    return build_sweep(PRESETS["smoke"].values, [tiny_set(epochs)], grid, seeds=1).configs()


def read_json(path: Path):
    return json.loads(path.read_text())


def read_summary(root: Path) -> list[dict]:
    with open(root / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def snapshot(root: Path) -> dict:
    """Every file under root with its size, mtime and content hash: equal snapshots mean nothing was touched."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


IMAGENET_CLASSES = ("n01440764", "n01443537", "n01484850")  # WordNet ids, as ImageNet names its class folders


def write_imagenet_tree(root: Path, per_class: dict[str, int], classes: tuple[str, ...] = IMAGENET_CLASSES) -> None:
    """root/{train,val}/<wnid>/<wnid>_<n>.JPEG in ImageNet's layout: JPEGs of varied sizes (24 to 61 px a side) and
    aspect ratios (portrait and landscape), every 5th one grayscale and every 7th CMYK; the mean colour encodes
    the class, a gradient the image's number, so crops and flips show."""
    from PIL import Image

    for split, count in per_class.items():
        for label, wnid in enumerate(classes):
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                width, height = 24 + (i * 7 + label * 11) % 38, 24 + (i * 13 + label * 5) % 31
                x = np.linspace(0, 1, width)[None, :, None]
                y = np.linspace(0, 1, height)[:, None, None]
                pixels = 60 * label + 100 * x + (40 + i % 50) * y + np.array([0, 30, 60])
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                mode = "L" if i % 5 == 4 else "CMYK" if i % 7 == 6 else "RGB"
                image.convert(mode).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)


# A run on 2 streamed processes (CONVMIXER_RESIDENT_BYTES=0) of the tree damage_an_image_only_rank_1_reads writes.
RANK_FAULT_KEYS = "dataset=imagefolder,image_size=16,patch_size=4,batch_size=6,train_subset=12,dim=16,depth=1,epochs=1"


def damage_an_image_only_rank_1_reads(root: Path) -> tuple[Path, bytes]:
    """An ImageFolder tree at `root` in which one image of rank 1's half (of 2) of the test set is zeroed: a real
    fault that only rank 1 meets. Of the same size and not among the files the data record hashes, so that once
    repaired (with the returned bytes) the run may train again under the same data.json. Returns that image and
    its bytes."""
    import torch

    from ablations.data.sources import load_splits, split_sha256

    write_imagenet_tree(root, {"train": 4, "val": 12})
    (cfg,) = build_sweep(PRESETS["smoke"].values, [f"{RANK_FAULT_KEYS},data_root={root}"], [], seeds=1).configs()
    test = load_splits(cfg).test
    hashed = split_sha256(test)
    for i in torch.arange(len(test.paths)).tensor_split(2)[1].tolist():
        path = root / test.paths[i]
        good = path.read_bytes()
        path.write_bytes(bytes(len(good)))
        if split_sha256(test) == hashed:
            return path, good
        path.write_bytes(good)
    raise AssertionError("every test image of rank 1 is hashed: make the test set larger")
