"""Every command starts as `python -m ...` in a fresh interpreter: one smoke test for each entry point whose own
tests call it in process only. ablations.run, analysis.report, convmixer.count and convmixer.check have theirs beside
their in-process tests (test_run.py, test_analysis.py, test_count.py, test_check.py)."""

import subprocess
import sys

import pytest


@pytest.mark.slow  # a fresh interpreter imports torch
@pytest.mark.parametrize(
    "module",
    [
        "benchmarks.train_speed",
        "benchmarks.kernels",
        "benchmarks.startup",
        "benchmarks.gpu_check",
        "convmixer.evaluate",
    ],
)
def test_the_command_starts_as_a_module_and_shows_its_usage(module, repo_root):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=repo_root, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m {module} "), done.stderr[-2000:]
