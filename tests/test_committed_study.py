"""The committed CPU study reproduces: its cheapest run, retrained from the study file, gives the committed numbers."""

import json
from pathlib import Path

import pytest
import torch

from ablations.engine.train import train_run
from ablations.sweep.study import read_study
from convmixer.runtime import cpu_name

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "cifar10-cpu.toml"
RESULTS = REPO / "results" / "cifar10-cpu"
CLOCK_KEYS = ("epoch_time_s", "train_time_s", "train_images_per_s")


@pytest.mark.slow
def test_the_cheapest_committed_run_is_reproduced_from_the_study_file(cifar10_jpeg, tmp_path):
    configs = [cfg for cfg in read_study(STUDY).sweep.configs() if cfg.seed == 0]
    cheapest = min(configs, key=lambda cfg: cfg.dim * cfg.dim * cfg.depth / cfg.patch_size**2)
    run_dir = RESULTS / "runs" / cheapest.run_id()
    committed = json.loads((run_dir / "metrics.json").read_text())
    committed_history = json.loads((run_dir / "history.json").read_text())
    cheapest.data_root = str(cifar10_jpeg)  # not part of the run id: where this checkout finds the archive

    metrics = train_run(cheapest, tmp_path, device="cpu", log=lambda line: None)
    history = json.loads((tmp_path / "history.json").read_text())
    assert metrics["status"] == "done" and metrics["epochs_completed"] == committed["epochs_completed"]
    assert (metrics["params"], metrics["macs"]) == (committed["params"], committed["macs"])
    same_build = committed["hardware"] == cpu_name() and committed["torch_version"] == torch.__version__
    if same_build:
        # The engine is bit-exact on a CPU (single-threaded, every draw from (seed, epoch)), so on the CPU model and
        # torch build that made the study, every epoch's losses and accuracies must come out exactly the same.
        assert [untimed(record) for record in history] == [untimed(record) for record in committed_history]
        assert metrics["test_acc"] == committed["test_acc"]
    else:
        # Another CPU (vector width) or torch build rounds float sums differently, and ten epochs amplify that:
        # allow 3 points of test accuracy (60 of the 2,000 test images).
        assert metrics["test_acc"] == pytest.approx(committed["test_acc"], abs=0.03)
    assert len(history) == len(committed_history) == committed["epochs_completed"]


def untimed(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in CLOCK_KEYS}
