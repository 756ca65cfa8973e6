"""The sweep's plan from Python, without an argv."""

import csv
import functools
from pathlib import Path

import pytest
from conftest import imagefolder, write_tree

from ablations.config import ConfigError, RunConfig
from ablations.store import Store
from ablations.sweep.execute import end_run, execute_run
from ablations.sweep.plan import plan, run_plan
from ablations.sweep.progress import SweepProgress
from ablations.sweep.slurm import SlurmOptions

TINY = dict(dim=8, depth=1, patch_size=4, kernel_size=3, epochs=1)


def tiny(data: Path, **changes) -> RunConfig:
    """A run of about a tenth of a second on the tree `pictures` writes."""
    return imagefolder(data, **{**TINY, **changes})


class InProcess:
    """The Launcher protocol at its smallest: each run trained in this process, one after the other."""

    keep_checkpoints = False

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, configs: list[RunConfig], progress: SweepProgress) -> dict[str, dict]:
        ended = {}
        for cfg in configs:
            run_id = cfg.run_id()
            progress.started(run_id, "cpu")
            execute_run(cfg, self.store, "cpu", on_epoch=functools.partial(progress.epoch, run_id))
            ended[run_id] = end_run(self.store, run_id, progress, lambda: "no metrics.json", "cpu")
        return ended


def summary_rows(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def pictures(folder: Path) -> Path:
    write_tree(folder, {"train": 4, "test": 2})
    return folder


def test_a_notebook_plans_and_runs_a_sweep_without_an_argv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = pictures(tmp_path / "pictures")
    configs = [tiny(data, kernel_size=k) for k in (3, 5)]
    store = Store(tmp_path / "out")
    planned = plan(configs, store)
    assert [cfg.run_id() for cfg in planned.todo] == [cfg.run_id() for cfg in configs]
    assert not (tmp_path / "out").exists()  # planning writes nothing
    ended = run_plan(planned, InProcess(store), {"name": "out"})
    assert ended.exit_code == 0 and ended.counts() == {"done": 2}
    assert [row["status"] for row in summary_rows(tmp_path / "out")] == ["done", "done"]
    assert store.read_designs()[0]["runs"] == [cfg.run_id() for cfg in configs]
    assert plan(configs, store).todo == []  # planned again: nothing left to train


def test_two_runs_in_one_folder_are_refused_when_planned(tmp_path):
    cfg = RunConfig(**TINY)
    with pytest.raises(ConfigError, match="are the same config: drop one"):
        plan([cfg, RunConfig(**TINY)], Store(tmp_path))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_min": 0}, "--slurm-time 0 is not accepted: expected an integer >= 1"),
        ({"cpus_per_task": 0}, "--slurm-cpus 0 is not accepted"),
        ({"parallel": -1}, "--slurm-parallel -1 is not accepted"),
        ({"poll_s": 0.0}, "--slurm-poll 0.0 is not accepted: expected a number of seconds > 0"),
        ({"gpus": -1}, "--slurm-gpus -1 is not accepted: expected an integer >= 0"),
        ({"mem": "lots"}, "--slurm-mem 'lots' is not accepted: expected a size like 16G or 500M"),
    ],
)
def test_slurm_options_check_themselves(options, message):
    with pytest.raises(ConfigError, match=message):
        SlurmOptions(**options)
