"""The notebooks are committed without outputs and run top to bottom: explore_sweep on a real sweep, via nbclient."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


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


def test_explore_sweep_runs_on_a_real_sweep(sweep, monkeypatch):
    monkeypatch.setenv("CONVMIXER_SWEEP", str(sweep))
    notebook = execute("explore_sweep.ipynb")
    text = text_of(notebook)
    assert "6 runs on synthetic" in text and "swept: kernel_size" in text
    figures = [output for output in outputs(notebook) if "image/png" in output.get("data", {})]
    assert len(figures) >= 4  # accuracy vs kernel size and vs MACs, training curves, the per-run curves


def test_model_walkthrough_runs():
    text = text_of(execute("model_walkthrough.ipynb"))
    assert "max |modular - tweet| over the logits: 0.0" in text
    assert " 0 failed" in text  # convmixer.check's verdict over its quick cases
    assert "0.594 M parameters" in text
