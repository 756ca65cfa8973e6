"""The notebooks are committed without outputs and run top to bottom, via nbclient: explore_sweep on the committed
study by default (where it is in the checkout), and on sweeps the runner trained (tests/data: a grid and a study)."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import REPO
from helpers import TINY_STUDY
from nbclient import NotebookClient

NOTEBOOKS = REPO / "notebooks"
COMMITTED_STUDY = REPO / "results" / "cifar10-cpu"


def execute(name: str) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel started in notebooks/, as Jupyter would; a failing cell raises."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def text_of(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "") for output in outputs(notebook)
    )


@pytest.fixture(autouse=True)
def one_thread_kernel(monkeypatch):
    # The kernel inherits the environment; tiny models on a small busy CPU run faster on one thread.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("name", ["explore_sweep.ipynb", "model_walkthrough.ipynb"])
def test_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"


def png_outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for output in outputs(notebook) if "image/png" in output.get("data", {})]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-factor-at-a-time sweep from the runner: baseline k=5 at p=4, then k=3 and p=2, 2 seeds (a copy of the
    committed tests/data/tiny-study, as the `sweep` fixture copies tiny-sweep)."""
    return Path(shutil.copytree(TINY_STUDY, tmp_path_factory.mktemp("notebook") / TINY_STUDY.name))


@pytest.mark.slow
def test_explore_sweep_opens_the_committed_study_by_default(monkeypatch):
    if not COMMITTED_STUDY.exists():
        pytest.skip(f"{COMMITTED_STUDY} is not in this checkout yet")
    monkeypatch.delenv("CONVMIXER_SWEEP", raising=False)
    text = text_of(execute("explore_sweep.ipynb"))
    assert "CIFAR-10 (JPEG q75 copy)" in text and "swept: kernel_size, patch_size, residual, norm" in text
    # Every committed run finished (the notebook prints n_failed/n_unfinished columns, so check the store).
    assert set(pd.read_csv(COMMITTED_STUDY / "summary.csv")["status"]) == {"done"}


@pytest.mark.slow
def test_explore_sweep_shows_a_study_by_axis(study, monkeypatch):
    monkeypatch.setenv("CONVMIXER_SWEEP", str(study))
    notebook = execute("explore_sweep.ipynb")
    text = text_of(notebook)
    assert "swept: kernel_size, patch_size" in text and "baseline: kernel_size=5, patch_size=4" in text
    markdown = "\n".join(output.get("data", {}).get("text/markdown", "") for output in outputs(notebook))
    assert "| **Kernel size k (cells of the patch grid)** |" in markdown and "| p=4 (baseline) |" in markdown
    assert "training_curves_kernel_size" in text and "training_curves_patch_size" in text
    assert len(png_outputs(notebook)) == 8  # accuracy vs k, p, 3 costs; curves per axis; the per-run curves


@pytest.mark.slow
def test_explore_sweep_runs_on_a_real_sweep(sweep, monkeypatch):
    monkeypatch.setenv("CONVMIXER_SWEEP", str(sweep))
    notebook = execute("explore_sweep.ipynb")
    text = text_of(notebook)
    assert "6 runs on synthetic" in text and "swept: kernel_size" in text
    assert "kernel_size=5 minus kernel_size=3: " in text and " pp, 95% CI [" in text  # not Difference(diff=0.26900001
    assert "np.int64" not in text and "np.float64" not in text  # numpy's reprs are not for a reader
    assert len(png_outputs(notebook)) == 6  # accuracy vs kernel size and vs 3 costs, training curves, per-run curves


@pytest.mark.slow
def test_model_walkthrough_runs():
    notebook = execute("model_walkthrough.ipynb")
    text = text_of(notebook)
    assert "ConvMixer-256/8, k=5, p=2: receptive field 66 px" in text  # 2 * (1 + 8 * (5 - 1))
    assert len(png_outputs(notebook)) == 1  # params, MACs and receptive field against kernel and patch size
    assert "max |modular - tweet| over the logits: 0.0" in text
    assert " 0 failed" in text  # convmixer.check's verdict over its quick cases
    assert "0.594 M parameters" in text


@pytest.mark.slow
def test_the_readmes_nbconvert_command_runs_as_written(study):
    """The README's `CONVMIXER_SWEEP=... jupyter nbconvert ...` line, run by a shell from the repository root with
    the sweep swapped for a tiny one; its output notebook (git-ignored) is removed afterwards."""
    (line,) = [line for line in (REPO / "README.md").read_text().splitlines() if "jupyter nbconvert" in line]
    setting, *argv = shlex.split(line)
    assert setting.startswith("CONVMIXER_SWEEP=") and argv[0] == "jupyter"
    jupyter = shutil.which("jupyter") or str(Path(sys.executable).parent / "jupyter")
    written = NOTEBOOKS / "explore_sweep.nbconvert.ipynb"
    try:
        env = {**os.environ, "CONVMIXER_SWEEP": str(study)}
        done = subprocess.run([jupyter, *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert png_outputs(nbformat.read(written, as_version=4))
    finally:
        written.unlink(missing_ok=True)
