"""The rule of tests/conftest.py that a fast test takes under a second of CPU, applied to a made-up test file."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = """
import time

import pytest


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.fixture
def heavy():
    burn(1.2)


def test_quick():
    pass


def test_busy():
    burn(1.2)


def test_busy_fixture(heavy):
    pass


def test_asleep():
    time.sleep(1.2)  # wall time, not CPU


@pytest.mark.slow
def test_busy_but_marked_slow():
    burn(1.2)
"""


@pytest.mark.slow  # burns 3.6 s of CPU on purpose, in a fresh pytest
def test_an_unmarked_test_over_a_second_of_cpu_fails_and_names_the_way_out(tmp_path, repo_root):
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(Path(__file__).with_name(name), tmp_path / name)
    (tmp_path / "test_made_up.py").write_text(TESTS)
    options = ["-c", str(repo_root / "pyproject.toml"), "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-rf"]
    command = [sys.executable, "-m", "pytest", "-q", *options, str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert "2 failed, 3 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert [line.split()[1].split("::")[1] for line in failed] == ["test_busy", "test_busy_fixture"]
    for name in ("test_busy", "test_busy_fixture"):
        assert f"test_made_up.py::{name} took " in done.stdout
    # Counted in the failures' own sections: pytest shortens the summary's copies on a terminal, not under CI=true.
    failures = done.stdout.split("short test summary info")[0]
    assert failures.count("s of CPU (setup and call), over the 1 s a fast test may take: make it faster or") == 2
