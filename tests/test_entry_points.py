"""Every command starts as `python -m ...` in a fresh interpreter, and its --help and argument errors answer before
torch, pandas, scipy or matplotlib is imported (which takes seconds on a small CPU): each entry point, with
-X importtime; the one-second rule of the fast tests (conftest.py) bounds their CPU time, the child's included."""

import subprocess
import sys

import pytest

HEAVY = {"torch", "pandas", "scipy", "matplotlib", "statsmodels"}  # together seconds of CPU on a small machine


def run_with_import_times(module: str, args: list[str], cwd) -> tuple[subprocess.CompletedProcess, set[str], str]:
    """`python -X importtime -m module args`: the finished process, the top-level packages it imported, and its
    stderr without the import-time lines."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args], cwd=cwd, capture_output=True, text=True
    )
    lines = done.stderr.splitlines()
    imported = {line.rpartition("|")[2].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    return done, imported, "".join(f"{line}\n" for line in lines if not line.startswith("import time:"))


@pytest.mark.parametrize(
    "module",
    [
        *("ablations.run", "ablations.train", "ablations.data.make_shards", "convmixer.count", "convmixer.check"),
        *("convmixer.evaluate", "benchmarks.startup", "benchmarks.kernels", "benchmarks.gpu_check"),
        *("benchmarks.train_speed", "benchmarks.loader", "benchmarks.scaling"),
        *("analysis.report", "analysis.seeds", "analysis.export"),
    ],
)
@pytest.mark.parametrize("args", [["--help"], ["--no-such-flag"]], ids=["help", "bad-flag"])
def test_help_and_argument_errors_answer_without_importing_torch(module, args, repo_root):
    done, imported, err = run_with_import_times(module, args, repo_root)
    assert not imported & HEAVY
    if args == ["--help"]:
        assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m {module}"), err[-2000:]
    else:
        assert done.returncode == 2 and err.count("\n") == 1, err[-2000:]
        assert err.startswith(f"python -m {module}: error: ")
