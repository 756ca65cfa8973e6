"""Shared pytest setup: single-threaded torch, a per-session data cache, the shared CIFAR-10 archive, a committed
tiny sweep, and small ImageFolder trees written on the fly.

On a small, busy CPU, handing microsecond-sized ops to OpenMP threads costs far more than it saves
(measured: a 4-channel ConvMixer forward took ~300 ms with 2 threads under load, ~3 ms with 1).
"""

import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ablations.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
CIFAR10_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
# tests/data/tiny-sweep was trained by the runner with these options (+ --devices cpu --out tests/data/tiny-sweep;
# then .lock removed and data_root written as "data", as committed results hold it); test_analysis.py checks,
# in a slow test, that a fresh sweep still writes the same store.
TINY_SWEEP_KEYS = "dataset=synthetic,epochs=2,dim=8,depth=1,train_subset=128,test_subset=64,batch_size=64"
TINY_SWEEP_OPTIONS = ("--preset", "smoke", "--grid", "kernel_size=3,5", "--seeds", "3", "--set", TINY_SWEEP_KEYS)
TINY_SWEEP = REPO / "tests" / "data" / "tiny-sweep"
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


@pytest.fixture(autouse=True, scope="session")
def single_threaded_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def convmixer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test, and every process it starts, caches into one folder per session (never ~/.cache), so the
    synthetic set is generated once."""
    cache = tmp_path_factory.mktemp("convmixer-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVMIXER_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def cifar10_jpeg() -> Path:
    """The JPEG copy of CIFAR-10 in ../shared/data; tests that need it are skipped where it is absent."""
    if not CIFAR10_JPEG.exists():
        pytest.skip(f"needs {CIFAR10_JPEG}")
    return CIFAR10_JPEG


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sweep for analysis/ and the notebooks, 2 kernel sizes x 3 seeds of a tiny model on synthetic data:
    a copy of the committed tests/data/tiny-sweep, so that tests which write a report into it leave the repository
    as it was (training it took 40 s per session)."""
    return Path(shutil.copytree(TINY_SWEEP, tmp_path_factory.mktemp("analysis") / TINY_SWEEP.name))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the SLURM test cluster is marked `slurm` (run with CONVMIXER_TEST_SLURM=1) and `slow`."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.slow)
