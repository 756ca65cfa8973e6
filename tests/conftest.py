"""Shared pytest setup: single-threaded torch, a per-session data cache, the shared CIFAR-10 archive, a committed
tiny sweep, small ImageFolder trees written on the fly, and the rule that a fast test takes under a second.

On a small, busy CPU, handing microsecond-sized ops to OpenMP threads costs far more than it saves
(measured: a 4-channel ConvMixer forward took ~300 ms with 2 threads under load, ~3 ms with 1).
"""

import io
import resource
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas  # noqa: F401 (the libraries several tests need, imported once at collection: see below)
import pytest
import scipy.stats  # noqa: F401
import statsmodels.stats.multitest  # noqa: F401
import statsmodels.stats.power  # noqa: F401
import torch
from helpers import TINY_SWEEP
from matplotlib.figure import Figure
from PIL import Image

import analysis.build  # noqa: F401 (the report's own modules too: the same first-import cost)
import analysis.report  # noqa: F401
from ablations.config import RunConfig
from ablations.data.sources import load_synthetic

REPO = Path(__file__).resolve().parents[1]

# matplotlib's first saved figure loads its fonts (about a second of CPU): once here, not in whichever test saves first.
for _format in ("png", "pdf"):
    Figure().savefig(io.BytesIO(), format=_format)
CIFAR10_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
# Imported above, at collection, like torch: their first import (a second or more of CPU without cached bytecode)
# would otherwise be charged to whichever fast test happens to use them first.
FAST_TEST_CPU_SECONDS = 1.0
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


CACHE, CACHE_ENVIRONMENT = pytest.StashKey[Path](), pytest.StashKey[pytest.MonkeyPatch]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Every test, and every process it starts, caches into one folder per session (never ~/.cache). The synthetic
    set, which most tests load, is generated there now, before the first test: its 0.8 s of CPU would otherwise
    count against whichever fast test needs it first, and so fail or pass it by the order the tests run in."""
    cache = Path(tempfile.mkdtemp(prefix="convmixer-cache-"))
    session.stash[CACHE], session.stash[CACHE_ENVIRONMENT] = cache, pytest.MonkeyPatch()
    session.stash[CACHE_ENVIRONMENT].setenv("CONVMIXER_CACHE", str(cache))
    load_synthetic(train=True)
    load_synthetic(train=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.stash[CACHE_ENVIRONMENT].undo()
    shutil.rmtree(session.stash[CACHE], ignore_errors=True)


@pytest.fixture(scope="session")
def convmixer_cache(request: pytest.FixtureRequest) -> Path:
    """The session's cache folder (pytest_sessionstart made it)."""
    return request.session.stash[CACHE]


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


CPU_AT_SETUP = pytest.StashKey[float]()


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (subprocess.run and worker pools wait)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    item.stash[CPU_AT_SETUP] = cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Fail a passing test that is not marked `slow` (nor `cuda`) if its setup and call, the fixtures it sets up
    included (a session fixture counts for the first test that needs it), took over FAST_TEST_CPU_SECONDS.

    CPU time, not wall time: the 2-core development machines are shared, and load moves CPU time much less. The
    same fast suite took 54 s of wall time and 51 s of user CPU on an idle 2-core VM, and 227 s and 87 s on one under
    a load average of about 6 (architecture-review-3.md): x4.2 against x1.7. It counts the subprocesses a test waited
    for, and torch runs on one thread here, so it is about what the test takes on an idle core. The margin: a fast
    test is kept under about half the limit where it is measured, so a slower or loaded CI machine still passes. `cuda`
    tests are exempt: CI has no GPU, and CUDA's start-up alone takes seconds of CPU on a GPU machine.
    """
    outcome = yield
    report = outcome.get_result()
    exempt = item.get_closest_marker("slow") or item.get_closest_marker("cuda")
    if call.when != "call" or not report.passed or exempt:
        return
    used = cpu_seconds() - item.stash[CPU_AT_SETUP]
    if used > FAST_TEST_CPU_SECONDS:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} took {used:.2f} s of CPU (setup and call), over the {FAST_TEST_CPU_SECONDS:.0f} s a "
            "fast test may take: make it faster or mark it @pytest.mark.slow"
        )
